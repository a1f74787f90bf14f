"""Artefact score: which frames of a result a person would call broken, with a flag per frame.

Two detectors, both on the face only (the tracked landmarks say where it is):

- **temporal outliers** (a glitch frame, a pop): the change of the face region from the mean of its two
  neighbours, ``mean |f[t] - (f[t-1] + f[t+1]) / 2|`` in grey levels inside the three frames' landmark boxes.
  Smooth motion changes a frame little against that mean; a frame that jumps out of the sequence changes it a lot.
  A frame is flagged when its change is above ``median + k * MAD`` of the video (robust: the glitches themselves
  do not raise the bar), above an absolute floor (so a smooth video, whose MAD is tiny, flags nothing) and the
  largest of its neighbourhood (a glitch also raises its two neighbours' change by half; they are not flagged).
  The first and last frames have one neighbour and are never flagged.
- **duplicated structure** (a second nose or brow, a mirrored eye, a torn or streaked cheek): each frame and the
  source portrait are warped onto the same frontal face layout by their own landmarks (piecewise linear over the
  canonical face mesh, :class:`FrontalWarp`), so every pixel of the warped frame shows the same point of the face as
  the warped source. A generated frame may move, turn, shade and change expression, but it should not show strong
  edges at a point of the face where the portrait has none: the score is the densest local patch of edge strength
  beyond the source's (gradient magnitude above the source's own, dilated by a few pixels so small misalignments
  are not counted), Gaussian-weighted over about a tenth of the face, relative to the source's mean edge strength.
  The eyes and the inside of the mouth are left out (they legitimately open and close), and so is what the frame
  does not show: points seen edge-on and points a nearer part of the face covers (:meth:`FrontalWarp.visible`).
  A frame is flagged above :attr:`ArtefactConfig.duplication_threshold`.

Usable without the evaluator (e.g. from a benchmark)::

    report = artefact_score(frames, landmarks, source, source_landmarks)
    report.flagged            # (T,) bool, for marking contact sheets
    report.artefact_frames    # fraction of frames flagged
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from magicportrait.evaluation.regions import face_boxes, luminance

__all__ = ["ArtefactConfig", "ArtefactReport", "FrontalWarp", "artefact_score", "duplicated_structure",
           "temporal_outliers"]

EDGE_SCALES = (0.0, 2.5)  # fine edges (a second brow line, a tear) and coarse ones (a blotch, a second nose)
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation
RASTER_SCALE = 4.0  # FrontalWarp.visible draws the mesh at this many px per layout pixel


@dataclass(frozen=True)
class ArtefactConfig:
    """Thresholds of :func:`artefact_score` (measured on the geometric generator's results, see docs/metrics.md)."""

    outlier_k: float = 6.0  # robust standard deviations above the median change
    outlier_floor: float = 4.0  # grey levels: a frame changing less than this is never a glitch
    duplication_threshold: float = 0.4  # local excess edge strength / the source's mean edge strength
    frontal_size: int = 128  # side of the frontal face layout, pixels
    dilation: int = 5  # pixels (of the frontal layout) of misalignment forgiven when comparing edges
    patch_sigma: float = 6.0  # pixels: the size of a "local patch" of excess edges


@dataclass
class ArtefactReport:
    """Per-frame artefact scores and flags of one video."""

    temporal_change: np.ndarray  # (T,) grey levels, face region against its neighbours' mean (0 at both ends)
    temporal_outlier: np.ndarray  # (T,) bool
    duplication: np.ndarray  # (T,) local excess edge strength over the source's (NaN without a reference)
    duplicated: np.ndarray  # (T,) bool

    @property
    def flagged(self) -> np.ndarray:
        """`(T,)` bool: either detector flags the frame."""
        return self.temporal_outlier | self.duplicated

    @property
    def flagged_frames(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.flagged)]

    @property
    def artefact_frames(self) -> float:
        """Fraction of frames flagged (0 = clean)."""
        return float(self.flagged.mean()) if len(self.flagged) else 0.0


def temporal_outliers(frames: np.ndarray, landmarks: np.ndarray,
                      config: ArtefactConfig = ArtefactConfig()) -> tuple[np.ndarray, np.ndarray]:
    """`(T,)` face-region change against the neighbours' mean (grey levels) and `(T,)` outlier flags."""
    frames = np.asarray(frames)
    count = len(frames)
    change = np.zeros(count)
    if count < 3:
        return change, np.zeros(count, bool)
    boxes = face_boxes(landmarks, frames.shape[1:3])
    for t in range(1, count - 1):
        x0, y0 = boxes[t - 1:t + 2, :2].min(axis=0)
        x1, y1 = boxes[t - 1:t + 2, 2:].max(axis=0)
        grey = luminance(frames[t - 1:t + 2, y0:y1, x0:x1])
        change[t] = float(np.abs(grey[1] - (grey[0] + grey[2]) / 2).mean())
    inner = change[1:-1]
    median = float(np.median(inner))
    spread = MAD_TO_SIGMA * float(np.median(np.abs(inner - median)))
    bar = max(config.outlier_floor, median + config.outlier_k * spread)
    peak = np.zeros(count, bool)
    peak[1:-1] = (change[1:-1] >= change[:-2]) & (change[1:-1] >= change[2:])
    return change, (change > bar) & peak


class FrontalWarp:
    """Warps a face onto the canonical frontal face layout (``size`` x ``size``) by its 478 landmarks.

    The canonical MediaPipe face (front view) is triangulated once; each layout pixel keeps its triangle and
    barycentric weights, so a frame's warp is one weighted sum of its landmarks and one ``cv2.remap``.
    """

    def __init__(self, size: int = 128, feature_margin: int = 3) -> None:
        from scipy.spatial import Delaunay

        from magicportrait.heads.mediapipe_mesh import load_canonical_face

        canonical = load_canonical_face()[0][:, :2]
        low, high = canonical.min(axis=0), canonical.max(axis=0)
        self.size = size
        self.layout = (canonical - (low + high) / 2) / (high - low).max() * (0.95 * size) + size / 2
        triangulation = Delaunay(self.layout)
        ys, xs = np.mgrid[0:size, 0:size]
        pixels = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
        simplex = triangulation.find_simplex(pixels)
        self.inside = (simplex >= 0).reshape(size, size)
        simplex = np.maximum(simplex, 0)
        affine = triangulation.transform[simplex]  # (P, 3, 2): barycentric coordinates of each pixel
        partial = np.einsum("pij,pj->pi", affine[:, :2], pixels - affine[:, 2])
        self.weights = np.concatenate([partial, 1 - partial.sum(axis=1, keepdims=True)], axis=1)
        self.triangles = triangulation.simplices  # (K, 3) landmark indices
        self.pixel_triangle = simplex.reshape(size, size)
        self.corners = self.triangles[simplex]  # (P, 3) landmark indices
        self.layout_areas = _signed_areas(self.layout, self.triangles)
        self.features = self._feature_mask(feature_margin)

    def _feature_mask(self, margin: int) -> np.ndarray:
        """Eyes and the inside of the mouth (grown by ``margin`` pixels): they open and close legitimately."""
        from magicportrait.heads.mediapipe_topology import INNER_LIP_LOOP, LEFT_EYE_LOOP, RIGHT_EYE_LOOP

        mask = np.zeros((self.size, self.size), np.uint8)
        for loop in (INNER_LIP_LOOP, LEFT_EYE_LOOP, RIGHT_EYE_LOOP):
            cv2.fillPoly(mask, [np.round(self.layout[list(loop)]).astype(np.int32)], 1)
        return cv2.dilate(mask, np.ones((2 * margin + 1,) * 2, np.uint8)).astype(bool)

    def facing(self, landmarks: np.ndarray, min_ratio: float = 0.2) -> np.ndarray:
        """`(size, size)` bool: layout pixels whose mesh triangle faces the camera in the image with these
        landmarks and is not foreshortened below ``min_ratio`` of the face's median scale (near the silhouette a
        warp samples the background or the nose's other side; those points are not compared)."""
        ratio = _signed_areas(np.asarray(landmarks, np.float64)[:, :2], self.triangles) / self.layout_areas
        positive = ratio[ratio > 0]
        if not len(positive):
            return np.zeros_like(self.inside)
        good = ratio > min_ratio * float(np.median(positive))
        return good[self.pixel_triangle] & self.inside

    def visible(self, landmarks: np.ndarray, min_fraction: float = 0.5) -> np.ndarray:
        """`(size, size)` bool: layout pixels whose mesh triangle is not hidden behind a nearer part of the face
        in the image with these `(478, 3)` landmarks (z: Face Mesh's depth, smaller = nearer): a turned head's
        nose covers part of its far cheek, which faces the camera all the same; what the frame does not show is
        not compared. All True without a z column.

        The triangles are drawn far to near into an id image at about four times the layout's resolution; one
        counts as hidden when less than ``min_fraction`` of its area (less a px-wide rim, which its neighbours'
        shared edges take) keeps its id; triangles of less than a layout pixel are left to :meth:`facing`."""
        points = np.asarray(landmarks, np.float64)
        if points.ndim != 2 or points.shape[1] < 3 or not np.isfinite(points[:, 2]).all():
            return self.inside.copy()
        xy = points[:, :2] - points[:, :2].min(axis=0)
        xy *= RASTER_SCALE * self.size / max(float(np.ptp(xy, axis=0).max()), 1.0)
        corners = xy[self.triangles]  # (K, 3, 2)
        height, width = (int(np.ceil(v)) + 2 for v in xy.max(axis=0)[::-1])
        ids = np.full((height, width), -1, np.int32)
        order = np.argsort(-points[self.triangles, 2].mean(axis=1))  # far first, near last (painter's)
        rounded = np.round(corners).astype(np.int32)
        for k in order:
            cv2.fillConvexPoly(ids, rounded[k], int(k))
        counts = np.bincount(ids[ids >= 0], minlength=len(self.triangles))
        area = np.abs(_signed_areas(xy, self.triangles))
        rim = 0.5 * np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2).sum(axis=1)
        shown = (counts >= min_fraction * (area - rim)) | (area < RASTER_SCALE**2)
        return shown[self.pixel_triangle] & self.inside

    def warp(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """`(size, size)` float32 grey (0..1) frontal view of the face with these `(478, 2+)` pixel landmarks."""
        points = np.asarray(landmarks, np.float64)[:, :2]
        box = face_boxes(points[None], image.shape[:2], growth=1.3)[0]
        crop = luminance(image[box[1]:box[3], box[0]:box[2]]).astype(np.float32) / 255.0
        scale = min(1.0, self.size / max(float(np.ptp(points, axis=0).max()), 1.0))  # no aliasing from big faces
        if scale < 1.0:
            crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                              interpolation=cv2.INTER_AREA)
        local = (points - box[:2]) * np.array([crop.shape[1] / (box[2] - box[0]), crop.shape[0] / (box[3] - box[1])])
        source = np.einsum("pk,pkd->pd", self.weights, local[self.corners]).reshape(self.size, self.size, 2)
        return cv2.remap(crop, source[..., 0].astype(np.float32), source[..., 1].astype(np.float32),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (points[triangles[:, i]] for i in range(3))
    return ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])) / 2


def _edges(grey: np.ndarray, blur: float = 0.0) -> np.ndarray:
    """Gradient magnitude, of the image blurred by ``blur`` pixels (coarse structure: blotches, a second nose)."""
    if blur > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), blur)
    return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))


def duplicated_structure(frames: np.ndarray, landmarks: np.ndarray, source: np.ndarray, source_landmarks: np.ndarray,
                         config: ArtefactConfig = ArtefactConfig(),
                         warp: FrontalWarp | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`(T,)` duplicated-structure scores of ``frames`` against the ``source`` portrait (see the module docstring)
    and `(T,)` flags."""
    warp = warp or FrontalWarp(config.frontal_size)
    kernel = np.ones((2 * config.dilation + 1,) * 2, np.uint8)
    base = cv2.erode(warp.inside.astype(np.uint8), kernel).astype(bool) & ~warp.features
    portrait = warp.warp(np.asarray(source), source_landmarks)
    references = [_edges(portrait, blur) for blur in EDGE_SCALES]
    allowed = [cv2.dilate(reference, kernel) for reference in references]
    contrast = [max(float(reference[base].mean()), 1e-6) for reference in references]
    scores = np.zeros(len(frames))
    for index, (frame, points) in enumerate(zip(frames, landmarks, strict=False)):
        mask = base & cv2.erode((warp.facing(points) & warp.visible(points)).astype(np.uint8), kernel).astype(bool)
        if not mask.any():
            continue
        frontal = warp.warp(frame, points)
        excess = sum(np.clip(_edges(frontal, blur) - limit, 0, None) / scale
                     for blur, limit, scale in zip(EDGE_SCALES, allowed, contrast, strict=True)) * mask
        density = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), config.patch_sigma) + 1e-3
        scores[index] = float((cv2.GaussianBlur(excess, (0, 0), config.patch_sigma) / density)[mask].max())
    return scores, scores > config.duplication_threshold


def artefact_score(frames: np.ndarray, landmarks: np.ndarray, source: np.ndarray | None = None,
                   source_landmarks: np.ndarray | None = None,
                   config: ArtefactConfig = ArtefactConfig()) -> ArtefactReport:
    """Both detectors on `(T, H, W, 3)` uint8 ``frames`` with their `(T, 478, 2+)` pixel ``landmarks``.

    ``source`` / ``source_landmarks``: the portrait the frames were made from (any size) and its `(478, 2+)`
    landmarks; without them the first frame is the reference for duplicated structure.
    """
    frames = np.asarray(frames)
    landmarks = np.asarray(landmarks)
    if source is None or source_landmarks is None:
        source, source_landmarks = frames[0], landmarks[0]
    change, outlier = temporal_outliers(frames, landmarks, config)
    duplication, duplicated = duplicated_structure(frames, landmarks, source, source_landmarks, config)
    return ArtefactReport(change, outlier, duplication, duplicated)
