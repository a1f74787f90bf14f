"""The two layers the geometric generator composes outside the face, built once per portrait.

* the moving layer: the portrait itself, with the alpha of what moves with the head (hair, ears, hat, the neck
  down to the end of the neck band; :func:`magicportrait.compositing.warp.head_layer_alpha`);
* the still layer: the portrait with the moving person's head replaced by the background continued from around it
  (:func:`magicportrait.compositing.fill.mirror_fill`), so a head that moves away uncovers background, not a
  stretched or doubled head. The body below the middle of the neck band is kept as it is: the moving layer fades
  out over the band's end, where the two layers agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from magicportrait.compositing.fill import mirror_fill
from magicportrait.compositing.warp import HeadFrame, head_layer_alpha, pixel_centres, smoothstep
from magicportrait.errors import InputError

__all__ = ["HeadLayers", "guided_filter", "head_layers", "person_weights"]

# The person mask is a probability; below LOW nothing, above HIGH all (hair tips and a hat's white crown often
# score ~0.5, and leaving them on the still layer would double them).
PERSON_LOW, PERSON_HIGH = 0.1, 0.6
# Where the head can uncover the still layer: the person is filled in above the chin line, fading out over this
# many neck-band lengths below it; below, the portrait's own neck and collar stay (the band moves them little).
FILL_UNTIL_NECK = 0.3
# Margins, as fractions of the image side: the hole grows into the background by FILL_GROW (the hair's soft fringe
# goes too) and the background that fills it keeps FILL_CLEARANCE away from it and from the person.
FILL_GROW, FILL_CLEARANCE = 0.012, 0.01
MIRROR_DEPTH = 0.06  # how deep the background's reflection reaches into the hole, fraction of the side
HOLE_MIN = 0.02  # pixels of the hole weighing less than this may still serve to fill it
COVER_MARGIN = 0.006  # the moving layer's alpha reaches this far past the hole (fraction of the side)
# The segmentation's edge is snapped to the image's edges (hair against the sky) by a guided filter of this radius
# (fraction of the image side) and regularisation (on [0, 1] intensities), then grown by PERSON_GROW of the side:
# the mask is computed at 256x256 and tends to miss the hair's fringe.
GUIDE_RADIUS, GUIDE_EPS, PERSON_GROW = 0.015, 1e-3, 0.006


@dataclass(frozen=True)
class HeadLayers:
    """``alpha`` float32 ``(H, W)``: what moves with the head; ``still`` uint8 ``(H, W, 3)``: what shows where
    nothing moving covers."""

    alpha: np.ndarray
    still: np.ndarray

    def compose(self, moved: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
        """The frame outside the face: ``moved`` (the portrait remapped by ``map_x, map_y``, e.g.
        :func:`magicportrait.compositing.rigid_head_maps`) over the still layer, by the alpha moved alike."""
        alpha = cv2.remap(self.alpha, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return cv2.blendLinear(moved, self.still, alpha, 1.0 - alpha)


def person_weights(probability: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """A segmentation probability mapped to a layer weight (see ``PERSON_LOW``/``PERSON_HIGH``); with the uint8
    RGB ``image`` it was computed from, its edges snapped to the image's and grown a little."""
    weight = smoothstep((np.asarray(probability, np.float32) - PERSON_LOW) / (PERSON_HIGH - PERSON_LOW))
    weight = weight.astype(np.float32)
    if image is None:
        return weight
    side = max(weight.shape)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    weight = np.clip(guided_filter(grey, weight, max(1, round(GUIDE_RADIUS * side)), GUIDE_EPS), 0.0, 1.0)
    grow = max(1, round(PERSON_GROW * side))
    return cv2.dilate(weight, np.ones((2 * grow + 1,) * 2, np.float32))


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


def head_layers(image: np.ndarray, frame: HeadFrame, person: np.ndarray | None = None, *, inner: float = 1.7,
                outer: float = 2.0, face: np.ndarray | None = None) -> HeadLayers:
    """The moving layer's alpha and the still layer of ``image`` (uint8 ``(H, W, 3)``) for the head at ``frame``;
    ``person`` (float ``(H, W)`` in [0, 1], see :func:`person_weights`): None moves the whole head ellipse.
    ``face`` (bool ``(H, W)``): the face itself, which always moves (and so is never left on the still layer)."""
    if image.ndim != 3 or image.dtype != np.uint8:
        raise InputError(f"head_layers needs a uint8 (H, W, 3) image, got {image.dtype} {image.shape}.")
    height, width = image.shape[:2]
    alpha = head_layer_alpha(frame, (height, width), person, inner=inner, outer=outer)
    if face is not None:
        alpha = np.maximum(alpha, face.astype(np.float32))
    x, y = pixel_centres(height, width)
    hole = alpha * (1.0 - smoothstep(frame.neck(x, y) / FILL_UNTIL_NECK)).astype(np.float32)
    if person is not None:  # grown into the background only (the hair's fringe), not into the still person
        grow = max(1, round(FILL_GROW * max(height, width)))
        fringe = cv2.dilate(hole, np.ones((2 * grow + 1,) * 2, np.float32)) * (1.0 - person)
        hole = np.maximum(hole, cv2.GaussianBlur(fringe, (0, 0), 0.5 * grow))
    # Filled from the background only: the still person beside the head (a hand, a card) reflected into the hole
    # would grow where the head uncovers it.
    clearance = max(1, round(FILL_CLEARANCE * max(height, width)))
    taken = hole > HOLE_MIN if person is None else np.maximum(hole, person) > HOLE_MIN
    unknown = cv2.dilate(taken.astype(np.uint8), np.ones((2 * clearance + 1,) * 2, np.uint8))
    fill = mirror_fill(image, unknown == 0, MIRROR_DEPTH * max(height, width))
    still = cv2.blendLinear(fill, image, hole, (1.0 - hole).astype(np.float32))
    # The moving layer covers the hole fully, its soft edge beyond it: an unmoved head gives the portrait back.
    margin = max(2, round(COVER_MARGIN * max(height, width)))
    cover = cv2.dilate((hole > HOLE_MIN).astype(np.float32), np.ones((2 * margin + 1,) * 2, np.float32))
    alpha = np.maximum(alpha, cv2.GaussianBlur(cover, (0, 0), margin / 3.0) * cover)
    return HeadLayers(alpha, still)
