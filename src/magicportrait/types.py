"""The typed, frozen objects that cross stage boundaries, each saved as a plain ``.npz`` (arrays + a JSON ``meta``).

Tracking -> :class:`Track`; head fitting and alignment -> :class:`HeadTrack` / :class:`FlameTrack`; the portrait
prepared for generation -> :class:`SourceFace` (with its :class:`RenderAppearance`); rendering ->
:class:`GuidanceMaps`, whose map names are :data:`GUIDANCE_NAMES`. Each stage can run alone from these files.

No pickles: ``np.load(..., allow_pickle=False)`` reads every file written here. The objects are frozen (their
fields cannot be reassigned; use :func:`dataclasses.replace`); their arrays are not copied.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

SCHEMA_VERSION = 1
GUIDANCE_NAMES = ("depth", "normal", "render")
"""The guidance maps, in the order the official release lists its guidance encoders and folders."""
NUM_LANDMARKS = 478
"""MediaPipe's refined face mesh: 468 mesh points then 2 x 5 iris points."""


def save_npz(path: str | os.PathLike, kind: str, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``arrays`` and ``meta`` atomically (temp file + rename), so a crash never leaves half a file."""
    from magicportrait.io.atomic import atomic_path

    path = Path(path)
    meta = {"kind": kind, "schema_version": SCHEMA_VERSION, **meta}
    arrays = {name: value for name, value in arrays.items() if value is not None}
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
    if meta.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION:
        raise InputError(f"{path}: written by a newer magicportrait (format {meta['schema_version']}, this one reads "
                         f"{SCHEMA_VERSION}); upgrade magicportrait.")
    return arrays, meta


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.{name}": value for name, value in arrays.items() if value is not None}


def _unprefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    start = len(prefix) + 1
    return {name[start:]: value for name, value in arrays.items() if name.startswith(prefix + ".")}


@dataclass(frozen=True)
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
            object.__setattr__(self, "num_faces", self.detected.astype(np.int16))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))

    @property
    def num_frames(self) -> int:
        return int(self.landmarks.shape[0])

    def select(self, index) -> Track:
        """The frames picked by ``index`` (slice, int array or boolean mask)."""
        return Track(landmarks=self.landmarks[index], boxes=self.boxes[index], detected=self.detected[index],
                     num_faces=self.num_faces[index], fps=self.fps, image_size=self.image_size, source=self.source)

    @property
    def missing_frames(self) -> np.ndarray:
        """Indices of the frames whose landmarks were interpolated."""
        return np.flatnonzero(~self.detected)

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {"landmarks": self.landmarks, "boxes": self.boxes, "detected": self.detected,
                  "num_faces": self.num_faces}
        return arrays, {"fps": self.fps, "image_size": list(self.image_size), "source": self.source}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> Track:
        return cls(landmarks=arrays["landmarks"], boxes=arrays["boxes"], detected=arrays["detected"].astype(bool),
                   num_faces=arrays["num_faces"], fps=float(meta["fps"]), image_size=tuple(meta["image_size"]),
                   source=meta.get("source", ""))

    def save(self, path: str | os.PathLike) -> Path:
        return save_npz(path, "Track", *self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Track:
        return cls.from_arrays(*load_npz(path, "Track"))


@dataclass(frozen=True)
class HeadTrack:
    """Per-frame parameters of a head model fitted to a :class:`Track` (the same layout for every head model).

    With the default orthographic camera (like the official release) the posed vertices are
    ``scale * rotate(rotation, model_vertices(identity, expression, joint_rotations)) + translation``, in image
    space. With ``camera == "perspective"``, ``translation`` is the model origin in camera space (model units;
    x right, y down, z away from the camera), ``scale`` is 1, and points are projected with the focal length
    ``focal_px`` about the image centre (:func:`magicportrait.heads.base.project_to_image`).

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
        camera: "orthographic" (default, like the official release) or "perspective".
        focal_px: the perspective camera's focal length in pixels (None for the orthographic camera).
        extras: other JSON-serialisable facts (fit options, alignment modes, provenance).
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
    camera: str = "orthographic"
    focal_px: float | None = None
    extras: dict = field(default_factory=dict)

    kind = "HeadTrack"  # the file's kind; subclasses name theirs

    def __post_init__(self) -> None:
        from magicportrait.errors import InputError

        num_frames = self.rotation.shape[0]
        if self.joint_rotations is None:
            object.__setattr__(self, "joint_rotations", np.zeros((num_frames, 0, 3), np.float32))
        if self.residual is None:
            object.__setattr__(self, "residual", np.zeros(num_frames, np.float32))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        if self.camera not in CAMERAS:
            raise InputError(f"camera must be one of {', '.join(CAMERAS)}, got {self.camera!r}.")
        if self.camera == "perspective" and not (self.focal_px or 0) > 0:
            raise InputError("a perspective head track needs a positive focal_px.")

    @property
    def num_frames(self) -> int:
        return int(self.rotation.shape[0])

    def select(self, index) -> HeadTrack:
        """A track of the same class with the frames picked by ``index`` (slice, int array or boolean mask)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({name: values[name][index] for name in PER_FRAME_FIELDS})
        values["extras"] = dict(self.extras)
        return type(self)(**values)

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {name: getattr(self, name) for name in ("identity", *PER_FRAME_FIELDS)}
        meta = {"model": self.model, "image_size": list(self.image_size), "fps": self.fps, "camera": self.camera,
                "focal_px": self.focal_px, "extras": self.extras, "track_kind": self.kind}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> HeadTrack:
        """The track of the class the file names (a FlameTrack file read by ``HeadTrack`` is a FlameTrack)."""
        kind = meta.get("track_kind", meta.get("kind"))
        track_class = next((sub for sub in (cls, *_subclasses(cls)) if sub.kind == kind), cls)
        extras = dict(meta.get("extras", {}))
        camera = meta.get("camera", extras.pop("camera", "orthographic"))  # files of format 1 kept it in extras
        focal_px = meta.get("focal_px", extras.pop("focal_px", None))
        return track_class(model=meta["model"], image_size=tuple(meta["image_size"]), fps=float(meta["fps"]),
                           camera=camera, focal_px=None if focal_px is None else float(focal_px), extras=extras,
                           **{name: arrays[name] for name in ("identity", *PER_FRAME_FIELDS) if name in arrays})

    def save(self, path: str | os.PathLike) -> Path:
        return save_npz(path, self.kind, *self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> HeadTrack:
        """Read a file written by :meth:`save`; ``HeadTrack.load`` also reads a FlameTrack file (as a FlameTrack)."""
        kinds = tuple(sub.kind for sub in (cls, *_subclasses(cls)))
        return cls.from_arrays(*load_npz(path, kinds))


CAMERAS = ("orthographic", "perspective")
PER_FRAME_FIELDS = ("expression", "rotation", "scale", "translation", "joint_rotations", "residual")


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


_FLAME_FRAME = np.array([1.0, -1.0, -1.0], np.float32)  # model frame <-> FLAME frame: a rotation by pi about x


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class RenderAppearance:
    """How the 'render' map is coloured: 9x3 SH light and an albedo (per vertex, or a UV texture).

    Attributes:
        sh_light: `(9, 3)` float32 SH coefficients (:mod:`magicportrait.rendering.shading` convention).
        vertex_albedo: `(V, 3)` float32 in [0, 1], or None when a texture is used.
        texture: `(Ht, Wt, 3)` float32 RGB albedo, about [0, 1] (with ``uv`` and ``uv_faces``; a texture-space
            albedo is not clamped: the render clamps albedo x shading).
        uv: `(Nvt, 2)` texel pixel coordinates (u right, v down) of the unwelded vertices.
        uv_faces: `(F, 3)` faces indexing the unwelded vertices, in the order of the mesh's faces.
        vertex_map: `(Nvt,)` the mesh vertex of each unwelded vertex (render ``vertices[:, vertex_map]`` with
            ``uv_faces`` to draw the texture with a plain renderer directly).
        texture_coefficients: `(K,)` fitted texture-space coefficients (information only).
    """

    sh_light: np.ndarray
    vertex_albedo: np.ndarray | None = None
    texture: np.ndarray | None = None
    uv: np.ndarray | None = None
    uv_faces: np.ndarray | None = None
    vertex_map: np.ndarray | None = None
    texture_coefficients: np.ndarray | None = None

    _DTYPES = {"sh_light": np.float32, "vertex_albedo": np.float32, "texture": np.float32, "uv": np.float32,
               "uv_faces": np.int64, "vertex_map": np.int64, "texture_coefficients": np.float32}

    def __post_init__(self) -> None:
        from magicportrait.errors import InputError

        for name, dtype in self._DTYPES.items():
            if getattr(self, name) is not None:
                object.__setattr__(self, name, np.asarray(getattr(self, name), dtype))
        if self.sh_light.shape != (9, 3):
            raise InputError(f"sh_light must have shape (9, 3), got {self.sh_light.shape}.")
        if self.texture is not None:
            if self.uv is None or self.uv_faces is None:
                raise InputError("a texture appearance needs uv and uv_faces.")
            if self.texture.ndim != 3 or self.texture.shape[2] != 3:
                raise InputError(f"texture must have shape (Ht, Wt, 3), got {self.texture.shape}.")
            if self.uv.ndim != 2 or self.uv.shape[1] != 2 or self.uv_faces.ndim != 2 or self.uv_faces.shape[1] != 3:
                raise InputError(f"uv must be (Nvt, 2) and uv_faces (F, 3), got {self.uv.shape}, "
                                 f"{self.uv_faces.shape}.")
        elif self.vertex_albedo is not None:
            if self.vertex_albedo.ndim != 2 or self.vertex_albedo.shape[1] != 3:
                raise InputError(f"vertex_albedo must have shape (V, 3), got {self.vertex_albedo.shape}.")

    @property
    def textured(self) -> bool:
        return self.texture is not None

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        return {name: getattr(self, name) for name in self._DTYPES}, {"textured": self.textured}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict | None = None) -> RenderAppearance:
        from magicportrait.errors import InputError

        if "sh_light" not in arrays:
            raise InputError("a RenderAppearance without sh_light.")
        return cls(**{name: arrays.get(name) for name in cls._DTYPES})

    def save(self, path: str | os.PathLike) -> Path:
        return save_npz(path, "RenderAppearance", *self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> RenderAppearance:
        return cls.from_arrays(load_npz(path, "RenderAppearance")[0])


@dataclass(frozen=True)
class FlameCodes:
    """Per-frame FLAME codes from an image encoder (DECA, SMIRK) or another tracker, in DECA's conventions.

    Attributes:
        shape: `(T, S)` identity beta. expression: `(T, E)` psi.
        global_pose, jaw: `(T, 3)` axis-angle in FLAME's frame (x left, y up, z forward), the global one about
            FLAME's root joint.
        cam: `(T, 3)` orthographic camera (s, tx, ty): the encoder crop's NDC (x right, y up, [-1, 1] across
            ``crop_size`` pixels) of a FLAME point is ``s * (xy + t)``.
        crop_matrix: `(T, 3, 3)` image pixels -> crop pixels (the crop the codes were computed on).
        crop_size: side of that crop (224 for DECA and SMIRK).
        image_size: (height, width) of the image the crop matrix starts from.
        tex: `(T, K)` texture-space coefficients; light: `(T, 9, 3)` SH light (None if the encoder has none).
        eyelids: `(T, 2)` SMIRK's eyelid closures (None if absent).
        source: which encoder(s) made them, e.g. ``"deca+smirk"``.
    """

    shape: np.ndarray
    expression: np.ndarray
    global_pose: np.ndarray
    jaw: np.ndarray
    cam: np.ndarray
    crop_matrix: np.ndarray
    image_size: tuple[int, int]
    crop_size: int = 224
    tex: np.ndarray | None = None
    light: np.ndarray | None = None
    eyelids: np.ndarray | None = None
    source: str = ""

    _ARRAYS = ("shape", "expression", "global_pose", "jaw", "cam", "crop_matrix", "tex", "light", "eyelids")

    def __post_init__(self) -> None:
        from magicportrait.errors import InputError

        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        expected = {"global_pose": (3,), "jaw": (3,), "cam": (3,), "crop_matrix": (3, 3), "light": (9, 3),
                    "eyelids": (2,)}
        for name in self._ARRAYS:
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value, np.float64 if name == "crop_matrix" else np.float32)
            object.__setattr__(self, name, value)
            if len(value) != self.num_frames or (name in expected and value.shape[1:] != expected[name]) or (
                    name not in expected and value.ndim != 2):
                shape = (self.num_frames, *expected.get(name, ("n",)))
                raise InputError(f"FLAME codes: {name} must have shape {shape}, got {value.shape}.")

    @property
    def num_frames(self) -> int:
        return len(self.shape)

    def select(self, index) -> FlameCodes:
        picked = {name: None if getattr(self, name) is None else getattr(self, name)[index] for name in self._ARRAYS}
        return FlameCodes(**picked, image_size=self.image_size, crop_size=self.crop_size, source=self.source)

    def save(self, path: str | os.PathLike) -> Path:
        meta = {"image_size": list(self.image_size), "crop_size": self.crop_size, "source": self.source}
        return save_npz(path, "FlameCodes", {name: getattr(self, name) for name in self._ARRAYS}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FlameCodes:
        arrays, meta = load_npz(path, "FlameCodes")
        missing = [name for name in cls._ARRAYS[:6] if name not in arrays]
        if missing:
            from magicportrait.errors import InputError

            raise InputError(f"{path}: FLAME codes without {', '.join(missing)}; the file is damaged.")
        return cls(**{name: arrays.get(name) for name in cls._ARRAYS}, image_size=tuple(meta["image_size"]),
                   crop_size=int(meta["crop_size"]), source=meta.get("source", ""))


@dataclass(frozen=True)
class SourceFace:
    """The source portrait prepared for generation: its square face crop, the crop's matrix, and its track and
    fitted head in crop space (T=1), plus how the render map is coloured.

    Attributes:
        crop: `(size, size, 3)` uint8 RGB.
        crop_matrix: `(2, 3)` original image -> crop pixels (OpenCV convention).
        track: the portrait's :class:`Track` in crop space.
        head: its fitted :class:`HeadTrack` in crop space.
        appearance: the render map's albedo and light (FLAME); None: the crop itself is the texture.
        image_digest: SHA-256 of the portrait's pixels, so saved motion can be checked against its portrait.
    """

    crop: np.ndarray
    crop_matrix: np.ndarray
    track: Track
    head: HeadTrack
    appearance: RenderAppearance | None = None
    image_digest: str = ""

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

    def save(self, path: str | os.PathLike) -> Path:
        track, track_meta = self.track.to_arrays()
        head, head_meta = self.head.to_arrays()
        arrays = {"crop": self.crop, "crop_matrix": self.crop_matrix, **_prefixed(track, "track"),
                  **_prefixed(head, "head")}
        meta = {"track": track_meta, "head": head_meta, "image_digest": self.image_digest}
        if self.appearance is not None:
            arrays.update(_prefixed(self.appearance.to_arrays()[0], "appearance"))
        return save_npz(path, "SourceFace", arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SourceFace:
        arrays, meta = load_npz(path, "SourceFace")
        appearance = _unprefixed(arrays, "appearance")
        return cls(crop=arrays["crop"], crop_matrix=arrays["crop_matrix"],
                   track=Track.from_arrays(_unprefixed(arrays, "track"), meta["track"]),
                   head=HeadTrack.from_arrays(_unprefixed(arrays, "head"), meta["head"]),
                   appearance=RenderAppearance.from_arrays(appearance) if appearance else None,
                   image_digest=meta.get("image_digest", ""))


@dataclass(frozen=True)
class GuidanceMaps:
    """The three guidance maps of a batch of N frames (torch tensors on the renderer's device).

    Attributes:
        depth: `(N, H, W)` float in [0, 1]: 1 at the nearest vertex of the mesh, 0 at the farthest, 0 background.
        normal: `(N, H, W, 3)` float in [0, 1]: camera-space normal (x right, y up, z to the camera) clamped.
        render: `(N, H, W, 3)` float in [0, 1]: albedo times SH shading, RGB.
        mask: `(N, H, W)` bool: pixels covered by the mesh.
    """

    depth: torch.Tensor
    normal: torch.Tensor
    render: torch.Tensor
    mask: torch.Tensor

    def to_uint8(self) -> dict[str, np.ndarray]:
        """``{'depth', 'normal', 'render'}`` as `(N, H, W, 3)` uint8 RGB numpy arrays (depth replicated)."""
        depth = quantize_unit(self.depth).cpu().numpy()
        return {"depth": np.repeat(depth[..., None], 3, axis=-1), "normal": quantize_unit(self.normal).cpu().numpy(),
                "render": quantize_unit(self.render).cpu().numpy()}

    def __len__(self) -> int:
        return int(self.depth.shape[0])

    def save(self, path: str | os.PathLike) -> Path:
        """The maps as uint8 (as they are written to videos and PNGs) and the mask."""
        arrays = {**self.to_uint8(), "mask": self.mask.cpu().numpy()}
        return save_npz(path, "GuidanceMaps", arrays, {"names": list(GUIDANCE_NAMES)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> GuidanceMaps:
        import torch

        arrays, _ = load_npz(path, "GuidanceMaps")
        return cls(depth=torch.from_numpy(arrays["depth"][..., 0] / np.float32(255.0)),
                   normal=torch.from_numpy(arrays["normal"] / np.float32(255.0)),
                   render=torch.from_numpy(arrays["render"] / np.float32(255.0)),
                   mask=torch.from_numpy(arrays["mask"]))


def quantize_unit(values: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 (rounded, clamped): the one quantisation of every guidance map."""
    import torch

    return (values.detach().float().clamp(0, 1) * 255.0).round_().to(torch.uint8)
