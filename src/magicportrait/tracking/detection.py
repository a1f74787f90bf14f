"""Finding every face of an image: MediaPipe's full-range detector at several rotations, then Face Mesh on an
upright crop around each detection.

Face Mesh's own detector is short-range and wants an upright, fairly frontal face filling much of its input: in a
group photo it misses turned, lowered and tilted heads. The full-range detector (BlazeFace, 192 px input) finds
them, but only up to a moderate roll; detecting on copies of the image rotated by a few angles covers tilted heads.
Each detection then gets a crop rotated so that its eyes are level, at a few crop sizes (a profile face with a hand
at the mouth is meshed at one size and not at another), and Face Mesh confirms it: a detection the mesh does not
confirm is not a face, which keeps false positives out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from magicportrait.tracking.boxes import invert_affine, landmark_bboxes, transform_points

DETECTION_ANGLES = (0.0, 30.0, -30.0, 60.0, -60.0)  # degrees; BlazeFace finds faces up to ~30 degrees of roll
MESH_CROP_SCALES = (1.8, 1.4, 2.4)  # crop side / detection box side, tried in this order
MESH_CROP_SIZE_RANGE = (192, 512)  # crop resolution (px): the face's own, clipped to this range
DUPLICATE_CENTER_DIST = 0.5  # detections whose centres are closer than this many box sides are one face
RIGHT_EYE = (33, 133)  # MediaPipe eye corners: the person's right eye (image left), then the left one
LEFT_EYE = (362, 263)
LANDMARK_BOX_RATIO = (0.6, 1.5)  # a good Face Mesh fit's box / the detector's side (measured 0.77-1.2)
MATCH_CENTER_DIST = 0.75  # a meshed face belongs to a detection if its box centre is this close (detector boxes
# are tighter than landmark boxes)


@dataclass(frozen=True)
class FaceDetection:
    """One detector box in image pixels: ``box`` (x0, y0, x1, y1), the two eye centres ``eyes`` (2, 2) in image
    order (the person's right eye, on the image's left, first) and the detector's ``score``."""

    box: np.ndarray
    eyes: np.ndarray
    score: float

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0])

    @property
    def side(self) -> float:
        return max(float(self.box[2] - self.box[0]), float(self.box[3] - self.box[1]))

    @property
    def roll_degrees(self) -> float:
        """Tilt of the eye line in the image (positive: clockwise on screen), what an upright crop undoes."""
        dx, dy = self.eyes[1] - self.eyes[0]
        return math.degrees(math.atan2(dy, dx))


def center_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between the centres of two (x0, y0, x1, y1) boxes in units of the longer side of ``a``."""
    size = max(float(a[2] - a[0]), float(a[3] - a[1]), 1e-6)
    return math.hypot((a[0] + a[2] - b[0] - b[2]) / 2.0, (a[1] + a[3] - b[1] - b[3]) / 2.0) / size


def mesh_faces(mesh, image: np.ndarray, out_width: float, out_height: float) -> list[np.ndarray]:
    """Face Mesh landmarks of ``image`` as ``(478, 3)`` float32 arrays scaled to ``out_width x out_height``.

    MediaPipe's x, y are normalised by the image width/height and its z by the width, so multiplying by the
    output size gives pixels of a resized copy of ``image`` too (used for the working-size downscale).
    """
    result = mesh.process(image)
    if not result.multi_face_landmarks:
        return []
    scale = np.array([out_width, out_height, out_width], dtype=np.float32)
    return [np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32) * scale
            for face in result.multi_face_landmarks]


def detect_faces(detector, image: np.ndarray, out_width: float, out_height: float) -> list[FaceDetection]:
    """Detector boxes and eyes of ``image`` scaled to ``out_width x out_height`` pixels."""
    result = detector.process(image)
    scale = np.array([out_width, out_height])
    detections = []
    for detection in result.detections or []:
        rel = detection.location_data.relative_bounding_box
        box = np.array([rel.xmin, rel.ymin, rel.xmin + rel.width, rel.ymin + rel.height]) * np.tile(scale, 2)
        keypoints = detection.location_data.relative_keypoints
        eyes = np.array([[keypoints[0].x, keypoints[0].y], [keypoints[1].x, keypoints[1].y]]) * scale
        detections.append(FaceDetection(box=box, eyes=eyes, score=float(detection.score[0])))
    return detections


def rotation_canvas(image_size: tuple[int, int], degrees: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The ``(2, 3)`` OpenCV matrix rotating an image by ``degrees`` (counter-clockwise on screen) about its centre
    into a canvas that holds all of it, and that canvas's (width, height)."""
    height, width = image_size
    # OpenCV puts pixel centres on integers: the image's centre is at ((w - 1) / 2, (h - 1) / 2)
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    canvas = (math.ceil(height * sin + width * cos - 1e-6), math.ceil(height * cos + width * sin - 1e-6))
    matrix[0, 2] += (canvas[0] - width) / 2.0
    matrix[1, 2] += (canvas[1] - height) / 2.0
    return matrix, canvas


def _mapped(detection: FaceDetection, matrix: np.ndarray) -> FaceDetection:
    """A detection of a transformed image (``matrix``: original -> transformed) in the original's pixels: the box
    keeps its side (rotations and the uniform scales used here preserve it up to the scale)."""
    to_original = invert_affine(matrix)
    center = transform_points(detection.center, to_original)
    half = 0.5 * detection.side * math.sqrt(abs(np.linalg.det(to_original[:, :2])))
    return FaceDetection(box=np.concatenate([center - half, center + half]),
                         eyes=transform_points(detection.eyes, to_original), score=detection.score)


def detect_rotated(detector, image: np.ndarray, out_size: tuple[int, int],
                   angles: tuple[float, ...] = DETECTION_ANGLES) -> list[FaceDetection]:
    """Detections of ``image`` and of copies rotated by ``angles``, in ``out_size`` = (width, height) pixels, one
    per face (the highest-scoring of those that coincide)."""
    height, width = image.shape[:2]
    found = []
    for angle in angles:
        if angle == 0.0:
            found += detect_faces(detector, image, *out_size)
            continue
        matrix, canvas = rotation_canvas((height, width), angle)
        rotated = cv2.warpAffine(image, matrix, canvas, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        out_to_rotated = _compose(matrix, scale_matrix(width / out_size[0], height / out_size[1]))
        found += [_mapped(d, out_to_rotated) for d in detect_faces(detector, rotated, *canvas)]
    return merge_detections(found)


def scale_matrix(scale_x: float, scale_y: float) -> np.ndarray:
    """The OpenCV-convention ``(2, 3)`` matrix of a resize by these factors (as ``cv2.resize`` maps pixels)."""
    return np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5]])


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine ``outer(inner(x))`` of two (2, 3) matrices (OpenCV convention on both)."""
    outer, inner = np.asarray(outer, dtype=np.float64), np.asarray(inner, dtype=np.float64)
    composed = outer[:, :2] @ inner
    composed[:, 2] += outer[:, 2]
    return composed


def merge_detections(detections: list[FaceDetection]) -> list[FaceDetection]:
    """One detection per face: best score first, dropping those centred within half a box of a kept one."""
    kept: list[FaceDetection] = []
    for detection in sorted(detections, key=lambda d: -d.score):
        if all(center_distance(k.box, detection.box) > DUPLICATE_CENTER_DIST for k in kept):
            kept.append(detection)
    return kept


def detect_in_tiles(detector, frame: np.ndarray, tile_size: int) -> list[FaceDetection]:
    """Detections in half-overlapping full-resolution tiles of ``tile_size`` pixels, for faces too small once a
    large image is downscaled (a face smaller than half a tile lies wholly inside at least one tile)."""
    height, width = frame.shape[:2]
    tile = min(height, width, tile_size)
    if max(height, width) <= tile_size:
        return []
    found = []
    for top in tile_starts(height, tile):
        for left in tile_starts(width, tile):
            window = np.ascontiguousarray(frame[top:top + tile, left:left + tile])
            offset = np.array([left, top])
            found += [FaceDetection(box=d.box + np.tile(offset, 2), eyes=d.eyes + offset, score=d.score)
                      for d in detect_faces(detector, window, tile, tile)]
    return merge_detections(found)


def tile_starts(length: int, tile: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with half-tile overlap."""
    starts = list(range(0, max(length - tile, 0), max(tile // 2, 1)))
    return starts + [max(length - tile, 0)]


def upright_crop_matrix(center: np.ndarray, side: float, roll_degrees: float, out_size: int) -> np.ndarray:
    """The ``(2, 3)`` OpenCV matrix mapping the square of ``side`` pixels around ``center``, turned by
    ``roll_degrees``, onto an ``out_size`` crop in which that tilt is undone (the eyes level)."""
    angle = math.radians(roll_degrees)
    scale = out_size / side
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    linear = np.array([[cos, sin], [-sin, cos]])
    # continuous image space: u = L (x - c) + out/2; OpenCV's pixel centres sit half a pixel off
    offset = 0.5 * out_size - linear @ np.asarray(center, dtype=np.float64)
    offset += linear @ np.array([0.5, 0.5]) - 0.5
    return np.column_stack([linear, offset])


def mesh_detection(mesh, frame: np.ndarray, detection: FaceDetection,
                   scales: tuple[float, ...] = MESH_CROP_SCALES) -> np.ndarray | None:
    """Face Mesh landmarks (frame pixels) of the face of ``detection``, meshed on an upright crop around it at each
    of ``scales`` in turn until one is found near the detection; None if the mesh confirms none."""
    for scale in scales:
        side = scale * detection.side
        crop_size = int(np.clip(round(side), *MESH_CROP_SIZE_RANGE))
        matrix = upright_crop_matrix(detection.center, side, detection.roll_degrees, crop_size)
        crop = cv2.warpAffine(frame, matrix, (crop_size, crop_size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        to_frame = invert_affine(matrix)
        faces = [transform_points(f, to_frame).astype(np.float32)
                 for f in mesh_faces(mesh, crop, crop_size, crop_size)]
        near = [f for f in faces if center_distance(landmark_bboxes(f), detection.box) <= MATCH_CENTER_DIST]
        if near:
            return min(near, key=lambda f: center_distance(landmark_bboxes(f), detection.box))
    return None


def detect_in_region(detector, frame: np.ndarray, center: np.ndarray, side: float,
                     crop_size: int) -> list[FaceDetection]:
    """Detections (frame pixels) in the square of ``side`` pixels around ``center``, tilted copies included."""
    matrix = upright_crop_matrix(center, side, 0.0, crop_size)
    crop = cv2.warpAffine(frame, matrix, (crop_size, crop_size), flags=cv2.INTER_AREA if side > crop_size
                          else cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return [_mapped(d, matrix) for d in detect_rotated(detector, crop, (crop_size, crop_size))]


def confirmed(short_range_detector, frame: np.ndarray, detection: FaceDetection, size: int = 256) -> bool:
    """Whether MediaPipe's short-range detector also sees a face on an upright crop around ``detection``.

    The full-range detector, run on full-resolution tiles, fires now and then on a hand or a patterned dress, and
    Face Mesh then fits a face to it anyway; on the sample photos the short-range detector saw every real face on
    such a crop (score >= 0.8) and none of those false ones.
    """
    matrix = upright_crop_matrix(detection.center, MESH_CROP_SCALES[0] * detection.side, detection.roll_degrees, size)
    crop = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    centre = np.array([size / 2.0, size / 2.0])
    side = size / MESH_CROP_SCALES[0]
    return any(np.linalg.norm(d.center - centre) <= MATCH_CENTER_DIST * side
               for d in detect_faces(short_range_detector, crop, size, size))


def detection_from_landmarks(landmarks: np.ndarray) -> FaceDetection:
    """A detector-like box and eyes for meshed ``landmarks`` (to re-mesh that face on an upright crop): the
    detector's box is about 0.8 of the landmark box."""
    box = landmark_bboxes(landmarks)
    center = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
    half = 0.4 * max(box[2] - box[0], box[3] - box[1])
    eyes = np.stack([landmarks[list(RIGHT_EYE), :2].mean(axis=0), landmarks[list(LEFT_EYE), :2].mean(axis=0)])
    return FaceDetection(box=np.concatenate([center - half, center + half]), eyes=eyes, score=1.0)



def fitted_badly(landmarks: np.ndarray, detection: FaceDetection) -> bool:
    """Whether Face Mesh's fit of a face disagrees with the detector's box of it: a landmark box far larger or
    smaller (on the sample photos a good fit's box is 0.77-1.2x the detector's side; a head thrown back next to an
    arm came out 1.7x). The tilts are not compared: the detector's eye points of a profile face are unreliable."""
    ratio = float(max(np.ptp(landmarks[:, 0]), np.ptp(landmarks[:, 1]))) / max(detection.side, 1e-6)
    return not LANDMARK_BOX_RATIO[0] <= ratio <= LANDMARK_BOX_RATIO[1]
