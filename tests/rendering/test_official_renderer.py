"""The maps exactly as the official renderer (DECA's ``SRenderY`` on PyTorch3D) makes them, each behaviour checked
against a reference computed the official way: raw barycentric normals (not re-normalised), albedo clamped only
after shading, the 512 -> 256 texture taken texel (2i, 2j), and zero padding outside the texture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicportrait.heads.flame_texture import load_flame_texture_space
from magicportrait.rendering import AppearanceRenderer, camera_normals, normal_map, rasterize
from magicportrait.rendering.shading import SH_CONSTANTS, sample_texture
from magicportrait.types import RenderAppearance

SIZE = 32


def folded_sheet() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two triangles meeting at a crease (image space, facing the camera), with the vertex normals of a bent
    surface: the interpolated normals are much shorter than 1 along the middle."""
    vertices = np.array([[2.0, 2.0, 10.0], [30.0, 2.0, 10.0], [2.0, 30.0, 10.0], [30.0, 30.0, 10.0]])
    faces = np.array([[0, 2, 1], [1, 2, 3]])
    tilt = np.deg2rad(60.0)
    normals = np.array([[np.sin(tilt), 0.0, -np.cos(tilt)], [-np.sin(tilt), 0.0, -np.cos(tilt)],
                        [np.sin(tilt), 0.0, -np.cos(tilt)], [-np.sin(tilt), 0.0, -np.cos(tilt)]])
    return vertices, faces, normals


def official_normals(vertices, faces, normals) -> np.ndarray:
    """The official way: per pixel, the barycentric mix of the vertex normals (camera frame x, -y, -z), as is."""
    fragments = rasterize(vertices[None], faces, (SIZE, SIZE))
    face = fragments.pix_to_face[0].numpy()
    bary = fragments.bary[0].numpy().astype(np.float64)
    camera = normals * np.array([1.0, -1.0, -1.0])
    mixed = np.einsum("hwk,hwkc->hwc", bary, camera[faces[np.maximum(face, 0)]])
    return np.where(face[..., None] >= 0, mixed, 0.0)


def test_normals_are_interpolated_without_renormalising():
    vertices, faces, normals = folded_sheet()
    fragments = rasterize(vertices[None], faces, (SIZE, SIZE))
    ours = camera_normals(fragments, vertices[None], faces, normals=normals[None])[0].numpy()
    expected = official_normals(vertices, faces, normals)
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    covered = fragments.pix_to_face[0].numpy() >= 0
    assert np.linalg.norm(expected[covered], axis=-1).min() < 0.6  # the crease: far from unit length
    np.testing.assert_allclose(normal_map(fragments, vertices[None], faces, normals[None])[0].numpy(),
                               np.clip(expected, 0, 1), atol=1e-6)
    smooth = camera_normals(fragments, vertices[None], faces, normals=normals[None], renormalise=True)[0].numpy()
    np.testing.assert_allclose(np.linalg.norm(smooth[covered], axis=-1), 1.0, atol=1e-5)  # ours, on request


def test_albedo_is_clamped_only_after_shading():
    vertices, faces, _ = folded_sheet()
    uv = vertices[:, :2] / SIZE * 8  # texel pixels of an 8x8 texture
    light = np.zeros((9, 3))
    light[0] = 0.5 / SH_CONSTANTS[0]  # shading 0.5 everywhere
    appearance = RenderAppearance(sh_light=light, texture=np.full((8, 8, 3), 1.5), uv=uv, uv_faces=faces,
                                  vertex_map=np.arange(4))
    render = AppearanceRenderer(faces, appearance, (SIZE, SIZE)).render(vertices[None]).render[0].numpy()
    inside = render[8:24, 8:24]
    np.testing.assert_allclose(inside, 0.75, atol=1e-6)  # 1.5 x 0.5, not min(1.5, 1) x 0.5


def test_texture_space_is_downsampled_to_texel_2i_2j(tmp_path):
    rng = np.random.default_rng(0)
    mean_bgr = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
    basis_bgr = rng.normal(0, 10, (8, 8, 3, 2)).astype(np.float32)
    path = tmp_path / "FLAME_texture.npz"
    np.savez(path, mean=mean_bgr, tex_dir=basis_bgr, vt=rng.uniform(0, 1, (3, 2)), ft=np.array([[0, 1, 2]]))
    space = load_flame_texture_space(path, num_components=2, size=4)
    np.testing.assert_allclose(space.mean, mean_bgr[::2, ::2, ::-1] / 255.0, atol=1e-6)
    np.testing.assert_allclose(space.basis, basis_bgr[::2, ::2, ::-1] / 255.0, atol=1e-6)
    area = load_flame_texture_space(path, num_components=2, size=4, resample="area")
    np.testing.assert_allclose(area.mean, mean_bgr.reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))[..., ::-1] / 255.0,
                               atol=1e-5)
    np.testing.assert_allclose(space.texture([1.0, -1.0]), space.mean + space.basis[..., 0] - space.basis[..., 1],
                               atol=1e-6)  # and not clamped


@pytest.mark.parametrize("u, expected", [(-0.5, 0.0), (0.0, 0.5), (0.5, 1.0), (4.0, 0.5), (4.5, 0.0)])
def test_texture_lookup_pads_with_zeros(u, expected):
    texture = torch.ones(1, 3, 4, 4)
    uv = torch.tensor([[[[u, 2.0]]]])  # texel centres at i + 0.5: u = 0 is half a texel outside
    np.testing.assert_allclose(sample_texture(texture, uv)[0, 0, 0].numpy(), expected, atol=1e-6)
