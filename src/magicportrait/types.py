"""Typed data objects that stages exchange, each saved as a plain ``.npz`` (arrays + a JSON ``meta`` string).

No pickles: ``np.load(..., allow_pickle=False)`` reads every file written here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1


def save_npz(path: str | os.PathLike, kind: str, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``arrays`` and ``meta`` atomically (temp file + rename), so a crash never leaves half a file."""
    from magicportrait.io.atomic import atomic_path

    path = Path(path)
    meta = {"kind": kind, "schema_version": SCHEMA_VERSION, **meta}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load_npz(path: str | os.PathLike, kind: str | tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict]:
    from magicportrait.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file.")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile/numpy raise several types for a damaged file
        raise InputError(f"{path}: not a readable .npz file ({exc}).") from exc
    meta = json.loads(str(arrays.pop("meta", "{}")))
    kinds = (kind,) if isinstance(kind, str) else kind
    if meta.get("kind") not in kinds:
        raise InputError(f"{path}: holds a {meta.get('kind')!r}, expected {' or '.join(map(repr, kinds))}.")
    return arrays, meta


@dataclass
class Track:
    """Per-frame 2D/3D face landmarks of one video (or one image, T=1), from :mod:`magicportrait.tracking`.

    Attributes:
        landmarks: `(T, 478, 3)` float32, image space (x right, y down, z into the scene; pixels). MediaPipe's
            refined face mesh: 468 mesh points then 10 iris points.
        boxes: `(T, 3)` float32 smoothed square crop boxes as (center_x, center_y, side), pixels.
        detected: `(T,)` bool; False where no face was found and the frame was filled by interpolation.
        fps: frames per second of the source video (0 for an image).
        image_size: (height, width) of the frames in pixels.
        num_faces: `(T,)` int16, how many faces the detector saw in each frame (the tracked one is among them).
    """

    landmarks: np.ndarray
    boxes: np.ndarray
    detected: np.ndarray
    fps: float
    image_size: tuple[int, int]
    num_faces: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.num_faces is None:
            self.num_faces = self.detected.astype(np.int16)

    @property
    def num_frames(self) -> int:
        return int(self.landmarks.shape[0])

    @property
    def missing_frames(self) -> np.ndarray:
        """Indices of the frames whose landmarks were interpolated."""
        return np.flatnonzero(~self.detected)

    def save(self, path: str | os.PathLike) -> Path:
        arrays = {"landmarks": self.landmarks, "boxes": self.boxes, "detected": self.detected,
                  "num_faces": self.num_faces}
        meta = {"fps": self.fps, "image_size": list(self.image_size), "source": self.source}
        return save_npz(path, "Track", arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Track:
        arrays, meta = load_npz(path, "Track")
        return cls(landmarks=arrays["landmarks"], boxes=arrays["boxes"], detected=arrays["detected"].astype(bool),
                   num_faces=arrays["num_faces"], fps=float(meta["fps"]), image_size=tuple(meta["image_size"]),
                   source=meta.get("source", ""))


@dataclass
class HeadTrack:
    """Per-frame parameters of a head model fitted to a :class:`Track` (the same layout for every head model).

    With the default orthographic camera (like the official release) the posed vertices are
    ``scale * rotate(rotation, model_vertices(identity, expression, joint_rotations)) + translation``, in image
    space. With ``extras["camera"] == "perspective"`` (see :attr:`camera`), ``translation`` is the model origin
    in camera space (model units; x right, y down, z away from the camera), ``scale`` is 1, and points are
    projected with the focal length ``extras["focal_px"]`` about the image centre
    (:func:`magicportrait.heads.base.project_to_image`).

    Attributes:
        model: name of the head model ("mediapipe" for the open default geometry, "flame").
        identity: `(S,)` shape parameters shared by all frames.
        expression: `(T, E)` expression parameters.
        rotation: `(T, 3)` axis-angle of the head (model frame -> image space).
        joint_rotations: `(T, J, 3)` axis-angle of articulated joints (FLAME: neck, jaw, eyes); J=0 if none.
        scale: `(T,)` model units -> pixels.
        translation: `(T, 3)` pixels; where the model origin lands in image space.
        image_size: (height, width) of the image space.
        fps: frames per second.
        residual: `(T,)` fitting residual (mean landmark distance, pixels).
    """

    model: str
    identity: np.ndarray
    expression: np.ndarray
    rotation: np.ndarray
    scale: np.ndarray
    translation: np.ndarray
    image_size: tuple[int, int]
    fps: float = 0.0
    joint_rotations: np.ndarray | None = None
    residual: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    kind = "HeadTrack"  # the file's kind; subclasses name theirs

    def __post_init__(self) -> None:
        num_frames = self.rotation.shape[0]
        if self.joint_rotations is None:
            self.joint_rotations = np.zeros((num_frames, 0, 3), np.float32)
        if self.residual is None:
            self.residual = np.zeros(num_frames, np.float32)

    @property
    def num_frames(self) -> int:
        return int(self.rotation.shape[0])

    @property
    def camera(self) -> str:
        """"orthographic" (default, like the official release) or "perspective"."""
        return self.extras.get("camera", "orthographic")

    def select(self, index) -> HeadTrack:
        """A track of the same class with the frames picked by ``index`` (slice, int array or boolean mask)."""
        per_frame = {f.name: getattr(self, f.name)[index] for f in fields(self)
                     if f.name in ("expression", "rotation", "scale", "translation", "joint_rotations", "residual")}
        return type(self)(model=self.model, identity=self.identity, image_size=self.image_size, fps=self.fps,
                          extras=dict(self.extras), **per_frame)

    def save(self, path: str | os.PathLike) -> Path:
        arrays = {name: getattr(self, name) for name in ("identity", "expression", "rotation", "scale", "translation",
                                                          "joint_rotations", "residual")}
        meta = {"model": self.model, "image_size": list(self.image_size), "fps": self.fps, "extras": self.extras}
        return save_npz(path, self.kind, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> HeadTrack:
        """Read a file written by :meth:`save`; ``HeadTrack.load`` also reads a FlameTrack file (as a FlameTrack)."""
        kinds = tuple(sub.kind for sub in (cls, *_subclasses(cls)))
        arrays, meta = load_npz(path, kinds)
        track_class = next(sub for sub in (cls, *_subclasses(cls)) if sub.kind == meta["kind"])
        return track_class(model=meta["model"], image_size=tuple(meta["image_size"]), fps=float(meta["fps"]),
                           extras=meta.get("extras", {}), **arrays)


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


_FLAME_FRAME = np.array([1.0, -1.0, -1.0], np.float32)  # model frame <-> FLAME frame: a rotation by pi about x


@dataclass
class FlameTrack(HeadTrack):
    """A :class:`HeadTrack` of FLAME parameters, with accessors in FLAME's own conventions.

    The stored arrays are the HeadTrack ones (model frame: x toward the subject's left, y down, z into the head;
    centimetres), so every stage treats it like any other head track. The properties give the values a FLAME
    user expects: ``shape`` (beta), ``expression`` (psi), axis-angle ``global_pose`` / ``neck_pose`` /
    ``jaw_pose`` / ``eye_pose`` in FLAME's frame (x left, y up, z forward) as seen from a y-up camera
    (DECA's convention: ``R_flame = F R_model F`` with ``F = diag(1, -1, -1)``), and the camera.
    """

    kind = "FlameTrack"

    @property
    def shape(self) -> np.ndarray:
        """`(S,)` identity coefficients beta."""
        return self.identity

    @property
    def global_pose(self) -> np.ndarray:
        """`(T, 3)` head rotation, FLAME frame -> y-up camera frame."""
        return self.rotation * _FLAME_FRAME

    def _joint(self, index: int) -> np.ndarray:
        return self.joint_rotations[:, index] * _FLAME_FRAME

    @property
    def neck_pose(self) -> np.ndarray:
        return self._joint(0)

    @property
    def jaw_pose(self) -> np.ndarray:
        return self._joint(1)

    @property
    def eye_pose(self) -> np.ndarray:
        """`(T, 6)` left then right eye rotations."""
        return np.concatenate([self._joint(2), self._joint(3)], axis=1)
