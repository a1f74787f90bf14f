"""FLAME codes from other trackers' files: the layouts of DECA, EMOCA and SMIRK outputs, read safely and checked."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from magicportrait.errors import InputError
from magicportrait.heads.flame_code_files import check_placeable, load_flame_codes, reframe_codes
from magicportrait.types import FlameCodes

T = 3
RNG = np.random.default_rng(0)
DECA = {"shape": RNG.normal(size=(T, 100)), "tex": RNG.normal(size=(T, 50)), "exp": RNG.normal(size=(T, 50)),
        "pose": RNG.normal(size=(T, 6)), "cam": RNG.normal(size=(T, 3)) + [9, 0, 0], "light": RNG.normal(size=(T, 27)),
        "tform": np.repeat(np.array([[[0.5, 0, -20], [0, 0.5, -30], [0, 0, 1]]]), T, axis=0)}


def _check_deca(codes: FlameCodes) -> None:
    assert codes.num_frames == T and codes.image_size == (480, 640) and codes.crop_size == 224
    np.testing.assert_allclose(codes.global_pose, DECA["pose"][:, :3], atol=1e-6)
    np.testing.assert_allclose(codes.jaw, DECA["pose"][:, 3:], atol=1e-6)
    np.testing.assert_allclose(codes.light, DECA["light"].reshape(T, 9, 3), atol=1e-6)
    np.testing.assert_allclose(codes.crop_matrix, DECA["tform"], atol=1e-12)
    np.testing.assert_allclose(codes.expression, DECA["exp"], atol=1e-6)


def test_one_file_with_every_frame_stacked(tmp_path):
    np.savez(tmp_path / "codes.npz", **DECA)
    _check_deca(load_flame_codes(tmp_path / "codes.npz", (480, 640)))
    with open(tmp_path / "codes.pkl", "wb") as file:
        pickle.dump(DECA, file)
    _check_deca(load_flame_codes(tmp_path / "codes.pkl", (480, 640)))


def test_per_frame_files_and_emoca_folders(tmp_path):
    for layout in ("npy", "pkl", "emoca"):
        folder = tmp_path / layout
        folder.mkdir()
        for index in range(T):
            frame = {name: value[index:index + 1] for name, value in DECA.items()}  # (1, n), as encoders save
            if layout == "npy":
                np.save(folder / f"frame_{index:04d}.npy", frame, allow_pickle=True)
            elif layout == "pkl":
                (folder / f"frame_{index:04d}.pkl").write_bytes(pickle.dumps(frame))
            else:
                (folder / f"{index:04d}").mkdir()
                for name, value in frame.items():
                    np.save(folder / f"{index:04d}" / f"{name}.npy", value)
        _check_deca(load_flame_codes(folder, (480, 640)))


def test_smirk_keys(tmp_path):
    smirk = {"shape_params": DECA["shape"], "expression_params": DECA["exp"], "pose_params": DECA["pose"][:, :3],
             "jaw_params": DECA["pose"][:, 3:], "eyelid_params": RNG.uniform(0, 1, (T, 2)), "cam": DECA["cam"]}
    np.savez(tmp_path / "smirk.npz", **smirk)
    codes = load_flame_codes(tmp_path / "smirk.npz", (480, 640))
    np.testing.assert_allclose(codes.jaw, DECA["pose"][:, 3:], atol=1e-6)
    np.testing.assert_allclose(codes.eyelids, smirk["eyelid_params"], atol=1e-6)
    assert codes.tex is None and not np.isfinite(codes.crop_matrix).any()
    with pytest.raises(InputError, match="no camera .* or crop matrix"):
        check_placeable(codes, "smirk.npz")


def test_our_own_codes_and_reframing(tmp_path):
    np.savez(tmp_path / "codes.npz", **DECA)
    codes = load_flame_codes(tmp_path / "codes.npz", (480, 640))
    again = load_flame_codes(codes.save(tmp_path / "ours.npz"), (1, 1))
    np.testing.assert_array_equal(again.shape, codes.shape)
    assert again.image_size == (480, 640)  # ours carries its own image size
    image_to_canvas = np.array([[2.0, 0.0, -100.0], [0.0, 2.0, -50.0]])
    canvas = reframe_codes(codes, image_to_canvas, (512, 512))
    point = np.array([300.0, 200.0, 1.0])  # an image pixel: the same crop pixel either way
    np.testing.assert_allclose(canvas.crop_matrix[0] @ np.append(image_to_canvas @ point, 1.0),
                               codes.crop_matrix[0] @ point, atol=1e-9)


def test_bad_files_are_explained(tmp_path):
    np.savez(tmp_path / "no_exp.npz", shape=DECA["shape"], pose=DECA["pose"])
    with pytest.raises(InputError, match="without exp; found pose, shape"):
        load_flame_codes(tmp_path / "no_exp.npz", (480, 640))
    np.savez(tmp_path / "short.npz", **{**DECA, "exp": DECA["exp"][:2]})
    with pytest.raises(InputError, match=r"expression has shape \(2, 50\), expected \(3, n\)"):
        load_flame_codes(tmp_path / "short.npz", (480, 640))
    torch = pytest.importorskip("torch")
    with open(tmp_path / "tensor.pkl", "wb") as file:
        pickle.dump({"shape": torch.zeros(1, 100)}, file)
    with pytest.raises(InputError, match="refusing to unpickle"):
        load_flame_codes(tmp_path / "tensor.pkl", (480, 640))
    with pytest.raises(InputError, match="no such FLAME codes"):
        load_flame_codes(tmp_path / "missing", (480, 640))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no per-frame FLAME codes"):
        load_flame_codes(tmp_path / "empty", (480, 640))
