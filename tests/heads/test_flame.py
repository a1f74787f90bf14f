"""FLAME loading (safe unpickling of FLAME-format files) and the FLAME forward pass (LBS with pose correctives)."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse
from scipy.spatial.transform import Rotation

from magicportrait.errors import InputError
from magicportrait.heads.flame import FLAME_TO_IMAGE, FlameModel, flame_to_model_frame
from magicportrait.heads.flame_loader import load_flame, restricted_unpickle
from magicportrait.heads.lbs import (
    batch_rigid_transform,
    batch_rodrigues,
    blend_shapes,
    linear_blend_skinning,
    matrix_to_rotation_6d,
    pose_feature,
    rotation_6d_to_matrix,
    vertices_to_joints,
)
from shared_paths import PARTIAL_MODEL

NUM_FAKE_VERTICES = 10
FLAME_KINTREE = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------------
# Synthetic FLAME-format files
# ----------------------------------------------------------------------------------------------------------------


class FakeCh:
    """Pickles like chumpy's ``Ch``: the global ``chumpy.ch.Ch`` and a ``__dict__`` state with the array in ``x``."""

    def __init__(self, x):
        self.x = x
        self._cache = {"r": None}
        self.label = "fake"


FakeCh.__module__ = "chumpy.ch"
FakeCh.__name__ = "Ch"
FakeCh.__qualname__ = "Ch"


def fake_flame_arrays(num_columns: int, seed: int = 0) -> dict:
    """A tiny 10-vertex, 5-joint FLAME-like model; float64 values that are exact in float32."""
    rng = np.random.default_rng(seed)
    v = NUM_FAKE_VERTICES

    def f32(*shape, scale=1.0):
        return (rng.normal(size=shape) * scale).astype(np.float32).astype(np.float64)

    regressor = rng.uniform(size=(5, v)) * (rng.uniform(size=(5, v)) < 0.5)
    regressor[:, 0] += 0.1
    regressor = (regressor / regressor.sum(1, keepdims=True)).astype(np.float32).astype(np.float64)
    weights = rng.uniform(size=(v, 5))
    weights = (weights / weights.sum(1, keepdims=True)).astype(np.float32).astype(np.float64)
    return {
        "v_template": f32(v, 3, scale=0.1),
        "shapedirs": f32(v, 3, num_columns, scale=1e-3),
        "posedirs": f32(v, 3, 36, scale=1e-3),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": FLAME_KINTREE.copy(),
        "f": rng.integers(0, v, size=(12, 3)).astype(np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_fake_pickle(path: Path, arrays: dict, sparse_chumpy: bool, monkeypatch, protocol: int = 2) -> None:
    """Write ``arrays`` as a pickle, optionally with a csc J_regressor and chumpy-wrapped arrays."""
    content = dict(arrays)
    if sparse_chumpy:
        content["J_regressor"] = sparse.csc_matrix(arrays["J_regressor"])
        for key in ("shapedirs", "posedirs", "v_template"):
            content[key] = FakeCh(arrays[key])
        with monkeypatch.context() as patch:  # chumpy.ch.Ch must be importable while pickling only
            chumpy, chumpy_ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
            chumpy_ch.Ch = FakeCh
            chumpy.ch = chumpy_ch
            patch.setitem(sys.modules, "chumpy", chumpy)
            patch.setitem(sys.modules, "chumpy.ch", chumpy_ch)
            data = pickle.dumps(content, protocol=protocol)
        assert b"chumpy.ch" in data and "chumpy" not in sys.modules
    else:
        data = pickle.dumps(content, protocol=protocol)
    path.write_bytes(data)


@pytest.mark.parametrize(("sparse_chumpy", "num_columns", "split", "variant"), [
    (False, 400, (300, 100), "flame2023"),
    (True, 400, (300, 100), "flame2020"),
    (True, 60, (60, 0), "flame_partial"),
    (False, 60, (60, 0), "flame_partial"),
])
def test_loader_recovers_synthetic_pickles(tmp_path, monkeypatch, sparse_chumpy, num_columns, split, variant):
    arrays = fake_flame_arrays(num_columns)
    path = tmp_path / "model.pkl"
    write_fake_pickle(path, arrays, sparse_chumpy, monkeypatch)
    assets = load_flame(path)
    v = NUM_FAKE_VERTICES
    assert (assets.num_shape, assets.num_expression) == split
    assert (assets.num_shape_available, assets.num_expression_available) == split
    assert assets.variant == variant
    np.testing.assert_array_equal(assets.v_template, arrays["v_template"])
    np.testing.assert_array_equal(assets.shape_dirs, arrays["shapedirs"][:, :, :split[0]])
    np.testing.assert_array_equal(assets.expression_dirs, arrays["shapedirs"][:, :, split[0]:])
    np.testing.assert_array_equal(assets.shapedirs, arrays["shapedirs"])
    np.testing.assert_array_equal(assets.posedirs, arrays["posedirs"].reshape(v * 3, 36).T)
    np.testing.assert_array_equal(assets.J_regressor, arrays["J_regressor"])
    np.testing.assert_array_equal(assets.lbs_weights, arrays["weights"])
    np.testing.assert_array_equal(assets.faces, arrays["f"].astype(np.int64))
    np.testing.assert_array_equal(assets.parents, [-1, 0, 1, 1, 1])
    assert assets.v_template.dtype == np.float32 and assets.posedirs.dtype == np.float32
    assert assets.faces.dtype == np.int64 and assets.parents.dtype == np.int64
    assert (assets.num_vertices, assets.num_joints) == (v, 5)


@pytest.mark.parametrize("protocol", [0, 1, 4, 5])
def test_loader_other_pickle_protocols(tmp_path, monkeypatch, protocol):
    arrays = fake_flame_arrays(400)
    path = tmp_path / "model.pkl"
    write_fake_pickle(path, arrays, True, monkeypatch, protocol=protocol)
    assets = load_flame(path)
    assert assets.variant == "flame2020"
    np.testing.assert_array_equal(assets.shapedirs, arrays["shapedirs"])
    np.testing.assert_array_equal(assets.J_regressor, arrays["J_regressor"])


def test_loader_component_selection_and_override(tmp_path, monkeypatch):
    arrays = fake_flame_arrays(400)
    path = tmp_path / "model.pkl"
    write_fake_pickle(path, arrays, True, monkeypatch)
    assets = load_flame(path, num_shape=20, num_expression=7)
    np.testing.assert_array_equal(assets.shape_dirs, arrays["shapedirs"][:, :, :20])
    np.testing.assert_array_equal(assets.expression_dirs, arrays["shapedirs"][:, :, 300:307])
    override = load_flame(path, num_shape_total=350, num_expression=50)
    assert (override.num_shape, override.num_expression) == (350, 50)
    np.testing.assert_array_equal(override.expression_dirs, arrays["shapedirs"][:, :, 350:])
    with pytest.raises(InputError, match="301 shape components"):
        load_flame(path, num_shape=301)
    with pytest.raises(InputError, match="101 expression components"):
        load_flame(path, num_expression=101)
    with pytest.raises(InputError, match="num_shape_total"):
        load_flame(path, num_shape_total=401)


def test_loader_reads_npz_with_flame_keys(tmp_path):
    arrays = fake_flame_arrays(60)
    path = tmp_path / "model.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if isinstance(v, np.ndarray)})
    assets = load_flame(path, num_shape=10)
    np.testing.assert_array_equal(assets.shape_dirs, arrays["shapedirs"][:, :, :10])
    assert assets.num_expression == 0 and assets.variant == "flame_partial"


class _Malicious:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def test_loader_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    arrays = fake_flame_arrays(60)
    arrays["v_template"] = _Malicious(f"touch {marker}")
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=2))
    with pytest.raises(InputError, match=r"posix\.system|os\.system"):
        load_flame(path)
    assert not marker.exists()
    with pytest.raises(InputError, match="builtins.eval"):
        restricted_unpickle(b"\x80\x02cbuiltins\neval\nX\x0b\x00\x00\x00print('hi')\x85R.")
    with pytest.raises(InputError, match="os.system"):
        restricted_unpickle(b"ccopy_reg\n_reconstructor\n(cos\nsystem\nc__builtin__\nobject\nNtR.")
    with pytest.raises(InputError, match="copy_reg._reconstructor"):  # allowed global, forbidden target class
        restricted_unpickle(b"ccopy_reg\n_reconstructor\n(cnumpy\ndtype\nc__builtin__\nobject\nNtR.")


def test_loader_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="no such FLAME model"):
        load_flame(tmp_path / "absent.pkl")
    text = tmp_path / "notes.pkl"
    text.write_text("this is not a pickle at all")
    with pytest.raises(InputError, match="not a readable FLAME pickle"):
        load_flame(text)
    not_dict = tmp_path / "list.pkl"
    not_dict.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(InputError, match="holds a list"):
        load_flame(not_dict)

    arrays = fake_flame_arrays(60)
    del arrays["posedirs"], arrays["weights"]
    missing = tmp_path / "missing.pkl"
    write_fake_pickle(missing, arrays, False, monkeypatch)
    with pytest.raises(InputError, match="missing key.*posedirs, weights"):
        load_flame(missing)

    for key, bad in (("weights", np.ones((NUM_FAKE_VERTICES, 4))), ("J_regressor", np.ones((5, 9))),
                     ("posedirs", np.ones((NUM_FAKE_VERTICES, 3, 35))), ("f", np.full((3, 3), 10))):
        arrays = fake_flame_arrays(60)
        arrays[key] = bad
        path = tmp_path / f"bad_{key}.pkl"
        write_fake_pickle(path, arrays, False, monkeypatch)
        with pytest.raises(InputError, match="inconsistent FLAME arrays"):
            load_flame(path)


# ----------------------------------------------------------------------------------------------------------------
# Rotations and LBS building blocks
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_rodrigues_matches_scipy(dtype):
    rng = np.random.default_rng(1)
    vectors = np.concatenate([rng.normal(size=(50, 3)), rng.normal(size=(5, 3)) * 1e-5,
                              rng.normal(size=(5, 3)) * 1e-9, np.zeros((1, 3)),
                              np.array([[np.pi - 1e-4, 0.0, 0.0], [0.0, 3.0, 0.0]])])
    result = batch_rodrigues(torch.as_tensor(vectors, dtype=dtype))
    assert result.dtype == dtype and result.shape == (len(vectors), 3, 3)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(result.numpy(), Rotation.from_rotvec(vectors).as_matrix(), atol=tolerance)
    identity = torch.eye(3, dtype=dtype).expand(2, 4, 3, 3)
    assert torch.equal(batch_rodrigues(torch.zeros(2, 4, 3, dtype=dtype)), identity)


def test_rotation_6d_round_trip():
    matrices = torch.as_tensor(Rotation.random(100, random_state=2).as_matrix())
    np.testing.assert_allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(matrices)).numpy(), matrices.numpy(),
                               atol=1e-12)
    arbitrary = torch.randn(100, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    projected = rotation_6d_to_matrix(arbitrary)
    np.testing.assert_allclose((projected.transpose(-1, -2) @ projected).numpy(), np.broadcast_to(np.eye(3),
                               (100, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(projected).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(projected)).numpy(), projected.numpy(),
                               atol=1e-12)
    # The first column keeps the direction of the first 3-vector.
    first = torch.nn.functional.normalize(arbitrary[:, :3], dim=-1)
    np.testing.assert_allclose(projected[:, :, 0].numpy(), first.numpy(), atol=1e-12)


def _three_joint_chain(dtype=torch.float64):
    """Root at the origin, neck above it, jaw in front of it; vertices 0, 1 on root, neck; 2, 3 on the jaw."""
    joints_rest = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.5]], dtype=dtype)
    vertices = torch.tensor([[0.2, -0.1, 0.0], [0.1, 1.5, 0.2], [0.0, 0.6, 1.3], [0.3, 0.4, 1.0]], dtype=dtype)
    weights = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 1.0]], dtype=dtype)
    # Vertices 4..6 sit on the joints (skinned to them); the regressor picks them, so joints are exact.
    template = torch.cat([vertices, joints_rest])
    regressor = torch.zeros(3, 7, dtype=dtype)
    regressor[torch.arange(3), 4 + torch.arange(3)] = 1.0
    weights = torch.cat([weights, torch.eye(3, dtype=dtype)])
    return template, regressor, weights, [-1, 0, 1]


def _chain_lbs(rotations, template, regressor, weights, parents, posedirs=None, coefficients=None,
               directions=None, pose_correctives=True):
    batch = rotations.shape[0]
    if coefficients is None:
        coefficients = template.new_zeros(batch, 0)
        directions = template.new_zeros(template.shape[0], 3, 0)
    if posedirs is None:
        posedirs = template.new_zeros(9 * (len(parents) - 1), template.shape[0] * 3)
    return linear_blend_skinning(coefficients, rotations, template, directions, posedirs, regressor, parents,
                                 weights, pose_correctives=pose_correctives)


def test_lbs_zero_pose_gives_template():
    template, regressor, weights, parents = _three_joint_chain()
    rng = np.random.default_rng(4)
    posedirs = torch.as_tensor(rng.normal(size=(18, 21)))
    directions = torch.as_tensor(rng.normal(size=(7, 3, 5)))
    rotations = torch.eye(3, dtype=torch.float64).expand(2, 3, 3, 3)
    vertices, joints = _chain_lbs(rotations, template, regressor, weights, parents, posedirs,
                                  torch.zeros(2, 5, dtype=torch.float64), directions)
    assert torch.equal(vertices, template.expand(2, -1, -1))
    assert torch.equal(joints, template[4:].expand(2, -1, -1))


@pytest.mark.parametrize("angle", [0.3, -0.7, 1.2])
def test_jaw_rotation_moves_vertex_along_arc(angle):
    template, regressor, weights, parents = _three_joint_chain()
    rotations = torch.eye(3, dtype=torch.float64).repeat(1, 3, 1, 1)
    rotations[0, 2] = batch_rodrigues(torch.tensor([angle, 0.0, 0.0], dtype=torch.float64))
    vertices, joints = _chain_lbs(rotations, template, regressor, weights, parents)
    jaw = template[6]
    for index in (2, 3):  # fully skinned to the jaw
        before, after = template[index] - jaw, vertices[0, index] - jaw
        assert abs(float(after.norm() - before.norm())) < 1e-12
        assert float(after[0]) == pytest.approx(float(before[0]), abs=1e-12)  # rotation about x keeps x
        turned = float(np.arctan2(after[2], after[1]) - np.arctan2(before[2], before[1]))  # from y toward z
        assert np.angle(np.exp(1j * turned)) == pytest.approx(angle, abs=1e-12)
    torch.testing.assert_close(vertices[0, :2], template[:2], rtol=0, atol=0)  # root and neck vertices stay
    torch.testing.assert_close(joints[0], template[4:], rtol=0, atol=1e-15)


def test_chain_rotations_compose_about_joints():
    template, regressor, weights, parents = _three_joint_chain()
    rng = np.random.default_rng(5)
    rotvecs = rng.normal(size=(3, 3)) * 0.5
    rotations = torch.as_tensor(Rotation.from_rotvec(rotvecs).as_matrix())[None]
    vertices, joints = _chain_lbs(rotations, template, regressor, weights, parents)
    r0, r1, r2 = (Rotation.from_rotvec(r).as_matrix() for r in rotvecs)
    j0, j1, j2 = template[4:].numpy()

    def neck(x):  # local neck motion about the neck joint, then the root motion about the root joint
        return r0 @ (r1 @ (x - j1) + j1 - j0) + j0

    expected = [r0 @ (template[0].numpy() - j0) + j0, neck(template[1].numpy())]
    expected += [neck(r2 @ (template[i].numpy() - j2) + j2) for i in (2, 3)]
    np.testing.assert_allclose(vertices[0, :4].numpy(), np.array(expected), atol=1e-12)
    np.testing.assert_allclose(joints[0].numpy(), [j0, neck(j1), neck(j2)], atol=1e-12)
    posed, transforms = batch_rigid_transform(rotations, template[None, 4:], parents)
    homogeneous = np.append(template[3].numpy(), 1.0)
    np.testing.assert_allclose((transforms[0, 2].numpy() @ homogeneous)[:3], expected[3], atol=1e-12)


def test_pose_correctives_are_posedirs_times_rotation_features():
    template, regressor, weights, parents = _three_joint_chain()
    rng = np.random.default_rng(6)
    posedirs = torch.as_tensor(rng.normal(size=(18, 21)) * 0.01)
    rotations = torch.eye(3, dtype=torch.float64).repeat(1, 3, 1, 1)
    rotations[0, 2] = torch.as_tensor(Rotation.from_rotvec([0.4, -0.2, 0.1]).as_matrix())
    with_correctives, _ = _chain_lbs(rotations, template, regressor, weights, parents, posedirs)
    without, _ = _chain_lbs(rotations, template, regressor, weights, parents, posedirs, pose_correctives=False)
    features = np.concatenate([np.zeros(9), (rotations[0, 2].numpy() - np.eye(3)).ravel()])
    np.testing.assert_array_equal(pose_feature(rotations)[0].numpy(), features)
    corrective = (features @ posedirs.numpy()).reshape(7, 3)
    # Vertices 0, 1 are skinned to unrotated joints, so they move by exactly the corrective.
    np.testing.assert_allclose((with_correctives - without)[0, :2].numpy(), corrective[:2], atol=1e-14)
    # Jaw vertices: the corrective is applied before skinning, so it is rotated with the jaw.
    np.testing.assert_allclose((with_correctives - without)[0, 2:4].numpy(),
                               corrective[2:4] @ rotations[0, 2].numpy().T, atol=1e-14)


def test_blend_shapes_and_joint_regression():
    rng = np.random.default_rng(7)
    coefficients, directions = rng.normal(size=(2, 4)), rng.normal(size=(6, 3, 4))
    result = blend_shapes(torch.as_tensor(coefficients), torch.as_tensor(directions))
    np.testing.assert_allclose(result.numpy(), np.einsum("vdk,bk->bvd", directions, coefficients), atol=1e-12)
    assert torch.equal(blend_shapes(torch.zeros(3, 0), torch.zeros(6, 3, 0)), torch.zeros(3, 6, 3))
    regressor, vertices = rng.normal(size=(5, 6)), rng.normal(size=(2, 6, 3))
    np.testing.assert_allclose(vertices_to_joints(torch.as_tensor(regressor), torch.as_tensor(vertices)).numpy(),
                               regressor @ vertices, atol=1e-12)


def test_lbs_gradcheck_float64():
    template, regressor, weights, parents = _three_joint_chain()
    rng = np.random.default_rng(8)
    posedirs = torch.as_tensor(rng.normal(size=(18, 21)) * 0.1)
    directions = torch.as_tensor(rng.normal(size=(7, 3, 2)) * 0.1)

    def forward(coefficients, axis_angle):
        vertices, joints = _chain_lbs(batch_rodrigues(axis_angle), template, regressor, weights, parents,
                                      posedirs, coefficients, directions)
        return vertices, joints

    coefficients = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    axis_angle = torch.tensor(rng.normal(size=(2, 3, 3)) * 0.5, requires_grad=True)
    with torch.no_grad():
        axis_angle[1, 1] = 0.0  # the zero rotation must have finite, correct gradients too
    assert torch.autograd.gradcheck(forward, (coefficients, axis_angle))


# ----------------------------------------------------------------------------------------------------------------
# FlameModel on the synthetic model
# ----------------------------------------------------------------------------------------------------------------


def test_flame_model_on_synthetic_pickle(tmp_path, monkeypatch):
    arrays = fake_flame_arrays(400)
    path = tmp_path / "model.pkl"
    write_fake_pickle(path, arrays, True, monkeypatch)
    model = FlameModel.from_file(path, num_shape=4, num_expression=3, dtype=torch.float64)
    assert model.v_template.dtype == torch.float64 and model.faces.dtype == torch.int64
    rest = model(batch_size=2)
    assert rest.vertices.shape == (2, NUM_FAKE_VERTICES, 3) and rest.joints.shape == (2, 5, 3)
    assert torch.equal(rest.vertices, model.v_template.expand(2, -1, -1))
    shape, expression = torch.randn(1, 4, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)
    shaped = model(shape, expression).vertices[0].numpy()
    offsets = (arrays["shapedirs"][:, :, :4] @ shape[0].numpy()
               + arrays["shapedirs"][:, :, 300:303] @ expression[0].numpy())
    np.testing.assert_allclose(shaped, arrays["v_template"] + offsets, atol=1e-12)
    with pytest.raises(ValueError, match="shape must have shape"):
        model(torch.zeros(1, 5))


# ----------------------------------------------------------------------------------------------------------------
# The shared partial FLAME 2023 Open model
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def partial():
    if not PARTIAL_MODEL.is_file():
        pytest.skip(f"shared FLAME asset not found at {PARTIAL_MODEL} (it lives outside the repository)")
    with np.load(PARTIAL_MODEL) as data:
        raw = {k: data[k].astype(np.float64) for k in data.files}
    return FlameModel.from_file(PARTIAL_MODEL), raw


def test_partial_model_loads(partial):
    model, raw = partial
    assert (model.num_vertices, model.faces.shape[0], model.num_shape, model.num_expression) == (5023, 9976, 60, 0)
    assert model.variant == "flame_partial" and model.num_joints == 5
    assert model.parents.tolist() == [-1, 0, 1, 1, 1]
    np.testing.assert_array_equal(model.posedirs.numpy(), raw["posedirs"].reshape(5023 * 3, 36).T)


def test_partial_zero_pose_and_joints(partial):
    model, raw = partial
    out = model()
    assert torch.equal(out.vertices[0], model.v_template)
    np.testing.assert_allclose(out.joints[0].numpy(), raw["J_regressor"] @ raw["v_template"], atol=1e-6)


def _rigid_part_motion(raw, joint, rotation, joints, rotations_by_joint):
    """Reference: template + correctives, then the displacement of ``joint``'s rigid motion, weighted."""
    features = np.concatenate([(rotations_by_joint.get(k, np.eye(3)) - np.eye(3)).ravel() for k in range(1, 5)])
    v_posed = raw["v_template"] + raw["posedirs"] @ features
    motion = (v_posed - joints[joint]) @ (rotation.T - np.eye(3))
    return v_posed, v_posed + raw["weights"][:, joint:joint + 1] * motion


def test_partial_jaw_opening(partial):
    model, raw = partial
    angle = 0.3
    out = model(jaw=torch.tensor([[angle, 0.0, 0.0]]))
    moved = out.vertices[0].double().numpy()
    joints = raw["J_regressor"] @ raw["v_template"]
    rotation = Rotation.from_rotvec([angle, 0.0, 0.0]).as_matrix()
    v_posed, expected = _rigid_part_motion(raw, 2, rotation, joints, {2: rotation})
    np.testing.assert_allclose(moved, expected, atol=2e-6)
    jaw_weight = raw["weights"][:, 2]
    chin = jaw_weight > 0.9
    assert chin.sum() > 20
    displacement = moved[chin] - raw["v_template"][chin]
    assert np.all(displacement[:, 1] < -1e-3) and np.all(displacement[:, 2] < -1e-3)  # down and back (y up, z out)
    # The skinned part of the motion is the chord of an arc of `angle` about the jaw joint, scaled by the weight.
    radius = np.linalg.norm((v_posed[chin] - joints[2])[:, 1:], axis=1)
    chord = np.linalg.norm(moved[chin] - v_posed[chin], axis=1)
    np.testing.assert_allclose(chord, jaw_weight[chin] * 2 * radius * np.sin(angle / 2), rtol=1e-4)
    # Without correctives, vertices with no jaw weight stay exactly where they are.
    rigid = model(jaw=torch.tensor([[angle, 0.0, 0.0]]), pose_correctives=False).vertices[0]
    free = torch.as_tensor(jaw_weight == 0)
    assert free.sum() > 50 and torch.equal(rigid[free], model.v_template[free])
    assert (rigid[~free] - model.v_template[~free]).norm(dim=1).max() > 5e-3


def test_partial_eye_rotation_moves_only_eyes(partial):
    model, raw = partial
    eyes = torch.tensor([[[0.0, 0.25, 0.0], [0.2, 0.0, 0.0]]])
    moved = model(eyes=eyes, pose_correctives=False).vertices[0]
    offset = (moved - model.v_template).norm(dim=1).numpy()
    weights = raw["weights"]
    joints = raw["J_regressor"] @ raw["v_template"]
    eye_weight = weights[:, 3] + weights[:, 4]
    assert np.all(offset[eye_weight < 1e-3] < 1e-6)
    assert np.all(offset[eye_weight == 0] == 0)
    for joint in (3, 4):
        eyeball = weights[:, joint] > 0.99
        assert eyeball.sum() > 100
        assert np.median(offset[eyeball]) > 1e-3  # the eyeball turns
        distances = np.linalg.norm(raw["v_template"][eyeball] - joints[joint], axis=1)
        posed = np.linalg.norm(moved[eyeball].double().numpy() - joints[joint], axis=1)
        np.testing.assert_allclose(posed, distances, atol=1e-6)  # about its own centre
    # With correctives, the extra motion is exactly the eyes' pose-corrective blend shapes (skinned).
    features = np.concatenate([np.zeros(18)] + [Rotation.from_rotvec(r).as_matrix().ravel() - np.eye(3).ravel()
                                                 for r in eyes[0].double().numpy()])
    full = model(eyes=eyes).vertices[0]
    non_eye = eye_weight < 1e-3
    np.testing.assert_allclose((full - moved).double().numpy()[non_eye], (raw["posedirs"] @ features)[non_eye],
                               atol=1e-6)


def test_partial_identity_and_float64(partial):
    model, raw = partial
    betas = torch.as_tensor(np.random.default_rng(9).normal(size=(2, 60)), dtype=torch.float32)
    out = model(shape=betas)
    expected = raw["v_template"][None] + np.einsum("vdk,bk->bvd", raw["shapedirs"], betas.double().numpy())
    np.testing.assert_allclose(out.vertices.double().numpy(), expected, atol=1e-6)
    assert (out.vertices - model.v_template).norm(dim=2).mean() > 1e-3
    np.testing.assert_allclose(out.joints.double().numpy(), np.einsum("jv,bvd->bjd", raw["J_regressor"], expected),
                               atol=1e-6)
    model64 = FlameModel.from_file(PARTIAL_MODEL, dtype=torch.float64)
    pose = dict(global_rotation=torch.tensor([[0.1, -0.3, 0.05]]), neck=torch.tensor([[0.2, 0.0, 0.1]]),
                jaw=torch.tensor([[0.25, 0.02, 0.0]]), eyes=torch.tensor([[[0.1, 0.2, 0.0], [0.1, 0.2, 0.0]]]))
    out32 = model(shape=betas[:1], **pose)
    out64 = model64(shape=betas[:1].double(), **{k: v.double() for k, v in pose.items()})
    assert out64.vertices.dtype == torch.float64
    np.testing.assert_allclose(out32.vertices.double().numpy(), out64.vertices.numpy(), atol=1e-5)
    # The 6D parameterisation gives the same result.
    six = {k: matrix_to_rotation_6d(batch_rodrigues(v.double())) for k, v in pose.items()}
    out6d = model64(shape=betas[:1].double(), rotation_representation="6d", **six)
    np.testing.assert_allclose(out6d.vertices.numpy(), out64.vertices.numpy(), atol=1e-12)


def test_flame_to_model_frame(partial):
    model, _ = partial
    template = model.v_template
    mapped = flame_to_model_frame(template)
    np.testing.assert_allclose(mapped.numpy(), template.numpy() @ FLAME_TO_IMAGE.T)
    nose_tip = int(torch.argmax(template[:, 2]))  # FLAME: z toward the viewer
    assert int(torch.argmin(mapped[:, 2])) == nose_tip  # model frame: z into the head
    left_eye, right_eye = model().joints[0, 3], model().joints[0, 4]
    assert left_eye[0] > 0 > right_eye[0]  # the subject's left eye lies at +x in both frames
    assert np.isclose(np.linalg.det(FLAME_TO_IMAGE), 1.0)
