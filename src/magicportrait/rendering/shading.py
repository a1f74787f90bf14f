"""Shaders of the MagicPortrait guidance maps (depth, normal, shaded render) and texture sampling.

All functions are pure and batched. Image space: x right, y down, z into the scene (pixels). Camera space of the
maps (official convention): x right, y up, z toward the camera, i.e. ``camera = (x, -y, -z)``.

Spherical-harmonics lighting follows Ramamoorthi & Hanrahan (2001), "An efficient representation for irradiance
environment maps", in the form DECA (Feng et al. 2021) uses for face rendering: for a unit camera-space normal
``n = (x, y, z)`` the 9 basis values are ``c_k * b_k(n)`` with

=====  ==================  =================================================
k      b_k(n)              c_k
=====  ==================  =================================================
0      1                   1 / sqrt(4 pi)                       (= 0.2821)
1,2,3  x, y, z             (2 pi / 3) * sqrt(3 / (4 pi))         (= 1.0233)
4,5,6  xy, xz, yz          (pi / 4) * 3 * sqrt(5 / (12 pi))      (= 0.8580)
7      x^2 - y^2           (pi / 4) * (3 / 2) * sqrt(5 / (12 pi)) (= 0.4290)
8      3 z^2 - 1           (pi / 4) * (1 / 2) * sqrt(5 / (4 pi))  (= 0.2477)
=====  ==================  =================================================

i.e. the real SH normalisation constants ``Y_lm`` times the clamped-cosine convolution factors ``A_1 = 2 pi / 3``
and ``A_2 = pi / 4``; as in DECA, the DC term omits ``A_0 = pi`` (it is absorbed into the coefficients).
Shading is ``sum_k c_k b_k(n) L_k`` per colour channel for coefficients ``L`` of shape `(9, 3)`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .rasterizer import Foreground, Fragments, _as_float_tensor, as_foreground, interpolate_foreground

__all__ = [
    "DEFAULT_SH_LIGHT",
    "SH_CONSTANTS",
    "camera_normals",
    "depth_map",
    "lambertian_shading",
    "normal_map",
    "sample_texture",
    "shaded_map",
    "sh_basis",
    "sh_shading",
    "vertex_normals",
]

_PI = math.pi
SH_CONSTANTS = (
    1.0 / math.sqrt(4 * _PI),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * (3 / 2) * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * (1 / 2) * math.sqrt(5 / (4 * _PI)),
)
"""The constant factors ``c_k`` of :func:`sh_basis` (see the module docstring)."""


def _default_sh_light() -> torch.Tensor:
    """A grey light: ambient 0.7 plus 0.3 * cos(angle to the direction (0, 0.5, 1)/|.|) (camera space).

    Shading = 0.7 + 0.3 * dot(n, d) with d = normalize(0, 0.5, 1), a light above the camera and in front of the
    face: 1.0 for normals pointing at the light, 0.97 facing the camera, 0.70 for a profile normal (1, 0, 0),
    0.79 under the chin (0, -0.7, 0.7) and 0.57 only for normals pointing straight down, so a front-facing face
    lies in about 0.6-1.0 and no region goes dark. Only the DC and first-order terms are non-zero.
    """
    ambient, diffuse = 0.7, 0.3
    d = np.array([0.0, 0.5, 1.0])
    d = d / np.linalg.norm(d)
    light = np.zeros((9, 3))
    light[0] = ambient / SH_CONSTANTS[0]
    light[1:4] = (diffuse * d / SH_CONSTANTS[1])[:, None]
    return torch.tensor(light, dtype=torch.float32)


DEFAULT_SH_LIGHT = _default_sh_light()
"""`(9, 3)` default SH light: ambient 0.7 + 0.3 * cos to normalize(0, 0.5, 1) (frontal-top), grey."""


# ----------------------------------------------------------------------------------------------- geometry helpers
def vertex_normals(vertices, faces) -> torch.Tensor:
    """Unit area-weighted vertex normals in image space.

    Args:
        vertices: `(N, V, 3)` (or `(V, 3)`) image-space vertices.
        faces: `(F, 3)`; the outward normal of a face is ``normalize(cross(v1 - v0, v2 - v0))``.

    Returns:
        `(N, V, 3)` (or `(V, 3)`) unit normals; (0, 0, 0) for vertices that belong to no non-degenerate face.
    """
    verts = _as_float_tensor(vertices)
    squeeze = verts.ndim == 2
    if squeeze:
        verts = verts.unsqueeze(0)
    faces = torch.as_tensor(faces, device=verts.device).long()
    tri = verts[:, faces]  # (N, F, 3, 3)
    face_n = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])  # |.| = 2 * area
    normals = torch.zeros_like(verts)
    for corner in range(3):  # 3 vectorised scatters, not a loop over faces
        normals.index_add_(1, faces[:, corner], face_n)
    normals = F.normalize(normals, dim=-1, eps=1e-12)
    return normals[0] if squeeze else normals


def depth_foreground(fragments: Fragments | Foreground, vertices) -> torch.Tensor:
    """Normalised depth `(K,)` at the covered pixels (see :func:`depth_map`)."""
    fg = as_foreground(fragments)
    verts = _as_float_tensor(vertices, device=fg.zbuf.device)
    if verts.ndim == 2:
        verts = verts.unsqueeze(0)
    zmin = verts[..., 2].amin(1)
    zmax = verts[..., 2].amax(1)
    flat = (zmax - zmin) <= 0  # all vertices at one depth: every pixel is "nearest" (1)
    scale = torch.where(flat, torch.zeros_like(zmax), 1.0 / (zmax - zmin).clamp_min(1e-30))
    offset = torch.where(flat, torch.ones_like(zmax), torch.zeros_like(zmax))
    if verts.shape[0] == 1:
        zmax, scale, offset = (t.expand(fg.shape[0]) for t in (zmax, scale, offset))
    depth = (zmax[fg.frame] - fg.zbuf) * scale[fg.frame] + offset[fg.frame]
    return depth.clamp_(0, 1).to(fg.zbuf.dtype)


def depth_map(fragments: Fragments | Foreground, vertices, faces=None) -> torch.Tensor:
    """Official MagicPortrait depth map.

    Per frame, z is normalised over all vertices of the mesh so that the nearest vertex (min z) maps to 1 and the
    farthest (max z) to 0: ``d = (zmax - z) / (zmax - zmin)``, evaluated at every pixel from the interpolated z
    (``fragments.zbuf``; d is affine in z, so this equals interpolating the per-vertex d). Background 0.
    A mesh whose vertices all share one z gets d = 1 wherever it is drawn.

    Args:
        fragments: from :func:`rasterize` of ``vertices``.
        vertices: `(N, V, 3)` image-space vertices.
        faces: unused (accepted for a uniform shader signature).

    Returns:
        `(N, H, W)` in [0, 1].
    """
    return as_foreground(fragments).scatter(depth_foreground(fragments, vertices))


def camera_normals_foreground(fragments: Fragments | Foreground, vertices, faces, normals=None,
                              extra_attributes: torch.Tensor | None = None, renormalise: bool = False):
    """Camera-space normals `(K, 3)` at the covered pixels (see :func:`camera_normals`): the unit vertex normals
    interpolated barycentrically and left as they are, as the official renderer does (shorter than 1 where the
    surface bends, down to ~0.4 at creases), or re-normalised per pixel with ``renormalise``.

    With ``extra_attributes`` `(N or 1, V, C)` these are interpolated in the same gather and
    ``(normals (K, 3), extra (K, C))`` is returned.
    """
    if normals is None:
        normals = vertex_normals(vertices, faces)
    normals = _as_float_tensor(normals, device=as_foreground(fragments).zbuf.device)
    if normals.ndim == 2:
        normals = normals.unsqueeze(0)
    # camera = (x, -y, -z) is linear, so flip the vertex normals before interpolating (V instead of K vectors)
    attrs = normals * normals.new_tensor([1.0, -1.0, -1.0])
    if extra_attributes is not None:
        extra = extra_attributes.to(attrs.dtype)
        if extra.ndim == 2:
            extra = extra.unsqueeze(0)
        batch = max(attrs.shape[0], extra.shape[0])
        attrs = torch.cat([attrs.expand(batch, -1, -1), extra.expand(batch, -1, -1)], dim=-1)
    values = interpolate_foreground(fragments, faces, attrs)
    n_cam = F.normalize(values[:, :3], dim=-1, eps=1e-12) if renormalise else values[:, :3].contiguous()
    return n_cam if extra_attributes is None else (n_cam, values[:, 3:])


def camera_normals(fragments: Fragments | Foreground, vertices, faces, normals=None,
                   renormalise: bool = False) -> torch.Tensor:
    """Interpolated vertex normals (re-normalised per pixel with ``renormalise``; the official maps are not) in
    camera space ``(nx, -ny, -nz)``, unclamped.

    Args:
        fragments: from :func:`rasterize`.
        vertices: `(N, V, 3)` image-space vertices (used when ``normals`` is None).
        faces: `(F, 3)`.
        normals: optional `(N, V, 3)` image-space vertex normals (default :func:`vertex_normals`).

    Returns:
        `(N, H, W, 3)` vectors (z > 0 faces the camera); 0 on the background.
    """
    return as_foreground(fragments).scatter(camera_normals_foreground(fragments, vertices, faces, normals,
                                                                      renormalise=renormalise))


def normal_map(fragments: Fragments | Foreground, vertices, faces, normals=None) -> torch.Tensor:
    """Official MagicPortrait normal map: camera-space interpolated normals clamped to [0, 1], background 0.

    Negative components become 0 (no ``(n + 1) / 2`` remap), as in the official release.

    Returns:
        `(N, H, W, 3)` float in [0, 1].
    """
    fg = as_foreground(fragments)
    return fg.scatter(camera_normals_foreground(fg, vertices, faces, normals).clamp_(0, 1))


# ---------------------------------------------------------------------------------------------------- lighting
def sh_basis(normals_cam: torch.Tensor) -> torch.Tensor:
    """Second-order real SH basis with the irradiance constants: `(..., 3)` unit normals -> `(..., 9)`.

    Order and constants are listed in the module docstring (``SH_CONSTANTS``).
    """
    n = torch.as_tensor(normals_cam)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    c = SH_CONSTANTS
    return torch.stack([
        torch.full_like(x, c[0]), c[1] * x, c[2] * y, c[3] * z,
        c[4] * x * y, c[5] * x * z, c[6] * y * z, c[7] * (x * x - y * y), c[8] * (3 * z * z - 1),
    ], dim=-1)


def sh_shading(normals_cam, sh_coefficients) -> torch.Tensor:
    """RGB shading from SH lighting.

    Args:
        normals_cam: `(..., 3)` unit camera-space normals; with per-frame coefficients the first dim is N.
        sh_coefficients: `(9, 3)` or `(N, 9, 3)`.

    Returns:
        `(..., 3)` shading (not clamped).
    """
    n = _as_float_tensor(normals_cam)
    sh = _as_float_tensor(sh_coefficients, device=n.device).to(n.dtype)
    basis = sh_basis(n)
    if sh.ndim == 2:
        return basis @ sh
    if sh.ndim == 3:
        if n.shape[0] != sh.shape[0]:
            raise ValueError(f"per-frame SH coefficients for {sh.shape[0]} frames, normals for {n.shape[0]}.")
        flat = basis.reshape(n.shape[0], -1, 9)
        return torch.bmm(flat, sh).reshape(*n.shape[:-1], 3)
    raise ValueError(f"sh_coefficients must have shape (9, 3) or (N, 9, 3), got {tuple(sh.shape)}.")


def lambertian_shading(normals_cam, light_direction=(0.0, 0.5, 1.0), ambient: float = 0.7,
                       diffuse: float = 0.3) -> torch.Tensor:
    """``ambient + diffuse * max(0, n . l)``: `(..., 3)` camera-space normals -> `(...,)` grey shading.

    ``light_direction`` (camera space, pointing from the surface towards the light) is normalised.
    """
    n = _as_float_tensor(normals_cam)
    light = F.normalize(torch.as_tensor(light_direction, dtype=n.dtype, device=n.device), dim=0)
    return ambient + diffuse * (n @ light).clamp_min(0)


def _sh_raw_basis(n: torch.Tensor) -> torch.Tensor:
    """`(K, 3)` -> `(K, 8)` SH basis terms 1..8 without their constants (term 0 is the constant 1)."""
    sq = n * n
    prods = n * n.roll(-1, 1)  # xy, yz, zx
    return torch.cat([n, prods[:, 0:1], prods[:, 2:3], prods[:, 1:2], sq[:, 0:1] - sq[:, 1:2],
                      3 * sq[:, 2:3] - 1], dim=1)


def shade_foreground(normals_cam: torch.Tensor, albedo: torch.Tensor, sh_coefficients,
                     frame: torch.Tensor | None = None) -> torch.Tensor:
    """``clamp(albedo * sh_shading(normals), 0, 1)`` for `(K, 3)` covered-pixel values of frames ``frame``."""
    sh = _as_float_tensor(sh_coefficients, device=normals_cam.device).to(normals_cam.dtype)
    if sh.ndim == 3 and sh.shape[0] == 1:
        sh = sh[0]
    scaled = sh * sh.new_tensor(SH_CONSTANTS).unsqueeze(-1)  # fold the constants into the coefficients
    if scaled.ndim == 2:
        if bool((scaled[4:] == 0).all()):  # first-order light (e.g. DEFAULT_SH_LIGHT): skip the quadratic terms
            shade = torch.addmm(scaled[0], normals_cam, scaled[1:4])
        else:
            shade = torch.addmm(scaled[0], _sh_raw_basis(normals_cam), scaled[1:])
    else:
        if frame is None:
            raise ValueError("per-frame SH coefficients need the frame of each pixel.")
        raw = _sh_raw_basis(normals_cam)
        shade = torch.einsum("kb,kbc->kc", raw, scaled[frame, 1:]) + scaled[frame, 0]
    return shade.mul_(albedo).clamp_(0, 1)


def shaded_map(fragments: Fragments | Foreground, normals_cam, albedo,
               sh_coefficients=DEFAULT_SH_LIGHT) -> torch.Tensor:
    """Shaded render map: ``clamp(albedo * sh_shading(normals_cam, sh), 0, 1)``, background 0.

    Args:
        fragments: from :func:`rasterize` (defines the covered pixels).
        normals_cam: `(N, H, W, 3)` unit camera-space normals (e.g. :func:`camera_normals`).
        albedo: `(N, H, W, 3)` in [0, 1] (or `(3,)` / a float, uniform).
        sh_coefficients: `(9, 3)` or `(N, 9, 3)`.

    Returns:
        `(N, H, W, 3)` float in [0, 1].
    """
    fg = as_foreground(fragments)
    n_cam = _as_float_tensor(normals_cam, device=fg.pixel_index.device)
    normals = n_cam.reshape(-1, 3)[fg.pixel_index]
    alb = _as_float_tensor(albedo, device=fg.pixel_index.device).to(normals.dtype)
    alb = alb.reshape(-1, 3)[fg.pixel_index] if alb.ndim == 4 else alb.expand(normals.shape[0], 3)
    return fg.scatter(shade_foreground(normals, alb, sh_coefficients, fg.frame))


def as_texture(texture, device=None) -> torch.Tensor:
    """A texture as `(B, 3, Ht, Wt)` float in [0, 1] from `(3, Ht, Wt)`, `(Ht, Wt, 3)` or `(B, ...)` uint8/float.

    uint8 is divided by 255; a layout with 3 (or 4: alpha dropped) in the last axis is treated as channels-last.
    """
    t = torch.as_tensor(np.asarray(texture) if not isinstance(texture, torch.Tensor) else texture, device=device)
    is_uint8 = t.dtype == torch.uint8
    t = t.to(torch.float32) / 255.0 if is_uint8 else t.to(torch.float32) if t.dtype != torch.float64 else t
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4:
        raise ValueError(f"texture must have shape (3, Ht, Wt) or (Ht, Wt, 3), got {tuple(t.shape)}.")
    if t.shape[1] not in (3, 4) and t.shape[-1] in (3, 4):
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] == 4:
        t = t[:, :3]
    if t.shape[1] != 3:
        raise ValueError(f"texture must have 3 colour channels, got shape {tuple(t.shape)}.")
    return t.contiguous()


def _uv_to_grid(uv: torch.Tensor, tex_h: int, tex_w: int) -> torch.Tensor:
    # align_corners=False: normalised -1 / +1 are the outer edges of the first / last texel
    scale = uv.new_tensor([2.0 / tex_w, 2.0 / tex_h])
    return uv * scale - 1.0


def sample_texture(texture, uv_pixels) -> torch.Tensor:
    """Bilinear texture look-up (``grid_sample``, align_corners=False, zero padding outside the texture, as the
    official renderer's).

    Args:
        texture: `(N or 1, 3, Ht, Wt)` float in [0, 1] (see :func:`as_texture` for other layouts).
        uv_pixels: `(N, H, W, 2)` texture pixel coordinates (u right, v down; texel (i, j) centred at
            (i + 0.5, j + 0.5)).

    Returns:
        `(N, H, W, 3)` sampled colours.
    """
    tex = texture if isinstance(texture, torch.Tensor) and texture.ndim == 4 and texture.shape[1] == 3 \
        else as_texture(texture)
    uv = _as_float_tensor(uv_pixels, device=tex.device).to(tex.dtype)
    if uv.ndim == 3:
        uv = uv.unsqueeze(0)
    if tex.shape[0] == 1 and uv.shape[0] > 1:
        tex = tex.expand(uv.shape[0], -1, -1, -1)
    if tex.shape[0] != uv.shape[0]:
        raise ValueError(f"texture batch {tex.shape[0]} does not match uv batch {uv.shape[0]}.")
    grid = _uv_to_grid(uv, tex.shape[2], tex.shape[3])
    out = F.grid_sample(tex, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.permute(0, 2, 3, 1)


def sample_texture_foreground(texture: torch.Tensor, uv: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """Sample `(B, 3, Ht, Wt)` at `(K, 2)` texture pixel coordinates of frames ``frame`` -> `(K, 3)` (zero
    padding, like :func:`sample_texture`)."""
    grid = _uv_to_grid(uv.to(texture.dtype), texture.shape[2], texture.shape[3])
    if texture.shape[0] == 1:
        out = F.grid_sample(texture, grid.view(1, 1, -1, 2), mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        return out.view(3, -1).t()
    # per-frame textures: one grid row per frame, padded to the largest frame
    num = texture.shape[0]
    counts = torch.bincount(frame, minlength=num)
    width = int(counts.max()) if counts.numel() else 0
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(frame.numel(), device=frame.device) - start[frame]
    padded = grid.new_zeros((num, 1, max(width, 1), 2))
    padded[frame, 0, pos] = grid
    out = F.grid_sample(texture, padded, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[frame, :, 0, pos]
