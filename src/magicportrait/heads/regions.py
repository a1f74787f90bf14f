"""Named regions of a head model's surface (jaw, lips, eyes, brows) as soft per-vertex weights, and the eyelids.

Regions are defined once on MediaPipe's 478 landmarks, which every head model can place on its own mesh
(:meth:`HeadModel.landmarks`), and spread to the model's vertices with a Gaussian kernel over the model's mean head,
so the weights fade smoothly across region borders (an edited region does not tear from its neighbours) on the open
geometry and on FLAME alike.
"""

from __future__ import annotations

import numpy as np

from magicportrait.heads.base import HeadModel
from magicportrait.heads.mediapipe_topology import INNER_LIP_LOOP, LEFT_EYE_LOOP, RIGHT_EYE_LOOP, landmark_groups

REGIONS = ("jaw", "lips", "eyes", "brows")
REGION_SOFTNESS = 0.03  # Gaussian width of a region's border, as a fraction of the face's height
EYE_CORNER_OFFSET = 8  # the eye loops start at a corner and reach the other corner half-way round


def landmark_regions(template_landmarks: np.ndarray) -> np.ndarray:
    """`(478,)` int: the region (index into :data:`REGIONS`) of each landmark of a frontal model-frame face
    (x toward the subject's left, y down), -1 for the rest (cheeks, nose, forehead). The jaw is what moves with
    the mandible: the chin and the lower lip; the lips are the upper lip and the corners."""
    groups = landmark_groups()
    labels = np.full(len(template_landmarks), -1)
    lips = groups["lips"]
    chin = template_landmarks[:, 1] > template_landmarks[lips, 1].max()  # below the lower lip (y is down)
    labels[chin] = REGIONS.index("jaw")
    lower = lower_face_share(template_landmarks)[lips] > 0.5 + LOWER_LIP_MARGIN
    labels[lips] = np.where(lower, REGIONS.index("jaw"), REGIONS.index("lips"))
    labels[np.concatenate([groups["left_eyebrow"], groups["right_eyebrow"]])] = REGIONS.index("brows")
    eyes = [groups[name] for name in ("left_eye", "right_eye", "left_iris", "right_iris") if name in groups]
    labels[np.concatenate(eyes)] = REGIONS.index("eyes")
    return labels


def region_weights(model: HeadModel) -> np.ndarray:
    """`(V, 4)` weights in [0, 1] of each vertex of ``model`` in :data:`REGIONS`: 1 on a region's own landmarks,
    fading with the distance to them (Gaussian), shared where regions meet; rows sum to at most 1, the rest of a
    vertex's weight belongs to no region."""
    template = np.asarray(model.template_vertices(), np.float64)
    landmarks = np.asarray(model.landmarks(template[None]), np.float64)[0]
    labels = landmark_regions(landmarks)
    sigma = REGION_SOFTNESS * float(np.ptp(landmarks[:, 1]))
    nearness = np.zeros((len(template), len(REGIONS)))
    for region in range(len(REGIONS)):
        members = landmarks[labels == region]
        for start in range(0, len(template), 4096):  # (chunk, members) distances at a time
            squared = ((template[start:start + 4096, None] - members[None]) ** 2).sum(-1).min(axis=1)
            nearness[start:start + 4096, region] = np.exp(-squared / (2 * sigma**2))
    return nearness / np.maximum(nearness.sum(axis=1, keepdims=True), 1.0)


def eyelid_landmarks() -> tuple[np.ndarray, np.ndarray]:
    """`(2, 16)` landmark indices of the two eyes' lid loops and `(2, 2)` their corners."""
    loops = np.array([RIGHT_EYE_LOOP, LEFT_EYE_LOOP])
    return loops, loops[:, [0, EYE_CORNER_OFFSET]]


def scale_eye_opening(landmarks: np.ndarray, factor: float | np.ndarray) -> np.ndarray:
    """`(..., 478, 3)` model-frame landmarks with each eyelid point's height above or below the line through its
    eye's corners multiplied by ``factor`` (0 closes the eyes, 1 keeps them, > 1 opens them wider)."""
    points = np.array(landmarks, np.float64, copy=True)
    loops, _ = eyelid_landmarks()
    heights, _ = _lid_heights(points)
    factor = np.asarray(factor, np.float64)[..., None, None]
    points[..., loops, 1] += (factor - 1) * heights
    return points


MOUTH_CORNERS = (61, 291)  # the outer lip corners (right, left)
INNER_LIP_MIDDLE = (13, 14)  # upper and lower inner lip, on the midline
JAW_SHARE = 0.3  # how much of the lips' gap the chin rises when they close (teeth showing are not a jaw drop)
CORNER_SPREAD = 0.03  # how far a corner's correction reaches, as a fraction of the face's height
LOWER_LIP_MARGIN = 0.25  # lip points this far past the split's middle belong to the lower lip (corners do not)
LIP_SPLIT_SOFTNESS = 0.15  # cm: the upper / lower lip split fades over at least this height
CLOSED_EYE = 0.03  # eyelid opening / eye width below which an eye counts as closed


def lower_face_share(landmarks: np.ndarray) -> np.ndarray:
    """`(478,)` in [0, 1]: how much each point of `(478, 3)` model-frame landmarks moves with the lower lip and the
    jaw: 1 below the line between the lips, 0 above it, fading over about half the lips' gap. The line joins the
    midpoints of facing inner-lip points, so a smile's raised corners stay with the lip they belong to."""
    points = np.asarray(landmarks, np.float64)
    loop = np.asarray(INNER_LIP_LOOP)
    half = len(loop) // 2  # the loop runs corner, upper lip, other corner, lower lip back
    upper, lower = loop[:half + 1], np.r_[loop[half:], loop[:1]][::-1]
    middle = 0.5 * (points[upper] + points[lower])
    order = np.argsort(middle[:, 0])
    line = np.interp(points[:, 0], middle[order, 0], middle[order, 1])
    softness = max(float(lip_gap(points)) / 2, LIP_SPLIT_SOFTNESS)
    return np.clip((points[:, 1] - line) / softness + 0.5, 0, 1)


def lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """`(...)` the inner lips' gap (lower minus upper, y down) of `(..., 478, 3)` model-frame landmarks."""
    upper, lower = INNER_LIP_MIDDLE
    return np.maximum(landmarks[..., lower, 1] - landmarks[..., upper, 1], 0.0)


def lip_opening(landmarks: np.ndarray) -> np.ndarray:
    """`(...)` the lips' gap as a fraction of the mouth's width (0 closed, about 0.5 wide open)."""
    right, left = MOUTH_CORNERS
    return lip_gap(landmarks) / np.linalg.norm(landmarks[..., left, :] - landmarks[..., right, :], axis=-1)


def eye_opening(landmarks: np.ndarray) -> np.ndarray:
    """`(...)` the eyelids' opening (the lower lid's middle below the line through the eye's corners, less the
    upper lid's) as a fraction of the eye's width, averaged over both eyes (about 0.3 open, 0 closed)."""
    heights, width = _lid_heights(np.asarray(landmarks, np.float64))
    return ((heights[..., 12] - heights[..., 4]) / width).mean(axis=-1)


def _lid_heights(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(..., 2, 16)` each eyelid point's height below the line through its eye's corners (y is down) and
    `(..., 2)` the eyes' widths."""
    loops, corners = eyelid_landmarks()
    a, b = points[..., corners[:, 0], :], points[..., corners[:, 1], :]
    along = (points[..., loops, 0] - a[..., None, 0]) / (b[..., None, 0] - a[..., None, 0])
    line = a[..., None, 1] + along * (b[..., None, 1] - a[..., None, 1])
    return points[..., loops, 1] - line, np.linalg.norm(b - a, axis=-1)


def set_lip_gap(landmarks: np.ndarray, weights: np.ndarray, gap: float) -> np.ndarray:
    """`(478, 3)` model-frame landmarks with the inner lips' gap set to ``gap``: opening, the lower lip and the chin
    drop (the jaw opens); closing, the lips meet half-way and the chin rises a little. ``weights`` are the
    landmarks' :func:`region_weights`."""
    points = np.array(landmarks, np.float64, copy=True)
    change = gap - float(lip_gap(points))
    lips = _lip_nearness(points)
    lower = lower_face_share(points)
    jaw = weights[:, REGIONS.index("jaw")]
    if change >= 0:  # the jaw opens: everything of the mouth and chin below the lips' line drops
        points[:, 1] += change * lower * np.maximum(lips, jaw)
    else:  # the lips meet half-way; the chin follows a little (teeth showing are not a jaw drop)
        points[:, 1] += change * lips * (lower - 0.5)
        points[:, 1] += change * JAW_SHARE * jaw * (1 - lips)
    return points


def _lip_nearness(points: np.ndarray) -> np.ndarray:
    """`(478,)` 1 on the lips' landmarks, fading with the distance to them like a region's border."""
    lips = points[landmark_groups()["lips"]]
    sigma = REGION_SOFTNESS * float(np.ptp(points[:, 1]))
    squared = ((points[:, None] - lips[None]) ** 2).sum(-1).min(axis=1)
    return np.exp(-squared / (2 * sigma**2))


def neutral_mouth(landmarks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`(478, 3)` model-frame landmarks of a face (x left, y down) with the mouth put at rest: the lips closed
    (:func:`set_lip_gap` 0) and the corners lowered or raised to the lips' line (no smile, no frown). ``weights``
    are the landmarks' :func:`region_weights`. A stand-in for a neutral face where the head model has no
    expression basis to zero (the open geometry's identity is the portrait as it is)."""
    points = set_lip_gap(landmarks, weights, 0.0)
    line = 0.5 * (points[INNER_LIP_MIDDLE[0], 1] + points[INNER_LIP_MIDDLE[1], 1])
    spread = CORNER_SPREAD * float(np.ptp(points[:, 1]))
    lips = _lip_nearness(points)
    for corner in MOUTH_CORNERS:
        reach = np.exp(-((points - points[corner]) ** 2).sum(-1) / (2 * spread**2))
        points[:, 1] += (line - points[corner, 1]) * reach * lips
    return points
