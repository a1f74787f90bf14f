"""Face tracking with MediaPipe Face Mesh: one face, 478 image-space landmarks per frame, identity kept over time.

Per frame: Face Mesh on the (possibly downscaled) frame -> pick the tracked face among the faces found ->
if it is missing, a full-range face detector plus a Face Mesh on a crop around the detection (the "rescue") ->
otherwise the frame is marked missing and filled afterwards by linear interpolation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal

import cv2
import numpy as np
from tqdm import tqdm

from magicportrait.config import FACE, OUTPUT, check_at_least, check_choices, check_positive, check_range, option
from magicportrait.console import QuietStart
from magicportrait.errors import DependencyError, InputError, NoFaceError
from magicportrait.tracking.boxes import bbox_iou, landmark_bboxes, smooth_boxes, square_boxes_from_landmarks
from magicportrait.tracking.detection import (
    FaceDetection,
    center_distance,
    confirmed,
    detect_faces,
    detect_in_region,
    detect_in_tiles,
    detect_rotated,
    detection_from_landmarks,
    fitted_badly,
    merge_detections,
    mesh_detection,
    mesh_faces,
)
from magicportrait.tracking.selection import (
    DETECTION_MAX_CENTER_DIST,
    MATCH_MAX_CENTER_DIST,
    FaceSelector,
    bbox_size,
    check_face_box,
    check_face_index,
    face_out_of_range_message,
    frame_ranges,
    interpolate_missing,
)
from magicportrait.types import NUM_LANDMARKS, Track

logger = logging.getLogger(__name__)

MEDIAPIPE_INSTALL = "pip install --no-deps mediapipe==0.10.21"
MIN_FACE_PX = 64  # smallest face (in the working frame) MediaPipe finds reliably
TINY_IMAGE_PX = 128  # below this the whole frame is hardly bigger than a usable face
UPRIGHT_ROLL_DEGREES = 10.0  # faces found in a whole image tilted more than this are meshed again, upright
SETTLED_MIN_IOU = 0.6  # a settled face must overlap the face it re-measures this much


@dataclass
class TrackerConfig:
    """Settings of :class:`FaceTracker` (also the CLI's tracking flags)."""

    cli_group: ClassVar[str] = FACE
    cli_field_groups: ClassVar[dict[str, str]] = {"show_progress": OUTPUT}

    max_faces: int = option(4, "Faces looked for per frame (>1 lets the tracker keep identity among people).")
    min_detection_confidence: float = option(0.5, "MediaPipe face detection threshold.")
    min_tracking_confidence: float = option(0.5, "MediaPipe landmark tracking threshold.")
    box_scale: float = option(2.0, "Crop box side / larger side of the landmark box.")
    box_smoothing: float = option(0.5, "Temporal smoothing of the crop boxes, 0 (off) to 1.")
    max_working_size: int = option(1280, "Frames with a longer side above this are downscaled for tracking "
                                   "(landmarks are returned in full-resolution pixels).")
    detection_fallback: bool = option(True, "When the face mesh misses the face, retry on a face-detector crop.")
    show_progress: bool = option(True, "Show progress bars.")
    relock_after_s: float = option(2.0, "After the tracked face has been missing this long (seconds), lock onto "
                                   "the most prominent face again (a scene cut, or the person left).")
    min_face_size: float = option(32.0, "Ignore faces smaller than this (pixels): too coarse for later stages.")
    pose_refinement: Literal["photometric", "off"] = option(
        "photometric", "Refine a video's head pose from the face's texture after tracking (MediaPipe's landmarks "
        "lean toward a frontal face; see tracking/photometric.py): photometric or off.")
    settle_passes: int = option(3, "Extra Face Mesh passes on a video's first frame and on a portrait, so they are "
                                "measured like later video frames (see FaceTracker).")

    def __post_init__(self) -> None:
        check_choices(self)
        check_at_least(self, 1, "max_faces")
        check_range(self, "min_detection_confidence", 0, 1)
        check_range(self, "min_tracking_confidence", 0, 1)
        check_range(self, "box_smoothing", 0, 1)
        check_positive(self, "box_scale")
        check_at_least(self, TINY_IMAGE_PX, "max_working_size")
        check_at_least(self, 0, "relock_after_s", "min_face_size", "settle_passes")


def _import_mediapipe():
    """The legacy MediaPipe solutions modules (face_mesh, face_detection), imported only when tracking starts."""
    try:
        from mediapipe.python.solutions import face_detection, face_mesh
    except ImportError as exc:
        raise DependencyError(
            f"Face tracking needs MediaPipe, which could not be imported ({exc}). Install it with: "
            f"{MEDIAPIPE_INSTALL}") from exc
    return face_mesh, face_detection


def _no_face_message(source: str, num_frames: int, image_size: tuple[int, int], working_scale: float,
                     largest_too_small: float, min_face_size: float) -> str:
    height, width = image_size
    what = source or ("the image" if num_frames == 1 else "the video")
    frames = "1 frame" if num_frames == 1 else f"{num_frames} frames"
    message = f"No usable face found in {what} ({frames} of {width}x{height} px). "
    if min(height, width) < TINY_IMAGE_PX:
        message += (f"A {width}x{height} px image is too small: MediaPipe works reliably with faces of at least "
                    f"~{MIN_FACE_PX} px across; use a larger image. ")
    if largest_too_small > 0:
        message += (f"A face was found, but it is only {largest_too_small:.0f} px across; faces under "
                    f"{min_face_size:.0f} px are ignored (TrackerConfig.min_face_size) as too coarse. ")
    min_face = math.ceil(MIN_FACE_PX / working_scale)
    message += (f"Likely causes: the face is too small (it should be at least ~{min_face} px across in these "
                "frames), too dark or blurred, or turned more than ~60 degrees away from the camera (profile). "
                "Use a closer, brighter, more frontal shot.")
    return message


def _as_rgb(frame: np.ndarray, index: int) -> np.ndarray:
    """Validate one frame as contiguous uint8 RGB ``(H, W, 3)`` (grey and RGBA are converted)."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise InputError(f"Frame {index}: expected uint8 RGB pixels, got dtype {frame.dtype}.")
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    elif frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[..., :3]
    if frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 1:
        raise InputError(f"Frame {index}: expected an HxWx3 RGB image, got shape {frame.shape}.")
    return np.ascontiguousarray(frame)


class FaceTracker:
    """Tracks one face through a video (or finds it in an image) with MediaPipe Face Mesh.

    Use as a context manager (or call :meth:`close`) to free MediaPipe's graphs::

        with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
            track = tracker.track_frames(frames, fps=25.0)
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._face_mesh, self._face_detection = _import_mediapipe()
        self._static_mesh = None
        self._detector = None
        self._short_range_detector = None

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Release the MediaPipe graphs (they are re-created if the tracker is used again)."""
        for graph in (self._static_mesh, self._detector, self._short_range_detector):
            if graph is not None:
                graph.close()
        self._static_mesh = self._detector = self._short_range_detector = None

    # -- public API

    def track_frames(self, frames: Iterable[np.ndarray], fps: float, num_frames: int | None = None,
                     source: str = "", face_index: int | None = None, near_box: np.ndarray | None = None) -> Track:
        """Track the face through RGB uint8 ``(H, W, 3)`` frames, reading them once (only landmarks are kept).

        The track starts on the most prominent face, or locked on face ``face_index`` of the first frame (numbered
        left to right as by :meth:`find_faces`), or on the first frame's face nearest ``near_box`` (x0, y0, x1, y1
        pixels); the selector then keeps that identity as usual.

        Raises:
            NoFaceError: no frame has a usable face.
            InputError: no frames, a bad frame, frames of different sizes, fps <= 0, or no face ``face_index``.
        """
        if not fps > 0:
            raise InputError(f"{source or 'Video'}: frame rate must be positive, got {fps}.")
        check_face_index(face_index, source)
        config = self.config
        per_frame: list[np.ndarray | None] = []
        num_faces: list[int] = []
        image_size: tuple[int, int] | None = None
        selector: FaceSelector | None = None
        progress = tqdm(frames, total=num_frames, desc="Tracking face", unit="frame", disable=not config.show_progress)
        # A fresh video-mode graph per sequence: its tracking state must not leak from one video into the next.
        video_mesh = self._video_mesh()
        with progress, video_mesh:
            for index, frame in enumerate(progress):
                frame = _as_rgb(frame, index)
                if image_size is None:
                    image_size = frame.shape[:2]
                    self._warn_if_tiny(image_size, source)
                    selector = FaceSelector(image_size, round(config.relock_after_s * fps), config.min_face_size)
                elif frame.shape[:2] != image_size:
                    raise InputError(f"{source or 'Video'}: frame {index} is {frame.shape[1]}x{frame.shape[0]} px, "
                                     f"the first frame was {image_size[1]}x{image_size[0]} px.")
                if index == 0:
                    if face_index is not None or near_box is not None:
                        selector.update(self._first_face_box(frame, face_index, near_box, source))
                    self._settle(video_mesh, frame)
                landmarks, count = self._locate(frame, video_mesh, selector)
                per_frame.append(landmarks)
                num_faces.append(count)
        if image_size is None:
            raise InputError(f"{source or 'Video'}: no frames to track.")
        return self._assemble_track(per_frame, num_faces, fps, image_size, source, selector)

    def track_image(self, image: np.ndarray, source: str = "", face_index: int | None = None,
                    face_box: tuple[float, float, float, float] | None = None) -> Track:
        """Find one face in one RGB uint8 image: a Track with T=1 and fps 0.

        ``face_index``: None takes the most prominent face (large and central, see :func:`face_score`); N takes
        face N of :meth:`find_faces`, numbered from 0 left to right. ``face_box`` (x, y, width, height pixels)
        takes the face inside it instead (:meth:`face_in_box`). ``num_faces[0]`` is how many faces were found
        (1 with ``face_box``).

        Raises:
            NoFaceError: no usable face (the message says why it may have failed, e.g. a tiny image).
            InputError: ``face_index`` is negative, the image has no face of that number, or ``face_box`` lies
                outside the image.
        """
        check_face_index(face_index, source)
        image = _as_rgb(image, 0)
        image_size = image.shape[:2]
        self._warn_if_tiny(image_size, source)
        selector = FaceSelector(image_size, 1, self.config.min_face_size)
        if face_box is not None:
            check_face_box(face_box, image_size, source)
            landmarks, count = self.face_in_box(image, face_box, source), 1
        elif face_index is None:
            landmarks, count = self._locate(image, self._get_static_mesh(), selector, tiled=True)
        else:
            faces, selector.largest_too_small = self._image_faces(image)
            if faces and face_index >= len(faces):
                raise InputError(face_out_of_range_message(face_index, len(faces), source))
            landmarks, count = (faces[face_index] if faces else None), len(faces)
        if landmarks is not None:
            landmarks = self._settled_landmarks(image, landmarks)
        return self._assemble_track([landmarks], [count], 0.0, image_size, source, selector)

    def _first_face_box(self, frame: np.ndarray, face_index: int | None, near_box: np.ndarray | None,
                        source: str) -> np.ndarray | None:
        """Landmark box of the face a video track starts locked on (None: not found, the usual choice applies)."""
        faces, _ = self._image_faces(frame)
        if face_index is not None:
            if faces and face_index >= len(faces):
                raise InputError(face_out_of_range_message(face_index, len(faces), f"the first frame of {source}"
                                                            if source else "the first frame"))
            return landmark_bboxes(faces[face_index]) if faces else None
        if not faces:
            return None
        boxes = [landmark_bboxes(face) for face in faces]
        return min(boxes, key=lambda box: center_distance(np.asarray(near_box, np.float64), box))

    def _settle(self, video_mesh, frame: np.ndarray) -> None:
        """Run the video-mode Face Mesh on ``frame`` ``settle_passes`` times without keeping the result.

        Face Mesh's landmarks depend on its region of interest: on a first frame that comes from its face detector,
        afterwards from the previous frame's landmarks, and within ~3 frames the face comes out ~4% larger and
        stays so. Settling first measures the first frame (and a portrait, see :meth:`_settled_landmarks`) like
        every later frame, so a still head does not seem to move or grow at the start of a video.
        """
        height, width = frame.shape[:2]
        working = self._working_frame(frame)
        for _ in range(self.config.settle_passes):
            mesh_faces(video_mesh, working, width, height)

    def _settled_landmarks(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """``landmarks`` of a face in a still image, re-measured as a settled video frame would be (if found)."""
        if self.config.settle_passes == 0:
            return landmarks
        height, width = image.shape[:2]
        box = landmark_bboxes(landmarks)
        with self._video_mesh() as video_mesh:
            self._settle(video_mesh, image)
            faces = mesh_faces(video_mesh, self._working_frame(image), width, height)
        overlaps = [bbox_iou(box, landmark_bboxes(face)) for face in faces]
        if not overlaps or max(overlaps) < SETTLED_MIN_IOU:
            return landmarks  # the video-mode mesh did not find this face (e.g. a small one found by the rescue)
        return faces[int(np.argmax(overlaps))]

    def find_faces(self, image: np.ndarray, source: str = "") -> list[np.ndarray]:
        """The ``(478, 3)`` float32 landmarks of every usable face in one RGB image, ordered left to right.

        The order (by the centre x of each face's landmark box) is the numbering users see and choose from with
        ``track_image(face_index=N)`` (``--face N``): 0 is the leftmost face. Faces smaller than
        ``min_face_size`` are left out. Face Mesh runs on the whole image; with ``detection_fallback``, faces it
        misses but the full-range detector finds (small ones) are meshed on a crop around each detection.
        """
        faces, _ = self._image_faces(_as_rgb(image, 0))
        logger.debug("%s: %d faces found.", source or "Image", len(faces))
        return faces

    def face_number(self, image: np.ndarray, landmarks: np.ndarray, source: str = "") -> int | None:
        """The left-to-right number (as in :meth:`find_faces`) of the face with these ``(478, 3)`` landmarks.

        Names the face :meth:`track_image` chose by prominence, so users can pick another one by number.
        None if no face found in ``image`` overlaps them by at least half (IoU of the landmark boxes).
        """
        target = landmark_bboxes(landmarks)
        overlaps = [bbox_iou(target, landmark_bboxes(face)) for face in self.find_faces(image, source)]
        if not overlaps or max(overlaps) < 0.5:
            return None
        return int(np.argmax(overlaps))

    # -- per-frame work

    def _locate(self, frame: np.ndarray, mesh, selector: FaceSelector,
                tiled: bool = False) -> tuple[np.ndarray | None, int]:
        """The tracked face's landmarks in ``frame`` (None if missing) and how many faces were seen.

        ``tiled``: if the detector finds nothing on the downscaled frame, also search full-resolution tiles
        (for single large images, where a face can be too small once the whole frame is downscaled).
        """
        height, width = frame.shape[:2]
        working = self._working_frame(frame)
        faces = mesh_faces(mesh, working, width, height)
        choice = selector.pick([landmark_bboxes(f) for f in faces])
        landmarks = None if choice is None else faces[choice]
        count = len(faces)
        if landmarks is None and self.config.detection_fallback:
            landmarks, num_detections = self._rescue(frame, working, selector, tiled)
            count = max(count + (landmarks is not None), num_detections)
        selector.update(None if landmarks is None else landmark_bboxes(landmarks))
        return landmarks, count

    def _rescue(self, frame: np.ndarray, working: np.ndarray, selector: FaceSelector,
                tiled: bool = False) -> tuple[np.ndarray | None, int]:
        """Find the tracked face with the full-range detector and a static Face Mesh on an upright crop around it.

        Face Mesh's own detector is short-range (faces filling much of the frame); the full-range one also finds
        small faces, and cropping around it gives the mesh a large, level face. When nothing is detected, tilted
        copies of the frame are searched too (and, with ``tiled``, full-resolution tiles of a large image).
        Returns (landmarks or None, detections).
        """
        height, width = frame.shape[:2]
        detections = detect_faces(self._get_detector(), working, width, height)
        if not detections and tiled:
            detections = detect_in_tiles(self._get_detector(), frame, self.config.max_working_size)
        if not detections:
            detections = detect_rotated(self._get_detector(), working, (width, height))
        ranked = selector.rank_detections([d.box for d in detections])
        if not ranked:
            return None, len(detections)
        landmarks = mesh_detection(self._get_static_mesh(), frame, detections[ranked[0]])
        choice = None if landmarks is None else selector.pick([landmark_bboxes(landmarks)])
        return (None if choice is None else landmarks), len(detections)

    def _image_faces(self, image: np.ndarray) -> tuple[list[np.ndarray], float]:
        """All usable faces of one RGB image, left to right, and the size of the largest one too small to use."""
        height, width = image.shape[:2]
        working = self._working_frame(image)
        faces = [self._upright(image, face) for face in mesh_faces(self._get_static_mesh(), working, width, height)]
        if self.config.detection_fallback:
            faces = self._with_detections(image, working, faces)
        sizes = [bbox_size(landmark_bboxes(f)) for f in faces]
        usable = [f for f, size in zip(faces, sizes, strict=True) if size >= self.config.min_face_size]
        largest_too_small = max([0.0, *(size for size in sizes if size < self.config.min_face_size)])
        return sorted(usable, key=lambda f: float(landmark_bboxes(f)[[0, 2]].mean())), largest_too_small

    def _upright(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """``landmarks`` of a face meshed in the whole image, measured again on an upright crop around it: Face
        Mesh fits a strongly tilted head poorly (a box reaching over an arm), and a level face well."""
        detection = detection_from_landmarks(landmarks)
        if abs(detection.roll_degrees) < UPRIGHT_ROLL_DEGREES:
            return landmarks
        remeshed = mesh_detection(self._get_static_mesh(), image, detection)
        return landmarks if remeshed is None else remeshed

    def _with_detections(self, frame: np.ndarray, working: np.ndarray, found: list[np.ndarray]) -> list[np.ndarray]:
        """``found`` (Face Mesh on the whole image) checked against the detector: faces it missed are added, and a
        face it fitted badly (box or tilt far from the detection's: a head thrown back, an arm beside it) is
        measured again; each meshed on an upright crop around its detection.

        The detector runs on the working image and on copies tilted by +-30 and +-60 degrees (tilted heads), and on
        full-resolution tiles of an image larger than the working size (small faces).
        """
        height, width = frame.shape[:2]
        detector = self._get_detector()
        detections = merge_detections(detect_rotated(detector, working, (width, height))
                                      + detect_in_tiles(detector, frame, self.config.max_working_size))
        faces = list(found)
        for detection in detections:
            near = [i for i, face in enumerate(faces)
                    if center_distance(landmark_bboxes(face), detection.box) <= DETECTION_MAX_CENTER_DIST]
            if near and not any(fitted_badly(faces[i], detection) for i in near):
                continue  # already found, and well
            if not confirmed(self._get_short_range_detector(), frame, detection):
                continue
            face = mesh_detection(self._get_static_mesh(), frame, detection)
            if face is None:
                continue
            if near:
                faces[near[0]] = face
            elif not any(center_distance(landmark_bboxes(f), landmark_bboxes(face)) <= MATCH_MAX_CENTER_DIST
                         for f in faces):
                faces.append(face)
        return faces

    def face_in_box(self, image: np.ndarray, box_xywh: tuple[float, float, float, float],
                    source: str = "") -> np.ndarray:
        """The ``(478, 3)`` landmarks of the face inside a user-given box (x, y, width, height in image pixels):
        ``--face-box``, for a face the detector misses. The detector looks for the face's tilt inside the box
        first; Face Mesh then confirms a face there.

        Raises:
            NoFaceError: Face Mesh finds no face in the box.
        """
        image = _as_rgb(image, 0)
        x, y, w, h = box_xywh
        box = FaceDetection(box=np.array([x, y, x + w, y + h], dtype=np.float64),
                            eyes=np.array([[x + 0.3 * w, y + 0.4 * h], [x + 0.7 * w, y + 0.4 * h]]), score=1.0)
        side = 2.0 * box.side  # the detector sees the box with some context around it
        crop_size = int(np.clip(round(side), 192, 1024))
        detections = [d for d in detect_in_region(self._get_detector(), image, box.center, side, crop_size)
                      if center_distance(box.box, d.box) <= 0.5]
        for candidate in [*detections, box]:
            landmarks = mesh_detection(self._get_static_mesh(), image, candidate, scales=(1.4, 1.0, 1.8, 2.4))
            if landmarks is not None and center_distance(box.box, landmark_bboxes(landmarks)) <= 0.5:
                return landmarks
        raise NoFaceError(f"{source or 'The image'}: no face found inside --face-box {x:g},{y:g},{w:g},{h:g}. "
                          "Give the box x,y,width,height in pixels of the image as it is on disk, around the "
                          "whole face (forehead to chin).")

    def _working_frame(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` downscaled so its longer side is at most ``max_working_size`` (area averaging)."""
        height, width = frame.shape[:2]
        scale = self.config.max_working_size / max(height, width)
        if scale >= 1.0:
            return frame
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)

    def _working_scale(self, image_size: tuple[int, int]) -> float:
        return min(1.0, self.config.max_working_size / max(image_size))

    # MediaPipe graphs; QuietStart keeps their start-up log lines (C++, on fd 2) off the console.

    def _video_mesh(self):
        config = self.config
        return QuietStart(self._face_mesh.FaceMesh, static_image_mode=False, max_num_faces=config.max_faces,
                          refine_landmarks=True, min_detection_confidence=config.min_detection_confidence,
                          min_tracking_confidence=config.min_tracking_confidence)

    def _get_static_mesh(self):
        if self._static_mesh is None:
            config = self.config
            self._static_mesh = QuietStart(self._face_mesh.FaceMesh, static_image_mode=True,
                                           max_num_faces=config.max_faces, refine_landmarks=True,
                                           min_detection_confidence=config.min_detection_confidence)
        return self._static_mesh

    def _get_detector(self):
        if self._detector is None:
            self._detector = QuietStart(self._face_detection.FaceDetection, model_selection=1,  # 1: full range
                                        min_detection_confidence=self.config.min_detection_confidence)
        return self._detector

    def _get_short_range_detector(self):
        if self._short_range_detector is None:
            self._short_range_detector = QuietStart(self._face_detection.FaceDetection, model_selection=0,
                                                    min_detection_confidence=self.config.min_detection_confidence)
        return self._short_range_detector

    # -- results

    def _warn_if_tiny(self, image_size: tuple[int, int], source: str) -> None:
        if min(image_size) < TINY_IMAGE_PX:
            logger.warning("%s is only %dx%d px; MediaPipe works reliably with faces of at least ~%d px across, "
                           "tracking may fail.",
                           source or "The input", image_size[1], image_size[0], MIN_FACE_PX)

    def _assemble_track(self, per_frame: list[np.ndarray | None], num_faces: list[int], fps: float,
                        image_size: tuple[int, int], source: str, selector: FaceSelector) -> Track:
        """Interpolate missing frames, compute smoothed boxes and pack everything into a :class:`Track`."""
        detected = np.array([lm is not None for lm in per_frame], dtype=bool)
        if not detected.any():
            raise NoFaceError(_no_face_message(source, len(per_frame), image_size, self._working_scale(image_size),
                                               selector.largest_too_small, self.config.min_face_size))
        landmarks = np.zeros((len(per_frame), NUM_LANDMARKS, 3), dtype=np.float32)
        landmarks[detected] = np.stack([lm for lm in per_frame if lm is not None])
        landmarks = interpolate_missing(landmarks, detected)
        if not detected.all():
            missing = np.flatnonzero(~detected)
            logger.warning("%s: no face in %d of %d frames (%s); their landmarks were interpolated.",
                           source or "Video", len(missing), len(detected), frame_ranges(missing))
        boxes = square_boxes_from_landmarks(landmarks, self.config.box_scale)
        boxes = smooth_boxes(boxes, fps, self.config.box_smoothing)
        return Track(landmarks=landmarks, boxes=boxes, detected=detected, fps=float(fps),
                     image_size=(int(image_size[0]), int(image_size[1])),
                     num_faces=np.asarray(num_faces, dtype=np.int16), source=source)
