"""FLAME codes in DECA's conventions -> our FLAME head tracks: the same image-space mesh as the official chain
(FLAME posed about its root joint, ``s * (xy + t)``, y negated, NDC -> crop pixels -> image through the inverse crop
matrix), computed here directly from the model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from magicportrait.alignment.codes import transfer_codes
from magicportrait.heads.flame_codes import appearance_from_codes, head_track_from_codes
from magicportrait.heads.flame_head import FlameHeadModel
from magicportrait.heads.flame_texture import FlameTextureSpace
from magicportrait.tracking.deca_encoder import crop_transform
from magicportrait.types import FlameCodes, FlameTrack
from shared_paths import needs_partial_flame
from synthetic_flame import write_synthetic_flame

pytestmark = needs_partial_flame


@pytest.fixture(scope="module")
def head_model(tmp_path_factory) -> FlameHeadModel:
    return FlameHeadModel.from_file(write_synthetic_flame(tmp_path_factory.mktemp("flame")))


def _codes(num_frames: int, rotated_crop: bool = False) -> FlameCodes:
    rng = np.random.default_rng(0)
    matrix = crop_transform(np.array([251.0, 262.0]), 300)
    if rotated_crop:  # not what DECA's crops do, but the conversion takes any similarity
        angle = np.deg2rad(12.0)
        turn = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        matrix = turn @ matrix
    return FlameCodes(shape=np.repeat(rng.normal(0, 0.8, (1, 100)), num_frames, axis=0),
                      expression=rng.normal(0, 1.0, (num_frames, 50)),
                      global_pose=rng.uniform(-0.35, 0.35, (num_frames, 3)),
                      jaw=np.column_stack([rng.uniform(0, 0.3, num_frames), np.zeros((num_frames, 2))]),
                      cam=np.column_stack([rng.uniform(8, 10, num_frames), rng.normal(0, 0.01, (num_frames, 2))]),
                      crop_matrix=np.repeat(matrix[None], num_frames, axis=0), image_size=(512, 512),
                      tex=rng.normal(0, 1, (num_frames, 50)), light=rng.normal(0, 0.3, (num_frames, 9, 3)),
                      source="test")


def _official_chain(head_model: FlameHeadModel, codes: FlameCodes) -> np.ndarray:
    """The official projection, step by step: `(T, V, 3)` image x, y and DECA's (negated, scaled) z."""
    count = codes.num_frames
    with torch.no_grad():
        vertices = head_model.flame(
            shape=torch.as_tensor(codes.shape[:, :head_model.num_shape], dtype=torch.float64),
            expression=torch.as_tensor(codes.expression[:, :head_model.num_expression], dtype=torch.float64),
            global_rotation=torch.as_tensor(codes.global_pose, dtype=torch.float64),
            jaw=torch.as_tensor(codes.jaw, dtype=torch.float64)).vertices.numpy()
    s, shift = codes.cam[:, None, :1].astype(np.float64), codes.cam[:, None, 1:].astype(np.float64)
    projected = np.concatenate([s * (vertices[..., :2] + shift), s * vertices[..., 2:]], axis=-1)
    projected[..., 1:] *= -1  # y and z negated
    crop_pixels = (projected[..., :2] + 1.0) * codes.crop_size / 2
    homogeneous = np.concatenate([crop_pixels, np.ones((count, crop_pixels.shape[1], 1))], axis=-1)
    image = np.einsum("tij,tvj->tvi", np.linalg.inv(codes.crop_matrix), homogeneous)[..., :2]
    return np.concatenate([image, projected[..., 2:]], axis=-1)


@pytest.mark.parametrize("rotated_crop", [False, True])
def test_head_track_reproduces_the_official_projection(head_model, rotated_crop):
    codes = _codes(4, rotated_crop)
    track = head_track_from_codes(head_model, codes, fps=25.0)
    assert isinstance(track, FlameTrack) and track.num_frames == 4 and track.fps == 25.0
    ours = head_model.posed_vertices(track).astype(np.float64)
    official = _official_chain(head_model, codes)
    np.testing.assert_allclose(ours[..., :2], official[..., :2], atol=2e-3)  # pixels, float32 posing
    for frame in range(4):  # depth: the same order up to a positive scale and an offset
        slope, offset = np.polyfit(official[frame, :, 2], ours[frame, :, 2], 1)
        assert slope > 0
        np.testing.assert_allclose(slope * official[frame, :, 2] + offset, ours[frame, :, 2], atol=1e-3)
    np.testing.assert_allclose(track.jaw_pose, codes.jaw, atol=1e-6)
    np.testing.assert_allclose(track.global_pose if not rotated_crop else codes.global_pose, codes.global_pose,
                               atol=1e-5)


def test_transfer_keeps_the_portrait_and_takes_the_motion():
    source, driving = _codes(1), _codes(3).select(slice(None))
    driving = replace(driving, shape=driving.shape + 1.0, cam=driving.cam * 2.0, image_size=(720, 1280),
                      source="driving")
    aligned = transfer_codes(source, driving)
    assert aligned.num_frames == 3 and aligned.image_size == (512, 512)
    for name in ("shape", "cam", "crop_matrix", "tex", "light"):
        np.testing.assert_array_equal(getattr(aligned, name), np.repeat(getattr(source, name), 3, axis=0))
    for name in ("expression", "global_pose", "jaw"):
        np.testing.assert_array_equal(getattr(aligned, name), getattr(driving, name))


def test_codes_save_and_load(tmp_path):
    codes = _codes(2)
    loaded = FlameCodes.load(codes.save(tmp_path / "codes.npz"))
    for name in FlameCodes._ARRAYS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(codes, name))
    assert (loaded.image_size, loaded.crop_size, loaded.source) == ((512, 512), 224, "test")


def test_appearance_from_tex_and_light(head_model):
    rng = np.random.default_rng(1)
    faces = head_model.faces
    space = FlameTextureSpace(mean=np.full((8, 8, 3), 0.5, np.float32),
                              basis=rng.normal(0, 0.01, (8, 8, 3, 50)).astype(np.float32),
                              vt=rng.uniform(0, 1, (faces.max() + 1, 2)).astype(np.float32), ft=faces)
    codes = _codes(1)
    appearance = appearance_from_codes(head_model, codes, space)
    np.testing.assert_array_equal(appearance.sh_light, codes.light[0])
    np.testing.assert_allclose(appearance.texture, np.clip(space.mean + space.basis @ codes.tex[0], 0, 1),
                               atol=1e-6)
    assert appearance.uv_faces.shape == faces.shape
