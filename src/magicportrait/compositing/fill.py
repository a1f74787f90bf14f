"""Filling a hole in an image from its known pixels.

Where the moving head uncovers what it hid, the still layer shows the background continued from around the hole.
Near the hole's edge (what a head turn or tilt uncovers) :func:`mirror_fill` reflects the background across the
edge, so its texture (a flag's stripes, a curtain's folds, grain) carries on instead of a smear; deeper inside,
where the reflection would land in the hole again, :func:`fill_from` (push-pull over an image pyramid: each level
averages the known pixels, the hole takes the finest level that has enough of them). Both run once per portrait,
a few ms at 512x512.
"""

from __future__ import annotations

import cv2
import numpy as np

from magicportrait.errors import InputError

__all__ = ["fill_from", "mirror_fill"]

# A level's pixel counts as known once its averaged weight reaches this (a finer level then wins outright).
_CONFIDENT = 0.25


def fill_from(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``image`` (uint8 ``(H, W, C)``) with every pixel replaced by the average of the known ones around it, the
    finest scale that has any; ``known`` (float ``(H, W)`` in [0, 1]) is how much each pixel counts. Where
    ``known`` is 1 the result equals the image. Nothing known anywhere: the image's mean colour."""
    if image.ndim != 3 or known.shape != image.shape[:2]:
        raise InputError(f"fill_from needs an (H, W, C) image and an (H, W) weight; got {image.shape}, {known.shape}.")
    weight = np.clip(known, 0.0, 1.0).astype(np.float32)
    values = image.astype(np.float32) * weight[..., None]
    levels = [(values, weight)]
    while min(levels[-1][1].shape) > 4:
        levels.append((cv2.pyrDown(levels[-1][0]), cv2.pyrDown(levels[-1][1])))
    coarse_values, coarse_weight = levels[-1]
    total = float(coarse_weight.sum())
    mean = coarse_values.reshape(-1, image.shape[2]).sum(0) / total if total > 0 else image.reshape(
        -1, image.shape[2]).mean(0)
    estimate = np.broadcast_to(mean.astype(np.float32), coarse_values.shape).copy()
    for values, weight in reversed(levels):
        size = (weight.shape[1], weight.shape[0])
        if estimate.shape[:2] != weight.shape:
            estimate = cv2.pyrUp(estimate, dstsize=size).reshape(*weight.shape, -1)
        own = values / np.maximum(weight, 1e-6)[..., None]
        trust = np.clip(weight / _CONFIDENT, 0.0, 1.0)[..., None]
        estimate = trust * own + (1.0 - trust) * estimate
    exact = known >= 1.0
    result = np.clip(estimate + 0.5, 0, 255).astype(np.uint8)
    result[exact] = image[exact]
    return result


def mirror_fill(image: np.ndarray, known: np.ndarray, depth: float = 12.0) -> np.ndarray:
    """``image`` (uint8 ``(H, W, C)``) with its unknown pixels (``known`` bool ``(H, W)`` False) replaced by the
    image reflected across the nearest known pixel, ``p -> 2 q - p``, fading over ``depth`` px from the hole's edge
    into :func:`fill_from` (deeper, the reflections of a curved edge meet in creases). Known pixels are kept."""
    if image.ndim != 3 or known.shape != image.shape[:2]:
        raise InputError(f"mirror_fill needs an (H, W, C) image and an (H, W) mask; got {image.shape}, {known.shape}.")
    known = known.astype(bool)
    if known.all() or not known.any():
        return image.copy() if known.all() else fill_from(image, known.astype(np.float32))
    height, width = known.shape
    distance, labels = cv2.distanceTransformWithLabels((~known).astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    # Labels number the known (zero) pixels in row-major order, from 1.
    known_rows, known_cols = np.nonzero(known)
    hole_rows, hole_cols = np.nonzero(~known)
    nearest = labels[hole_rows, hole_cols] - 1
    mirror_rows = 2 * known_rows[nearest] - hole_rows
    mirror_cols = 2 * known_cols[nearest] - hole_cols
    inside = (mirror_rows >= 0) & (mirror_rows < height) & (mirror_cols >= 0) & (mirror_cols < width)
    usable = inside.copy()
    usable[inside] = known[mirror_rows[inside], mirror_cols[inside]]
    result = fill_from(image, known.astype(np.float32))
    rows, cols = hole_rows[usable], hole_cols[usable]
    reflected = image[mirror_rows[usable], mirror_cols[usable]].astype(np.float32)
    weight = (1.0 - _smoothstep(distance[rows, cols] / max(depth, 1e-6)))[:, None]
    smooth = result[rows, cols].astype(np.float32)
    result[rows, cols] = np.clip(smooth + weight * (reflected - smooth) + 0.5, 0, 255).astype(np.uint8)
    return result


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
