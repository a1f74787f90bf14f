import numpy as np
import pytest

from magicportrait.geometry.rotations import axis_angle_to_matrix, euler_degrees_to_matrix, rotation_angle_degrees
from magicportrait.heads import MediaPipeHeadModel
from magicportrait.heads.mediapipe_topology import (
    INNER_LIP_LOOP,
    face_normals_z,
    mesh_triangles,
    strip_triangles,
    triangles_from_edges,
)
from magicportrait.types import HeadTrack, Track


def make_track(landmarks: np.ndarray, fps: float = 25.0) -> Track:
    count = len(landmarks)
    return Track(landmarks=landmarks.astype(np.float32), boxes=np.zeros((count, 3), np.float32),
                 detected=np.ones(count, bool), fps=fps, image_size=(512, 512))


def test_triangles_from_edges_drops_spurious_cliques():
    # A tetrahedron: all four 3-cliques are faces.
    tetra_edges = {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)}
    assert len(triangles_from_edges(tetra_edges)) == 4
    # A square pyramid without its base: four triangles around the apex 0.
    pyramid = {(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1)}
    assert len(triangles_from_edges(pyramid)) == 4


def test_mediapipe_mesh_is_a_disk_with_three_holes():
    triangles = mesh_triangles()
    assert triangles.shape == (852, 3)
    edges = {tuple(sorted(e)) for t in triangles for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    # Euler characteristic V - E + F = 1 - holes; eyes and mouth are the 3 holes.
    assert 468 - len(edges) + len(triangles) == -2
    # Consistent winding: every interior directed edge appears once in each direction.
    directed = [(t[i], t[(i + 1) % 3]) for t in triangles for i in range(3)]
    assert len(set(directed)) == len(directed)


def test_faces_point_toward_camera_on_the_canonical_face():
    model = MediaPipeHeadModel()
    facing = face_normals_z(model.canonical, model.faces) < 0
    assert facing.mean() > 0.97  # a few rim triangles fold back at the silhouette


def test_canonical_face_is_symmetric_and_in_centimetres():
    model = MediaPipeHeadModel()
    canonical, pairs = model.canonical, model.mirror_pairs
    np.testing.assert_allclose(np.linalg.norm(canonical[263] - canonical[33]), 9.0, rtol=1e-5)
    assert canonical[1, 2] < canonical[33, 2]  # the nose tip is nearer the camera than the eye corners
    mirrored = canonical[pairs] * [-1, 1, 1]
    assert np.abs(mirrored - canonical).mean() < 0.05


def test_strip_triangles_closes_a_loop_without_new_vertices():
    triangles = strip_triangles(INNER_LIP_LOOP)
    assert len(triangles) == len(INNER_LIP_LOOP) - 2
    assert set(triangles.ravel()) == set(INNER_LIP_LOOP)


def test_fit_recovers_pose_scale_translation_and_expression():
    model = MediaPipeHeadModel(neutral="first")
    rotations = euler_degrees_to_matrix(np.array([[0.0, 0.0, 0.0], [25.0, -10.0, 5.0], [-30.0, 8.0, -6.0]]))
    shapes = np.repeat(model.canonical[None], 3, axis=0)
    shapes[2, 14, 1] += 0.8  # lower inner lip moves down by 0.8 cm in the last frame
    landmarks = 40.0 * np.einsum("tij,tnj->tni", rotations, shapes) + [256.0, 240.0, 10.0]
    head = model.fit(make_track(landmarks))
    assert rotation_angle_degrees(axis_angle_to_matrix(head.rotation), rotations).max() < 0.2
    np.testing.assert_allclose(head.scale, 40.0, rtol=0.01)
    expression = head.expression.reshape(3, -1, 3)
    assert expression[2, 14, 1] == pytest.approx(0.8, abs=0.05)
    assert np.abs(expression[1]).max() < 0.05
    posed = model.posed_vertices(head)
    np.testing.assert_allclose(posed[..., :2], landmarks[..., :2], atol=1e-3)
    np.testing.assert_allclose(posed[..., 2], landmarks[..., 2], atol=0.05)  # depth comes from the fitted face


def test_head_track_save_load(tmp_path):
    model = MediaPipeHeadModel()
    landmarks = 30.0 * model.canonical[None] + 200.0
    head = model.fit(make_track(landmarks))
    path = head.save(tmp_path / "head.npz")
    loaded = HeadTrack.load(path)
    np.testing.assert_array_equal(loaded.identity, head.identity)
    np.testing.assert_array_equal(loaded.rotation, head.rotation)
    assert loaded.model == "mediapipe" and loaded.image_size == (512, 512)


def test_long_tracks_fit_in_chunks_like_short_ones():
    # More frames than one fitting chunk: the result must not depend on where the chunks fall.
    model = MediaPipeHeadModel(neutral="first")
    rng = np.random.default_rng(3)
    count = 600
    rotations = euler_degrees_to_matrix(rng.uniform(-20, 20, size=(count, 3)))
    landmarks = 35.0 * np.einsum("tij,nj->tni", rotations, model.canonical) + [256.0, 256.0, 0.0]
    landmarks += rng.normal(0, 0.5, landmarks.shape)
    whole = model.fit(make_track(landmarks))
    tail = model.fit(make_track(landmarks[500:]))
    np.testing.assert_allclose(whole.rotation[500:], tail.rotation, atol=1e-6)
    assert np.abs(whole.expression[0]).max() == 0.0  # relative to the first frame, even across chunks
    assert rotation_angle_degrees(axis_angle_to_matrix(whole.rotation), rotations).max() < 1.5
