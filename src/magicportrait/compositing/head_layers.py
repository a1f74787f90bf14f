"""The two layers the geometric generator composes outside the face, built once per portrait.

* the moving layer: the person (its soft segmentation alpha ``A``, the face always in), warped per frame by
  :func:`magicportrait.compositing.rigid_head_maps`; it is kept premultiplied against the still layer,
  ``M = portrait - (1 - A) still``, so that ``M + (1 - A) still`` gives the portrait back exactly whatever the
  alpha (an unmoved head is the portrait, bit for bit) and a hair's fringe that the alpha misses moves with the
  head as a faint residual instead of staying behind or carrying the background along;
* the still layer: the portrait with the part of the person that can move (:func:`head_weight` > 0) replaced by
  the background continued from around it (:func:`magicportrait.compositing.fill.mirror_fill`), so a head that
  moves away uncovers background, not a doubled head. The warp is continuous inside the person, so the person
  itself never uncovers that fill: only the background beside the silhouette's moved edge shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from magicportrait.compositing.fill import mirror_fill
from magicportrait.compositing.warp import HeadFrame, head_weight, smoothstep
from magicportrait.errors import InputError

__all__ = ["HeadLayers", "guided_filter", "head_layers", "person_weights"]

# The person mask is a probability; below LOW nothing, above HIGH all (hair tips and a hat's white crown often
# score ~0.5, and leaving them on the still layer would double them).
PERSON_LOW, PERSON_HIGH = 0.1, 0.6
# Margins, as fractions of the image side: the filled part of the still layer reaches FILL_GROW into the background
# beside the moving person (the hair's fringe, which the alpha misses, goes with the head) and the background that
# fills it keeps FILL_CLEARANCE away from it and from the person.
FILL_GROW, FILL_CLEARANCE = 0.01, 0.01
MIRROR_DEPTH = 0.06  # how deep the background's reflection reaches into the hole, fraction of the side
HOLE_MIN = 0.02  # weights below this count as nothing
# The segmentation's edge is snapped to the image's edges (hair against the sky) by a guided filter of this radius
# (fraction of the image side) and regularisation (on [0, 1] intensities).
GUIDE_RADIUS, GUIDE_EPS = 0.015, 1e-3


@dataclass(frozen=True)
class HeadLayers:
    """``moving`` float32 ``(H, W, 3)``: the premultiplied moving layer (see the module docstring); ``alpha``
    float32 ``(H, W)``: its alpha; ``still`` float32 ``(H, W, 3)``: what shows where nothing moving covers."""

    moving: np.ndarray
    alpha: np.ndarray
    still: np.ndarray

    def move(self, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
        """The moving layer remapped by ``map_x, map_y`` (e.g. :func:`magicportrait.compositing.rigid_head_maps`)."""
        return cv2.remap(self.moving, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def compose(self, moved: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
        """uint8 ``(H, W, 3)``: ``moved`` (:meth:`move`'s result, possibly edited) over the still layer, by the
        alpha moved alike."""
        alpha = cv2.remap(self.alpha, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out = moved + self.still
        out -= alpha[..., None] * self.still
        out += 0.5
        return np.clip(out, 0, 255, out=out).astype(np.uint8)


def person_weights(probability: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """A segmentation probability mapped to a layer weight (see ``PERSON_LOW``/``PERSON_HIGH``); with the uint8
    RGB ``image`` it was computed from, its edges snapped to the image's."""
    weight = smoothstep((np.asarray(probability, np.float32) - PERSON_LOW) / (PERSON_HIGH - PERSON_LOW))
    weight = weight.astype(np.float32)
    if image is None:
        return weight
    side = max(weight.shape)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    return np.clip(guided_filter(grey, weight, max(1, round(GUIDE_RADIUS * side)), GUIDE_EPS), 0.0, 1.0)


def guided_filter(guide: np.ndarray, values: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Edge-aware smoothing of ``values`` that follows the edges of ``guide`` (both float32 ``(H, W)``): locally
    ``values ~ a guide + b`` fitted over (2 radius + 1)^2 windows, the coefficients averaged (He et al., 2010)."""
    def mean(image: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(image, -1, (2 * radius + 1,) * 2, borderType=cv2.BORDER_REFLECT)

    mean_guide, mean_values = mean(guide), mean(values)
    variance = mean(guide * guide) - mean_guide * mean_guide
    covariance = mean(guide * values) - mean_guide * mean_values
    slope = covariance / (variance + eps)
    offset = mean_values - slope * mean_guide
    return mean(slope) * guide + mean(offset)


def head_layers(image: np.ndarray, frame: HeadFrame, person: np.ndarray | None = None, *,
                face: np.ndarray | None = None) -> HeadLayers:
    """The moving and still layers of ``image`` (uint8 ``(H, W, 3)``) for the head at ``frame``; ``person``
    (float ``(H, W)`` in [0, 1], see :func:`person_weights`): None moves everything near the head (a rubber-band
    warp of the whole picture). ``face`` (bool ``(H, W)``): the face itself, which always moves."""
    if image.ndim != 3 or image.dtype != np.uint8:
        raise InputError(f"head_layers needs a uint8 (H, W, 3) image, got {image.dtype} {image.shape}.")
    height, width = image.shape[:2]
    portrait = image.astype(np.float32)
    if person is None:
        return HeadLayers(portrait, np.ones((height, width), np.float32), portrait.copy())
    if person.shape != (height, width):
        raise InputError(f"the person mask is {person.shape}, the image {(height, width)}.")
    alpha = np.clip(person, 0.0, 1.0).astype(np.float32)
    if face is not None:
        alpha = np.maximum(alpha, face.astype(np.float32))
    side = max(height, width)
    # The hole: the person where it can move, grown over the fringe into the background.
    taken = (alpha > HOLE_MIN) & (head_weight(frame, (height, width)) > HOLE_MIN)
    grow = max(1, round(FILL_GROW * side))
    hole = cv2.dilate(taken.astype(np.float32), np.ones((2 * grow + 1,) * 2, np.float32))
    hole = np.maximum(cv2.GaussianBlur(hole, (0, 0), grow / 2.0), taken.astype(np.float32))
    # Filled from the background only: the still person beside the head (a hand, a card) reflected into the hole
    # would grow where the head uncovers it.
    clearance = max(1, round(FILL_CLEARANCE * side))
    busy = ((hole > HOLE_MIN) | (alpha > HOLE_MIN)).astype(np.uint8)
    unknown = cv2.dilate(busy, np.ones((2 * clearance + 1,) * 2, np.uint8))
    fill = mirror_fill(image, unknown == 0, MIRROR_DEPTH * side).astype(np.float32)
    still = portrait + hole[..., None] * (fill - portrait)
    moving = portrait - (1.0 - alpha)[..., None] * still
    return HeadLayers(moving, alpha, still)
