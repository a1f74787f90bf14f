"""CSIM: how well a generated video keeps the source's identity.

CSIM is the cosine similarity between the face-recognition embedding of the source portrait and that of each
generated frame (higher is better, 1 = same embedding). Two embedders are provided; any object with a ``name`` and
an ``embed(image, landmarks)`` method (:class:`FaceEmbedder`) can be plugged in instead.

- :class:`DlibFaceEmbedder` (default): dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``,
  128-D, 99.38% on LFW) with the weights and the 5-point shape predictor shipped in the ``face-recognition-models``
  package (CC0). Faces are aligned exactly as that model was trained: a face rectangle, dlib's 5-point shape
  predictor, ``dlib.get_face_chip(image, shape, size=150, padding=0.25)`` (dlib's defaults, the ones
  ``compute_face_descriptor`` uses), no jittering. The rectangle comes from our MediaPipe landmarks when given
  (placed where dlib's HOG frontal-face detector puts its box, see :func:`dlib_box_from_landmarks`), else from
  the HOG detector itself (largest face, image upsampled once as in dlib's examples). The network runs either in
  dlib (``backend="dlib"``: one face at a time on one core, ~80 ms a face; dlib-bin has no BLAS and holds the
  GIL) or, by default, as an exact torch port of it whose weights are read from the same ``.dat`` file
  (``backend="torch"``: batched, ~7 ms a face on one core; the descriptors equal dlib's to 3e-7).
  Note that dlib's descriptors share a large common component: two different people typically still score a
  cosine of 0.8-0.9 (dlib's own same-person rule, Euclidean distance < 0.6, is a cosine above ~0.91 here), so
  dlib CSIM values are not comparable with the ArcFace CSIM most papers report.
- :class:`ArcFaceOnnxEmbedder`: an ArcFace ONNX model you supply (insightface's ``w600k_r50.onnx``,
  ``glint360k_r100`` and the like), run with onnxruntime on 112x112 crops aligned to insightface's 5-point template.

Frames where no face is found give NaN, not an error; CSIM over a video is then the mean over the other frames.
A frame whose landmarks are None is left to the embedder's own detector (dlib's HOG detector; the ArcFace embedder
has none, so NaN).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from magicportrait.errors import CheckpointError, DependencyError, InputError, NoFaceError
from magicportrait.types import NUM_LANDMARKS

__all__ = ["ARCFACE_TEMPLATE", "ArcFaceOnnxEmbedder", "DlibFaceEmbedder", "DlibFaceResNet", "FaceEmbedder",
           "arcface_points", "csim", "dlib_box_from_landmarks", "embed_frames", "identity_similarity",
           "similarity_matrix"]

DLIB_INSTALL = "pip install dlib-bin face-recognition-models"
ONNXRUNTIME_INSTALL = "pip install onnxruntime"
FACE_MODELS_DISTRIBUTION = "face_recognition_models"
RECOGNITION_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150  # dlib's face-recognition ResNet input and get_face_chip's default size
CHIP_PADDING = 0.25  # get_face_chip's / compute_face_descriptor's default padding
HOG_UPSAMPLE = 1  # dlib's examples and face_recognition upsample once, so ~40 px faces are found
# dlib's frontal (HOG) detector box relative to the MediaPipe landmark box, measured on two real portraits (the
# bundled astronaut and matplotlib's Grace Hopper), mirrored, at 23 scales from 0.5 to 1.6 (92 detections): the
# box side is 1.03 x the landmark box width (median; the detector's scale pyramid quantises it by +-10%) and its
# centre lies 0.035 landmark-box heights below the landmark box centre (the mesh reaches higher up the forehead).
DLIB_BOX_SIDE_PER_WIDTH = 1.03
DLIB_BOX_SHIFT_DOWN = 0.035
# MediaPipe face-mesh indices (image left/right for an upright face seen from the front).
LEFT_EYE_CORNERS = (33, 133)
RIGHT_EYE_CORNERS = (362, 263)
LEFT_IRIS, RIGHT_IRIS = 468, 473
NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)
# insightface's ``arcface_dst``: eye centres, nose tip and mouth corners in the 112x112 crop (OpenCV pixel centres).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]])
ARCFACE_SIZE = 112


@runtime_checkable
class FaceEmbedder(Protocol):
    """A face-recognition embedder: ``embed`` returns a ``(D,)`` embedding, or None when there is no face.

    ``image`` is uint8 RGB ``(H, W, 3)``; ``landmarks`` the face's ``(478, 3)`` MediaPipe landmarks in image pixels
    (as :class:`magicportrait.types.Track` stores them) or None to let the embedder find the face itself. An
    embedder may also offer ``embed_batch(images, landmarks) -> list[np.ndarray | None]`` to batch many frames.
    """

    name: str

    def embed(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray | None: ...


# ------------------------------------------------------------------------------------------------ metric
def csim(source_embedding: np.ndarray, frame_embeddings: Sequence[np.ndarray | None] | np.ndarray) -> np.ndarray:
    """``(T,)`` float64 cosine similarity of the source embedding with each frame's (NaN where a frame is None/NaN)."""
    source = np.asarray(source_embedding, dtype=np.float64).ravel()
    if source.size == 0 or not np.all(np.isfinite(source)) or not np.any(source):
        raise InputError("CSIM needs a finite, non-zero source embedding (was a face found in the source image?).")
    similarities = np.full(len(frame_embeddings), np.nan)
    for index, embedding in enumerate(frame_embeddings):
        if embedding is None:
            continue
        vector = np.asarray(embedding, dtype=np.float64).ravel()
        if vector.shape != source.shape:
            raise InputError(f"Frame {index}: embedding of size {vector.size}, the source's has {source.size}; "
                             "use the same embedder for both.")
        norm = np.linalg.norm(vector)
        if np.all(np.isfinite(vector)) and norm > 0:
            similarities[index] = vector @ source / (norm * np.linalg.norm(source))
    return similarities


def identity_similarity(source_image: np.ndarray, frames: np.ndarray | Sequence[np.ndarray], embedder: FaceEmbedder,
                        *, source_landmarks: np.ndarray | None = None,
                        frame_landmarks: np.ndarray | Sequence[np.ndarray | None] | None = None) -> np.ndarray:
    """Per-frame CSIM ``(T,)`` of ``frames`` (uint8 RGB) against ``source_image``, NaN where a frame has no face.

    ``frame_landmarks``: None (the embedder finds each face itself), or one ``(478, 3)`` array or None per frame.

    Raises:
        NoFaceError: the source image has no face.
        InputError: bad images or landmarks, or a landmark count that does not match the frames.
    """
    source = _as_image(source_image, "source image")
    source_points = _as_landmarks(source_landmarks, "source landmarks")
    images, landmarks = _checked_frames(frames, frame_landmarks)  # fail on bad input before any network runs
    source_embedding = embedder.embed(source, source_points)
    if source_embedding is None:
        raise NoFaceError(f"CSIM: {embedder.name} found no face in the source image; pass its landmarks "
                          "(source_landmarks) or use a portrait with a clear frontal face.")
    return csim(source_embedding, _embed_checked(embedder, images, landmarks))


def embed_frames(embedder: FaceEmbedder, frames: np.ndarray | Sequence[np.ndarray],
                 frame_landmarks: np.ndarray | Sequence[np.ndarray | None] | None = None) -> list[np.ndarray | None]:
    """One embedding (or None) per frame, batched when the embedder has ``embed_batch``."""
    return _embed_checked(embedder, *_checked_frames(frames, frame_landmarks))


def _checked_frames(frames, frame_landmarks) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    images = [_as_image(frame, f"frame {index}") for index, frame in enumerate(frames)]
    if frame_landmarks is None:
        return images, [None] * len(images)
    if len(frame_landmarks) != len(images):
        raise InputError(f"Got {len(frame_landmarks)} landmark arrays for {len(images)} frames; pass one "
                         "(or None) per frame.")
    return images, [_as_landmarks(item, f"landmarks of frame {index}") for index, item in enumerate(frame_landmarks)]


def _embed_checked(embedder: FaceEmbedder, images: list[np.ndarray],
                   landmarks: list[np.ndarray | None]) -> list[np.ndarray | None]:
    batch = getattr(embedder, "embed_batch", None)
    if callable(batch):
        return list(batch(images, landmarks))
    return [embedder.embed(image, points) for image, points in zip(images, landmarks, strict=True)]


# ------------------------------------------------------------------------------------------------ dlib
def dlib_box_from_landmarks(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """The face box ``(left, top, right, bottom)`` (inclusive pixels, as ``dlib.rectangle``) that dlib's HOG
    frontal-face detector would give for this face, from its MediaPipe landmarks ``(N, 2 or 3)``.

    dlib's shape predictors are trained on that detector's boxes, so they are most accurate on boxes placed like
    them. The landmark box is measured in the face's own upright frame (rotated by the roll of the eye line), so
    a tilted head gets the box of the same face upright; see ``DLIB_BOX_*`` for the calibration.
    """
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    eye_line = points[list(RIGHT_EYE_CORNERS)].mean(0) - points[list(LEFT_EYE_CORNERS)].mean(0)
    roll = np.arctan2(eye_line[1], eye_line[0])
    roll = (roll + np.pi / 2) % np.pi - np.pi / 2  # the eye line's direction does not matter
    cos, sin = np.cos(roll), np.sin(roll)
    to_upright = np.array([[cos, sin], [-sin, cos]])  # rotates by -roll
    upright = points @ to_upright.T
    low, high = upright.min(0), upright.max(0)
    width, height = high - low
    center = to_upright.T @ np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2 + DLIB_BOX_SHIFT_DOWN * height])
    side = max(1, round(DLIB_BOX_SIDE_PER_WIDTH * width))
    left, top = round(center[0] - side / 2), round(center[1] - side / 2)  # pixel j covers [j, j + 1)
    return left, top, left + side - 1, top + side - 1


def _import_dlib():
    try:
        import dlib
    except ImportError as exc:
        raise DependencyError(f"CSIM with dlib's face-recognition ResNet needs dlib. Install it with: "
                              f"{DLIB_INSTALL}") from exc
    return dlib


def face_models_file(name: str) -> Path:
    """Path of a model file shipped in the installed ``face-recognition-models`` package (nothing is downloaded).

    Found through the package's metadata, not by importing it: its ``__init__`` needs ``pkg_resources``, which
    recent setuptools no longer has.
    """
    from magicportrait.evaluation.package_files import installed_file

    path = installed_file(FACE_MODELS_DISTRIBUTION, "face_recognition_models", f"models/{name}")
    if path is None:
        raise DependencyError(f"CSIM needs {name} from the face-recognition-models package (not found). Install it "
                              f"with: {DLIB_INSTALL}")
    return path


class DlibFaceEmbedder:
    """dlib's face-recognition ResNet (128-D), on faces aligned as dlib aligns them (see the module docstring).

    Args:
        recognition_model: ``dlib_face_recognition_resnet_model_v1.dat``.
        shape_predictor: ``shape_predictor_5_face_landmarks.dat`` (the alignment the model was trained with).
        backend: ``"torch"`` (default: our port, batched, fast) or ``"dlib"`` (dlib's own network, the reference).
        device: torch device for the torch backend.
        batch_size: faces per network call (torch backend).
    """

    name = "dlib-resnet-v1"

    def __init__(self, recognition_model: str | Path, shape_predictor: str | Path, *,
                 backend: Literal["torch", "dlib"] = "torch", device: str | torch.device = "cpu",
                 batch_size: int = 32) -> None:
        if backend not in ("torch", "dlib"):
            raise InputError(f"Unknown dlib face-embedder backend {backend!r}: use 'torch' or 'dlib'.")
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}.")
        self._dlib = _import_dlib()
        self.backend = backend
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._shape_predictor = self._dlib.shape_predictor(str(_existing(shape_predictor, "shape predictor")))
        recognition_model = _existing(recognition_model, "face-recognition model")
        if backend == "torch":
            self._network = DlibFaceResNet.from_dat(recognition_model).to(self.device)
        else:
            self._network = self._dlib.face_recognition_model_v1(str(recognition_model))
        self._detector = None

    @classmethod
    def from_package(cls, **kwargs) -> DlibFaceEmbedder:
        """Load both models from the installed ``face-recognition-models`` package (``kwargs`` as in ``__init__``)."""
        return cls(face_models_file(RECOGNITION_MODEL_FILE), face_models_file(SHAPE_PREDICTOR_FILE), **kwargs)

    def detect(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
        """The largest face box ``(left, top, right, bottom)`` of dlib's HOG frontal-face detector, or None."""
        if self._detector is None:
            self._detector = self._dlib.get_frontal_face_detector()
        faces = self._detector(np.ascontiguousarray(image), HOG_UPSAMPLE)
        if len(faces) == 0:
            return None
        face = max(faces, key=lambda rect: rect.area())
        return face.left(), face.top(), face.right(), face.bottom()

    def shape(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray | None:
        """dlib's 5 points ``(5, 2)`` (eye corners, base of the nose; dlib pixel indices), or None without a face."""
        detection = self.full_object_detection(image, landmarks)
        if detection is None:
            return None
        return np.array([[detection.part(i).x, detection.part(i).y] for i in range(detection.num_parts)], float)

    def face_chip(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray | None:
        """The aligned ``(150, 150, 3)`` uint8 RGB face the network sees, or None when there is no face."""
        image = np.ascontiguousarray(image)
        detection = self.full_object_detection(image, landmarks)
        if detection is None:
            return None
        return self._dlib.get_face_chip(image, detection, size=CHIP_SIZE, padding=CHIP_PADDING)

    def embed(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray | None:
        """The 128-D descriptor (float32, not unit length: dlib compares them by Euclidean distance) or None."""
        return self.embed_batch([image], [landmarks])[0]

    def embed_batch(self, images: Sequence[np.ndarray],
                    landmarks: Sequence[np.ndarray | None]) -> list[np.ndarray | None]:
        """Descriptors of many images at once (None where there is no face)."""
        chips = [self.face_chip(image, points) for image, points in zip(images, landmarks, strict=True)]
        found = [index for index, chip in enumerate(chips) if chip is not None]
        descriptors = self.describe_chips([chips[index] for index in found])
        embeddings: list[np.ndarray | None] = [None] * len(chips)
        for index, descriptor in zip(found, descriptors, strict=True):
            embeddings[index] = descriptor
        return embeddings

    def describe_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, 128)`` float32 descriptors of aligned 150x150 RGB face chips."""
        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        if self.backend == "dlib":
            return np.array([list(self._network.compute_face_descriptor(chip)) for chip in chips], np.float32)
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(chips), self.batch_size):
                batch = torch.from_numpy(np.stack(chips[start:start + self.batch_size])).to(self.device)
                outputs.append(self._network(batch).float().cpu().numpy())
        return np.concatenate(outputs)

    def full_object_detection(self, image: np.ndarray, landmarks: np.ndarray | None = None):
        """dlib's 5-point ``full_object_detection`` of the face (for dlib's own APIs), or None without a face."""
        image = np.ascontiguousarray(image)
        box = self.detect(image) if landmarks is None else dlib_box_from_landmarks(landmarks)
        if box is None:
            return None
        return self._shape_predictor(image, self._dlib.rectangle(*box))


# ------------------------------------------------------------------------------------------------ dlib ResNet
class _DlibReader:
    """Reads dlib's serialization format: sized integers, strings, dlib floats and (version 2) float32 tensors."""

    def __init__(self, data: bytes, position: int = 0) -> None:
        self.data, self.position = data, position

    def integer(self) -> int:
        control = self.data[self.position]
        size = control & 0x0F
        value = int.from_bytes(self.data[self.position + 1:self.position + 1 + size], "little")
        self.position += 1 + size
        return -value if control & 0x80 else value

    def string(self) -> str:
        size = self.integer()
        text = self.data[self.position:self.position + size].decode("latin-1")
        self.position += size
        return text

    def real(self) -> float:
        mantissa = self.integer()
        return float(mantissa) * 2.0 ** self.integer()

    def tensor(self) -> np.ndarray:
        if self.integer() != 2:
            raise CheckpointError("Unsupported dlib tensor version (expected 2).")
        shape = [self.integer() for _ in range(4)]
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, "<f4", count, self.position)
        self.position += 4 * count
        return values.reshape(shape).astype(np.float32)


@dataclass
class _DlibLayer:
    kind: str  # input, con, affine, relu, max_pool, avg_pool, add_prev, fc, loss
    fields: dict


_LAYER_NAMES = {"input_rgb_image_sized": "input", "con_4": "con", "affine_": "affine", "relu_": "relu",
                "max_pool_2": "max_pool", "avg_pool_2": "avg_pool", "add_prev_": "add_prev", "fc_2": "fc",
                "loss_metric_2": "loss", "bn_con2": "bn"}
_LAYER_PATTERN = re.compile(b"|".join(re.escape(bytes([1, len(name)]) + name.encode()) for name in _LAYER_NAMES))


def _read_layer(reader: _DlibReader, kind: str) -> dict:
    if kind == "input":
        mean = [reader.real() for _ in range(3)]
        return {"mean": mean, "size": (reader.integer(), reader.integer())}
    if kind == "con":
        params = reader.tensor().ravel()
        filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(7))
        weights = params[:-filters].reshape(filters, -1, rows, cols)
        return {"weight": weights, "bias": params[-filters:], "stride": (stride_y, stride_x),
                "padding": (pad_y, pad_x)}
    if kind == "affine":
        params = reader.tensor().ravel()
        return {"gamma": params[:params.size // 2], "beta": params[params.size // 2:]}
    if kind in ("max_pool", "avg_pool"):
        rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(6))
        return {"window": (rows, cols), "stride": (stride_y, stride_x), "padding": (pad_y, pad_x)}
    if kind == "fc":
        outputs, inputs = reader.integer(), reader.integer()
        params = reader.tensor().ravel()
        if params.size != inputs * outputs:
            raise CheckpointError("dlib face-recognition model: expected an fc layer without bias.")
        return {"weight": params.reshape(inputs, outputs)}
    if kind == "bn":
        raise CheckpointError("dlib face-recognition model: batch-norm (training) layers are not supported; use "
                              "the released model, whose layers are affine.")
    return {}


def read_dlib_network(path: str | Path) -> list[_DlibLayer]:
    """The layers of a serialized dlib network, from the input up, with their parameters (float32 arrays).

    dlib writes each layer's name then its fields; parameters are float32 tensors. Name matches that fall inside
    an earlier layer's tensor data are skipped (the reader always knows where each layer's data ends).
    """
    data = Path(path).read_bytes()
    layers, end = [], 0
    for match in _LAYER_PATTERN.finditer(data):
        if match.start() < end:
            continue
        kind = _LAYER_NAMES[match.group()[2:].decode()]
        reader = _DlibReader(data, match.end())
        layers.append(_DlibLayer(kind, _read_layer(reader, kind)))
        end = reader.position
    return layers


class _DlibResidual(nn.Module):
    """dlib's ``ares`` / ``ares_down`` block: relu(add_prev(conv-affine-relu-conv-affine, shortcut)).

    The down-sampling shortcut is a 2x2 average pool; dlib's ``add_prev`` adds tensors of different sizes by
    zero-padding the smaller one at the end (more channels, and an extra row/column where the strided convolution
    gives a smaller map than the pool).
    """

    def __init__(self, first: nn.Conv2d, second: nn.Conv2d, shortcut: nn.Module) -> None:
        super().__init__()
        self.first, self.second, self.shortcut = first, second, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.second(self.first(x).relu_())
        return _add_zero_padded(residual, self.shortcut(x)).relu_()


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.shape == b.shape:
        return a.add_(b)
    size = [max(p, q) for p, q in zip(a.shape[1:], b.shape[1:], strict=True)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, size[2] - t.shape[3], 0, size[1] - t.shape[2], 0, size[0] - t.shape[1]))

    return pad(a) + pad(b)


class DlibFaceResNet(nn.Module):
    """A torch port of dlib's face-recognition ResNet (``dnn_face_recognition_ex.cpp``'s ``anet_type``).

    Input: ``(N, 150, 150, 3)`` uint8 RGB face chips (as ``dlib.get_face_chip`` makes them); each channel is
    centred on dlib's input mean and divided by 256, as ``input_rgb_image_sized`` does. Then a 7x7/2 convolution,
    a 3x3/2 max pool, 14 residual blocks (32, 64, 128, 256, 256 channels) and a global average pool feed a 128-D
    linear layer without bias: the descriptor, not normalised. Each affine (frozen batch-norm) layer is folded
    into the convolution before it; everything else (strides, paddings, pools) is read from the ``.dat`` file.
    """

    def __init__(self, stem: nn.Conv2d, stem_pool: nn.MaxPool2d, blocks: list[_DlibResidual], fc: nn.Linear,
                 mean: Sequence[float]) -> None:
        super().__init__()
        self.stem, self.stem_pool, self.blocks, self.fc = stem, stem_pool, nn.Sequential(*blocks), fc
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_dat(cls, path: str | Path) -> DlibFaceResNet:
        """Build the network from ``dlib_face_recognition_resnet_model_v1.dat``."""
        try:
            layers = [layer for layer in read_dlib_network(path) if layer.kind not in ("relu", "loss")]
            return cls._from_layers(layers)
        except (CheckpointError, IndexError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: not dlib's face-recognition ResNet ({exc}).") from exc

    @classmethod
    def _from_layers(cls, layers: list[_DlibLayer]) -> DlibFaceResNet:
        kinds = "".join(_KIND_CODES[layer.kind] for layer in layers)
        # input, stem conv+affine, max pool, residual blocks (avg pool on the down-sampling ones), head.
        if not re.fullmatch(r"ICAM(CACA(P)?D)+PF", kinds):
            raise CheckpointError(f"unexpected dlib layer sequence {kinds!r}")
        stem = _folded_conv(layers[1], layers[2])
        stem_pool = nn.MaxPool2d(layers[3].fields["window"], layers[3].fields["stride"], layers[3].fields["padding"])
        blocks, index = [], 4
        while layers[index].kind == "con":
            first, second = _folded_conv(*layers[index:index + 2]), _folded_conv(*layers[index + 2:index + 4])
            index += 4
            shortcut: nn.Module = nn.Identity()
            if layers[index].kind == "avg_pool":
                fields = layers[index].fields
                shortcut = nn.AvgPool2d(fields["window"], fields["stride"], fields["padding"],
                                        count_include_pad=False)
                index += 1
            blocks.append(_DlibResidual(first, second, shortcut))
            index += 1  # add_prev
        if layers[index].fields["window"] != (0, 0):
            raise CheckpointError("expected a global average pool before the descriptor layer")
        weight = layers[index + 1].fields["weight"]
        fc = nn.Linear(weight.shape[0], weight.shape[1], bias=False)
        fc.weight.data = torch.from_numpy(np.ascontiguousarray(weight.T))
        return cls(stem, stem_pool, blocks, fc, layers[0].fields["mean"])

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """``(N, 150, 150, 3)`` uint8 RGB chips -> ``(N, 128)`` descriptors."""
        x = (chips.permute(0, 3, 1, 2).float() - self.mean) / 256.0
        x = self.stem_pool(self.stem(x).relu_())
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


_KIND_CODES = {"input": "I", "con": "C", "affine": "A", "max_pool": "M", "avg_pool": "P", "add_prev": "D",
               "fc": "F"}


def _folded_conv(con: _DlibLayer, affine: _DlibLayer) -> nn.Conv2d:
    """A convolution with the affine layer after it folded in: (W x + b) g + beta = (g W) x + (g b + beta)."""
    if con.kind != "con" or affine.kind != "affine":
        raise CheckpointError(f"expected a convolution then an affine layer, got {con.kind}, {affine.kind}")
    weight, gamma = con.fields["weight"], affine.fields["gamma"]
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:], stride=con.fields["stride"],
                     padding=con.fields["padding"])
    conv.weight.data = torch.from_numpy(weight * gamma[:, None, None, None])
    conv.bias.data = torch.from_numpy(con.fields["bias"] * gamma + affine.fields["beta"])
    return conv


# ------------------------------------------------------------------------------------------------ ArcFace
def arcface_points(landmarks: np.ndarray) -> np.ndarray:
    """The 5 ArcFace alignment points ``(5, 2)`` from MediaPipe landmarks, in image space (pixel j = [j, j+1)).

    Order as insightface's detectors give them: image-left eye, image-right eye, nose tip, image-left and
    image-right mouth corner. An eye centre is the mean of the iris centre and the eye-corner midpoint: the pupil
    for a straight gaze (what the detectors were trained on), half as sensitive to where the eyes look.
    """
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    if len(points) < NUM_LANDMARKS:
        raise InputError(f"ArcFace alignment needs the refined MediaPipe mesh ({NUM_LANDMARKS} points with the "
                         f"irises), got {len(points)} points.")
    eyes = [(points[iris] + points[list(corners)].mean(0)) / 2
            for iris, corners in ((LEFT_IRIS, LEFT_EYE_CORNERS), (RIGHT_IRIS, RIGHT_EYE_CORNERS))]
    return np.stack([*eyes, points[NOSE_TIP], points[MOUTH_CORNERS[0]], points[MOUTH_CORNERS[1]]])


def similarity_matrix(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, translation; Umeyama 1991) mapping ``source`` points
    ``(N, 2)`` onto ``target``, as a ``(2, 3)`` matrix (the estimate insightface aligns faces with)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centered, target_centered = source - source_mean, target - target_mean
    u, singular_values, vt = np.linalg.svd(target_centered.T @ source_centered / len(source))
    correction = np.array([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ np.diag(correction) @ vt
    scale = (singular_values * correction).sum() / max((source_centered**2).sum() / len(source), 1e-12)
    translation = target_mean - scale * rotation @ source_mean
    return np.column_stack([scale * rotation, translation])


def arcface_crop(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The ``(112, 112, 3)`` crop whose 5 points best match :data:`ARCFACE_TEMPLATE` (bilinear, black outside)."""
    points = arcface_points(landmarks) - 0.5  # image space -> OpenCV pixel centres, the template's convention
    matrix = similarity_matrix(points, ARCFACE_TEMPLATE)
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (ARCFACE_SIZE, ARCFACE_SIZE),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class ArcFaceOnnxEmbedder:
    """An ArcFace ONNX model you supply, on 112x112 faces aligned to insightface's 5-point template.

    insightface's own recognition models (``w600k_r50.onnx``, ``glint360k_r100``...) take ``(N, 3, 112, 112)``
    float32 RGB images scaled as ``(pixel - 127.5) / 127.5``: the defaults here. For a model trained on BGR pass
    ``channel_order="bgr"``; for the old mxnet-converted models that normalise inside the graph (their first nodes
    are Sub/Mul) pass ``mean=0, std=1``. The 5 points come from the MediaPipe landmarks (:func:`arcface_points`),
    so ``embed`` needs them: without landmarks it returns None (this embedder has no face detector).
    The embedding is the model's first output, not normalised (CSIM is a cosine anyway).
    """

    def __init__(self, path: str | Path, *, channel_order: Literal["rgb", "bgr"] = "rgb", mean: float = 127.5,
                 std: float = 127.5, providers: Sequence[str] | None = None, batch_size: int = 32) -> None:
        if channel_order not in ("rgb", "bgr"):
            raise InputError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}.")
        if not std > 0:
            raise InputError(f"std must be positive, got {std}.")
        ort = _import_onnxruntime()
        path = _existing(path, "ArcFace ONNX model")
        try:
            self._session = ort.InferenceSession(str(path), providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise InputError(f"{path}: onnxruntime cannot load this model ({exc}).") from exc
        model_input = self._session.get_inputs()[0]
        expected = (None, 3, ARCFACE_SIZE, ARCFACE_SIZE)
        if len(model_input.shape) != 4 or any(isinstance(size, int) and want is not None and size != want
                                              for size, want in zip(model_input.shape, expected, strict=True)):
            raise InputError(f"{path}: expected an ArcFace model with input (N, 3, 112, 112), got "
                             f"{model_input.shape}.")
        self.name = f"arcface-onnx:{path.name}"
        self.channel_order, self.mean, self.std = channel_order, float(mean), float(std)
        self._input_name = model_input.name
        self._output_name = self._session.get_outputs()[0].name
        fixed_batch = model_input.shape[0] if isinstance(model_input.shape[0], int) else None
        self._fixed_batch = fixed_batch  # a model exported with a fixed batch size gets exactly that many
        self.batch_size = fixed_batch or max(1, int(batch_size))

    def embed(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray | None:
        return self.embed_batch([image], [landmarks])[0]

    def embed_batch(self, images: Sequence[np.ndarray],
                    landmarks: Sequence[np.ndarray | None]) -> list[np.ndarray | None]:
        """Embeddings of many images (None where no landmarks were given)."""
        found = [index for index, points in enumerate(landmarks) if points is not None]
        crops = [arcface_crop(images[index], landmarks[index]) for index in found]
        embeddings: list[np.ndarray | None] = [None] * len(images)
        for start in range(0, len(crops), self.batch_size):
            outputs = self.describe_crops(crops[start:start + self.batch_size])
            for index, output in zip(found[start:start + self.batch_size], outputs, strict=True):
                embeddings[index] = output
        return embeddings

    def describe_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, D)`` embeddings of aligned 112x112 RGB uint8 crops."""
        blob = np.stack(crops).astype(np.float32)
        if self.channel_order == "bgr":
            blob = blob[..., ::-1]
        blob = np.ascontiguousarray(((blob - self.mean) / self.std).transpose(0, 3, 1, 2), dtype=np.float32)
        if self._fixed_batch and len(blob) < self._fixed_batch:
            blob = np.concatenate([blob, np.zeros((self._fixed_batch - len(blob), *blob.shape[1:]), np.float32)])
        output = self._session.run([self._output_name], {self._input_name: blob})[0]
        return np.asarray(output, np.float32).reshape(len(blob), -1)[:len(crops)]


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise DependencyError(f"CSIM with an ArcFace ONNX model needs onnxruntime. Install it with: "
                              f"{ONNXRUNTIME_INSTALL}") from exc
    return onnxruntime


# ------------------------------------------------------------------------------------------------ checks
def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}.")
    return path


def _as_image(image: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise InputError(f"The {what} must be a uint8 RGB image (H, W, 3), got {array.dtype} {array.shape}.")
    return array


def _as_landmarks(landmarks: np.ndarray | None, what: str) -> np.ndarray | None:
    if landmarks is None:
        return None
    array = np.asarray(landmarks, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != NUM_LANDMARKS or array.shape[1] not in (2, 3):
        raise InputError(f"The {what} must be MediaPipe's ({NUM_LANDMARKS}, 3) face mesh, got {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise InputError(f"The {what} contain NaN or infinite values.")
    return array
