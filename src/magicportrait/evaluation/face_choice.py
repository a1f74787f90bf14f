"""Which face the evaluation measures when a frame shows several people.

``--face N`` numbers the faces of the generated video's first frame left to right (as ``animate --face`` numbers
the portrait's); the track then keeps that identity. For a magicportrait output folder the default is the face the
generator animated: the face nearest the crop recorded in ``source_face.npz`` (see
:func:`magicportrait.pipelines.evaluate.generator_face_box`). The source portrait (for CSIM and the artefact
score) is measured on the same face: the same number, or the face nearest the same box.
"""

from __future__ import annotations

import logging

import numpy as np

from magicportrait.types import Track

logger = logging.getLogger(__name__)


def track_video(tracker, frames: np.ndarray, fps: float, source: str, face: int | None,
                box: np.ndarray | None) -> Track:
    """Track face ``face`` (left to right in the first frame), else the face nearest ``box``, else the most
    prominent face of ``frames``."""
    return tracker.track_frames(frames, fps=fps, source=source, face_index=face,
                                near_box=None if face is not None else box)


def track_portrait(tracker, image: np.ndarray, source: str, face: int | None, box: np.ndarray | None) -> Track:
    """The portrait's face ``face``, else the one nearest ``box`` (in the portrait's pixels), else the most
    prominent one."""
    if face is None and box is not None:
        faces = tracker.find_faces(image, source)
        if len(faces) > 1:
            face = nearest_face(faces, box)
    return tracker.track_image(image, source=source, face_index=face)


def nearest_face(faces: list[np.ndarray], box: np.ndarray) -> int:
    """Index of the face (`(478, 3)` landmarks) whose landmark box centre is nearest ``box``'s centre."""
    from magicportrait.tracking import landmark_bboxes

    centre = (np.asarray(box[:2], float) + np.asarray(box[2:], float)) / 2
    distances = [np.linalg.norm((landmark_bboxes(f)[:2] + landmark_bboxes(f)[2:]) / 2 - centre) for f in faces]
    return int(np.argmin(distances))


def scale_box(box: np.ndarray | None, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray | None:
    """``box`` (x0, y0, x1, y1) in an image of ``from_size`` (H, W) pixels, in one of ``to_size``."""
    if box is None:
        return None
    scale = np.array([to_size[1] / from_size[1], to_size[0] / from_size[0]] * 2)
    return np.asarray(box, np.float64) * scale
