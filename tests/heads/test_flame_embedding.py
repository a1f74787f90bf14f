"""MediaPipe -> FLAME landmark embedding (``magicportrait.heads.embedding``) and its committed data."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from magicportrait.heads.embedding import (
    load_flame_mediapipe_embedding,
    load_flame_mediapipe_embedding_meta,
    vertices_to_landmarks,
)
from shared_paths import PARTIAL_MODEL, PROJECT

ROOT = PROJECT
FLAME_NPZ = PARTIAL_MODEL
SCRIPT = ROOT / "scripts/make_flame_mediapipe_embedding.py"
NUM_FLAME_FACES = 9976
MIDLINE = [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 17, 18, 200, 199, 175, 152]
NOSE = [1, 4, 5, 195, 197, 6, 168, 2, 94, 19, 45, 275, 48, 278, 64, 294, 98, 327, 129, 358, 102, 331, 115, 344,
        220, 440, 237, 457, 44, 274, 125, 354, 141, 370, 242, 462, 79, 309]


# ------------------------------------------------------------------------------------------------ pure functions
def _tetrahedron():
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return vertices, faces


def test_vertices_to_landmarks_exact_numpy_and_torch():
    vertices, faces = _tetrahedron()
    batch = np.stack([vertices, 2.0 * vertices + np.array([1.0, -1.0, 0.5])])  # (2, 4, 3)
    face_indices = np.array([3, 0, 1, 3])
    bary = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    expected0 = np.array([[1.0, 0.0, 0.0], [0.5, 0.6, 0.0],
                          [0.5, 0.0, 0.0], [1 / 3, 2 / 3, 1.0]])
    expected = np.stack([expected0, 2.0 * expected0 + np.array([1.0, -1.0, 0.5])])

    out = vertices_to_landmarks(batch, faces, face_indices, bary)
    assert isinstance(out, np.ndarray) and out.shape == (2, 4, 3)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    np.testing.assert_allclose(vertices_to_landmarks(vertices, faces, face_indices, bary), expected0, atol=1e-12)

    verts_t = torch.tensor(batch, dtype=torch.float64, requires_grad=True)
    out_t = vertices_to_landmarks(verts_t, torch.from_numpy(faces), torch.from_numpy(face_indices),
                                  torch.from_numpy(bary))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64 and out_t.shape == (2, 4, 3)
    np.testing.assert_allclose(out_t.detach().numpy(), expected, atol=1e-12)
    out_t[0, 1, 1].backward()  # landmark 1 (face 0 = vertices 0, 2, 1): the gradients are its barycentrics
    np.testing.assert_allclose(verts_t.grad[0, [0, 2, 1], 1].numpy(), [0.2, 0.3, 0.5])
    assert float(verts_t.grad.abs().sum()) == pytest.approx(1.0)
    out_f = vertices_to_landmarks(torch.tensor(batch, dtype=torch.float32), faces, face_indices, bary)
    assert out_f.dtype == torch.float32


def test_vertices_to_landmarks_rejects_bad_shapes():
    vertices, faces = _tetrahedron()
    with pytest.raises(ValueError):
        vertices_to_landmarks(vertices[:, :2], faces, np.array([0]), np.array([[1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError):
        vertices_to_landmarks(vertices, faces, np.array([0, 1]), np.array([[1.0, 0.0, 0.0]]))


def test_committed_embedding_is_valid():
    face_indices, bary, spread = load_flame_mediapipe_embedding()
    assert face_indices.shape == (478,) and face_indices.dtype == np.int64
    assert bary.shape == (478, 3) and bary.dtype == np.float32
    assert spread.shape == (478,) and spread.dtype == np.float32
    assert face_indices.min() >= 0 and face_indices.max() < NUM_FLAME_FACES
    assert (bary >= 0).all()
    np.testing.assert_allclose(bary.sum(1), 1.0, atol=1e-5)
    assert np.isfinite(spread).all() and (spread >= 0).all()
    assert np.median(spread) < 2.5  # MediaPipe's view-to-view inconsistency, mm (1.4 when derived)
    meta = load_flame_mediapipe_embedding_meta()
    assert meta["num_faces"] == NUM_FLAME_FACES and meta["views_yaw_pitch_scale"]
    with np.load(ROOT / "src/magicportrait/heads/data/flame_mediapipe_embedding.npz", allow_pickle=False) as data:
        assert set(data.files) == {"face_indices", "barycentric", "view_spread_mm", "meta"}
        assert json.loads(str(data["meta"][()]))["date"]


# ------------------------------------------------------------------------------------- on the shared FLAME model
@pytest.fixture(scope="module")
def flame():
    if not FLAME_NPZ.is_file():
        pytest.skip(f"shared FLAME partial model not found at {FLAME_NPZ} (tests that need FLAME are skipped)")
    with np.load(FLAME_NPZ, allow_pickle=False) as data:
        return data["v_template"].astype(np.float64), data["f"].astype(np.int64)


@pytest.fixture(scope="module")
def landmarks_mm(flame):
    template, faces = flame
    face_indices, bary, _ = load_flame_mediapipe_embedding()
    return vertices_to_landmarks(template, faces, face_indices, bary) * 1e3  # (478, 3) FLAME frame, mm


def test_topology_matches(flame):
    import hashlib

    _, faces = flame
    digest = hashlib.sha256(np.ascontiguousarray(faces.astype(np.int32)).tobytes()).hexdigest()
    assert load_flame_mediapipe_embedding_meta()["faces_sha256"] == digest


def test_nose_tip(flame, landmarks_mm):
    template, _ = flame
    z = landmarks_mm[:, 2]
    # MediaPipe's tip is 1 with 4 just above it; in MediaPipe's own canonical face 4 is ~1 % further forward,
    # and so it is here (1.3 mm): the most forward nose point is one of them and 1 is within 2 mm of it.
    assert NOSE[int(np.argmax(z[NOSE]))] in (1, 4)
    assert z[1] > z[NOSE].max() - 2.0
    tip_vertex = template[np.argmax(template[:, 2])] * 1e3
    assert np.linalg.norm(landmarks_mm[1] - tip_vertex) < 10.0  # 4.8 mm when derived
    assert abs(landmarks_mm[1, 0]) < 2.0


def test_sides_midline_and_chin(landmarks_mm):
    x, y = landmarks_mm[:, 0], landmarks_mm[:, 1]
    # FLAME +x is the subject's left; MediaPipe 263 is the subject's left outer eye corner, 33 the right one
    assert x[263] > 30.0 and x[33] < -30.0
    assert abs(y[33] - y[263]) < 2.0
    assert abs(x[468] - x[33]) < abs(x[468] - x[263])  # iris 468-472 belongs to the right eye
    assert np.abs(x[MIDLINE]).max() < 2.0
    assert MIDLINE[int(np.argmin(y[MIDLINE]))] == 152 and int(np.argmin(y)) == 152  # chin is the lowest point
    assert y[10] > y[168] > y[1] > y[0] > y[17] > y[152]  # forehead, nose bridge, tip, lips, chin top to bottom


def test_mirror_symmetry(landmarks_mm):
    from magicportrait.heads.mediapipe_mesh import load_canonical_face

    _, mirror = load_canonical_face()
    mirrored = landmarks_mm[mirror] * np.array([-1.0, 1.0, 1.0])
    error = np.linalg.norm(landmarks_mm - mirrored, axis=1)
    # not symmetrised by construction: the template is near-symmetric and the views are +-yaw, so the pairs agree
    # to ~1 mm (median 1.05, max 5.5 mm on the face oval when derived)
    assert np.median(error) < 2.0
    assert np.percentile(error, 90) < 3.0
    assert error.max() < 8.0


def test_iris_on_eyeballs(flame, landmarks_mm):
    template, faces = flame
    face_indices, _, _ = load_flame_mediapipe_embedding()
    eyeball_start = 3931  # FLAME's eyeballs: vertices 3931-4476 (left eye) and 4477-5022 (right eye)
    assert (faces[face_indices[468:]] >= eyeball_start).all()
    assert (faces[face_indices[:468]] < eyeball_start).all()
    for centre, first, stop in ((468, 4477, 5023), (473, 3931, 4477)):  # 468: subject's right eye
        eye = template[first:stop] * 1e3
        middle = (eye.max(0) + eye.min(0)) / 2
        pole = middle + np.array([0.0, 0.0, np.linalg.norm(eye - middle, axis=1).mean()])
        assert np.linalg.norm(landmarks_mm[centre] - pole) < 2.0  # looks straight ahead (0.56 mm when derived)
        ring = landmarks_mm[centre + 1:centre + 5]
        radius = np.linalg.norm(ring - landmarks_mm[centre], axis=1)
        assert np.all((radius > 4.0) & (radius < 8.0))  # iris radius ~6 mm


def _load_script():
    spec = importlib.util.spec_from_file_location("make_flame_mediapipe_embedding", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_closed_loop_unseen_view(flame, landmarks_mm):
    """Render the template at a view not used for the derivation, track it, compare with the embedded points."""
    pytest.importorskip("mediapipe")
    from magicportrait.rendering import GuidanceRenderer
    from magicportrait.tracking import FaceTracker

    template, faces = flame
    script = _load_script()
    view = (15.0, 5.0, 1600.0)  # yaw, pitch (deg), pixels per metre: not in the derivation's grid
    assert view not in {tuple(v) for v in load_flame_mediapipe_embedding_meta()["views_yaw_pitch_scale"]}
    colours = script.vertex_colours(template, script.components(len(template), faces))
    renderer = GuidanceRenderer(faces, (512, 512), sh_light=script.sh_light())
    image = script.render_view(renderer, script.flame_to_image(template, *view), colours)
    with FaceTracker() as tracker:
        tracked = tracker.track_image(image).landmarks[0, :, :2]
    projected = script.flame_to_image(landmarks_mm * 1e-3, *view)[:, :2]
    error = np.linalg.norm(tracked - projected, axis=1)
    # measured when derived: mean 1.9 px, median 1.7 px, iris 0.5 px over the 478 points at 512x512 (face ~240 px
    # wide); that is MediaPipe's own view-to-view inconsistency (1.2-2.5 px mean on the derivation views)
    assert error.mean() < 3.0
    assert np.median(error) < 2.5
    assert error[468:].mean() < 1.5  # iris
