"""``magicportrait faces``: every face found in a portrait, boxed and numbered as ``--face N`` numbers them.

The quickest way to choose a face in a group photo: the picture shows which number is which; a face the detector
missed can still be given by hand with ``--face-box x,y,width,height``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from magicportrait.errors import InputError, NoFaceError
from magicportrait.io.image import load_image, save_image
from magicportrait.tracking import FaceTracker, TrackerConfig
from magicportrait.tracking.boxes import landmark_bboxes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
BOX_COLOURS = ((0, 230, 118), (255, 196, 0), (41, 182, 246), (255, 82, 82), (186, 104, 200), (255, 241, 118))


@dataclass(frozen=True)
class FoundFace:
    """Face ``number`` (0 = leftmost) and its landmark box as x, y, width, height pixels (a ``--face-box``)."""

    number: int
    box: tuple[int, int, int, int]

    @property
    def face_box_flag(self) -> str:
        return "--face-box " + ",".join(str(v) for v in self.box)


def find_portrait_faces(image: np.ndarray, config: TrackerConfig | None = None,
                        source: str = "") -> list[FoundFace]:
    """The faces of an RGB image, numbered left to right like ``--face N``."""
    with FaceTracker(config or TrackerConfig(show_progress=False)) as tracker:
        faces = tracker.find_faces(image, source)
    found = []
    for number, landmarks in enumerate(faces):
        x0, y0, x1, y1 = landmark_bboxes(landmarks)
        found.append(FoundFace(number, (round(x0), round(y0), round(x1 - x0), round(y1 - y0))))
    return found


def draw_faces(image: np.ndarray, faces: list[FoundFace]) -> np.ndarray:
    """``image`` with each face boxed and its number written above it, sized for the picture's resolution."""
    canvas = np.ascontiguousarray(image.copy())
    thickness = max(2, round(max(image.shape[:2]) / 400))
    for face in faces:
        x, y, width, height = face.box
        colour = BOX_COLOURS[face.number % len(BOX_COLOURS)]
        cv2.rectangle(canvas, (x, y), (x + width, y + height), colour, thickness, cv2.LINE_AA)
        scale = max(0.6, width / 90.0)
        label = str(face.number)
        (label_w, label_h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y - label_h - base - 2 * thickness)
        cv2.rectangle(canvas, (x, top), (x + label_w + 2 * thickness, top + label_h + base + 2 * thickness),
                      colour, -1)
        cv2.putText(canvas, label, (x + thickness, top + label_h + thickness), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas


def write_faces_picture(source: str | Path, output: str | Path,
                        config: TrackerConfig | None = None) -> list[FoundFace]:
    """Find the faces of the portrait ``source`` and write it, boxed and numbered, to the image file ``output``.

    Raises:
        InputError: ``output`` is not an image file name.
        NoFaceError: no face found (nothing is written).
    """
    output = Path(output)
    if output.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"-o {output}: faces writes one picture; give an image file name such as faces.png.")
    image = load_image(source)
    faces = find_portrait_faces(image, config, str(source))
    if not faces:
        raise NoFaceError(f"No face found in {source}. If you can see one, give it with --face-box "
                          "x,y,width,height (pixels) to guide / animate.")
    output.parent.mkdir(parents=True, exist_ok=True)
    save_image(output, draw_faces(image, faces))
    return faces
