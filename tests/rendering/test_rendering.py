"""Analytic tests of the rasteriser and the guidance-map shaders (magicportrait.rendering)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from magicportrait.rendering import (
    DEFAULT_SH_LIGHT,
    EDGE_EPS,
    SH_CONSTANTS,
    Fragments,
    GuidanceRenderer,
    camera_normals,
    depth_map,
    interpolate,
    lambertian_shading,
    normal_map,
    rasterize,
    sample_texture,
    sh_basis,
    sh_shading,
    shaded_map,
    vertex_normals,
)
from magicportrait.rendering.rasterizer import rasterize_foreground
from magicportrait.types import GuidanceMaps

# ------------------------------------------------------------------------------------------------- mesh helpers


def quad(x0, y0, x1, y1, z=(5.0, 5.0, 5.0, 5.0)):
    """Axis-aligned rectangle as two front-facing triangles (normal z < 0)."""
    verts = torch.tensor([[x0, y0, z[0]], [x1, y0, z[1]], [x1, y1, z[2]], [x0, y1, z[3]]], dtype=torch.float32)
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    return verts, faces


def face_normal_z(verts, faces):
    tri = verts[faces].double()
    return torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]


def icosphere(level: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere with a vertex at each pole (0, 0, +-1), outward-wound (cross(v1-v0, v2-v0) points out)."""
    ring = np.arange(5) * 2 * np.pi / 5
    rad, height = 2 / np.sqrt(5), 1 / np.sqrt(5)
    upper = np.stack([rad * np.cos(ring), rad * np.sin(ring), np.full(5, height)], 1)
    lower = np.stack([rad * np.cos(ring + np.pi / 5), rad * np.sin(ring + np.pi / 5), np.full(5, -height)], 1)
    verts = np.concatenate([[[0.0, 0.0, 1.0]], upper, lower, [[0.0, 0.0, -1.0]]])
    faces = []
    for k in range(5):
        u0, u1 = 1 + k, 1 + (k + 1) % 5
        l0, l1 = 6 + k, 6 + (k + 1) % 5
        faces += [[0, u0, u1], [u0, l0, u1], [u1, l0, l1], [11, l1, l0]]
    faces = np.array(faces)
    for _ in range(level):
        edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
        uniq, inv = np.unique(edges, axis=0, return_inverse=True)
        mids = verts[uniq].mean(1)
        mid_idx = len(verts) + inv.reshape(3, -1).T  # (F, 3): midpoints of edges 01, 12, 20
        verts = np.concatenate([verts, mids])
        a, b, c = faces.T
        ab, bc, ca = mid_idx.T
        faces = np.concatenate([np.stack(t, 1) for t in ([a, ab, ca], [ab, b, bc], [ca, bc, c], [ab, bc, ca])])
        verts = verts / np.linalg.norm(verts, axis=1, keepdims=True)
    tri = verts[faces]
    outward = (np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]) * tri.mean(1)).sum(1) > 0
    faces = np.where(outward[:, None], faces, faces[:, ::-1])
    return verts, faces


SPHERE_R = 100.0
SPHERE_C = np.array([128.5, 128.5, 300.0])  # centre on pixel (128, 128)'s centre


@pytest.fixture(scope="module")
def sphere():
    unit, faces = icosphere(4)
    verts = torch.tensor(unit * SPHERE_R + SPHERE_C, dtype=torch.float32)
    faces = torch.tensor(faces)
    return verts, faces, rasterize(verts[None], faces, (256, 256))


def pixel_centres(h, w):
    jj, ii = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    return ii, jj


# --------------------------------------------------------------------------------------------------- rasteriser


def test_plane_constant_depth_exact_coverage():
    verts, faces = quad(10.25, 20.75, 60.25, 50.75, z=(7.0,) * 4)
    frags = rasterize(verts[None], faces, (64, 80))
    assert isinstance(frags, Fragments)
    assert frags.pix_to_face.shape == (1, 64, 80) and frags.pix_to_face.dtype == torch.int64
    assert frags.bary.shape == (1, 64, 80, 3) and frags.zbuf.shape == (1, 64, 80)
    expected = torch.zeros(64, 80, dtype=torch.bool)
    expected[21:51, 10:60] = True  # centres (i + 0.5) in [10.25, 60.25], (j + 0.5) in [20.75, 50.75]
    assert int(frags.mask.sum()) == 50 * 30
    assert torch.equal(frags.mask[0], expected)
    assert torch.all(frags.zbuf[0][expected] == 7.0)  # exact: the plane's float64 coefficients err by ~1e-15
    assert torch.all(torch.isinf(frags.zbuf[0][~expected]))
    assert torch.all(frags.pix_to_face[0][~expected] == -1)
    assert torch.all(frags.bary[0][~expected] == 0)
    torch.testing.assert_close(frags.bary[0][expected].sum(-1), torch.ones(1500))
    depth = depth_map(frags, verts[None], faces)  # flat mesh: the nearest depth (1) everywhere it is drawn
    assert torch.all(depth[frags.mask] == 1) and torch.all(depth[~frags.mask] == 0)


def test_edges_through_pixel_centres_are_inclusive():
    verts, faces = quad(10.5, 4.5, 20.5, 9.5)  # edges exactly on pixel centres
    frags = rasterize(verts[None], faces, (16, 32))
    assert int(frags.mask.sum()) == 11 * 6
    assert bool(frags.mask[0, 4:10, 10:21].all())


def test_tilted_plane_matches_plane_equation():
    a, b, c = 0.3, -0.7, 250.0
    x0, y0, x1, y1 = 3.3, 5.1, 90.7, 70.2
    z = [a * x + b * y + c for x, y in [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]]
    verts, faces = quad(x0, y0, x1, y1, z)
    frags = rasterize(verts[None], faces, (80, 96))
    ii, jj = pixel_centres(80, 96)
    inside = (ii >= x0) & (ii <= x1) & (jj >= y0) & (jj <= y1)
    assert torch.equal(frags.mask[0], inside)
    expected = (a * ii + b * jj + c)[inside]
    torch.testing.assert_close(frags.zbuf[0][inside].double(), expected, rtol=0, atol=1e-4)


def test_sphere_normal_map_matches_analytic(sphere):
    verts, faces, frags = sphere
    mask = frags.mask[0]
    ii, jj = pixel_centres(256, 256)
    dx, dy = (ii - SPHERE_C[0]) / SPHERE_R, (jj - SPHERE_C[1]) / SPHERE_R
    analytic = torch.stack([dx, -dy, torch.sqrt((1 - dx**2 - dy**2).clamp_min(0))], -1)  # camera space
    unit = camera_normals(frags, verts[None], faces, renormalise=True)[0].double()
    cos = (unit[mask] * analytic[mask]).sum(-1).clamp(-1, 1)
    angle = torch.rad2deg(torch.acos(cos))
    assert float(angle.mean()) < 2.0
    n_cam = camera_normals(frags, verts[None], faces)[0].double()  # the official: interpolated as they are
    length = n_cam[mask].norm(dim=-1)
    assert float(length.max()) <= 1 + 1e-6 and float(length.mean()) > 0.99  # a smooth sphere: close to unit
    torch.testing.assert_close(n_cam[mask] / length[:, None], unit[mask])
    nmap = normal_map(frags, verts[None], faces)[0]
    assert nmap.shape == (256, 256, 3) and float(nmap.min()) >= 0 and float(nmap.max()) <= 1
    torch.testing.assert_close(nmap[mask], n_cam[mask].clamp(0, 1).float())
    assert float((nmap[mask].double() - analytic[mask].clamp(0, 1)).abs().mean()) < 0.01
    assert torch.all(nmap[~mask] == 0)
    # the front of the sphere faces the camera: camera z > 0 where visible (up to the tessellation at the rim)
    assert float(n_cam[mask][:, 2].min()) > -0.02
    assert float((n_cam[mask][:, 2] > 0).float().mean()) > 0.99


def test_sphere_silhouette_area(sphere):
    _, _, frags = sphere
    area = float(frags.mask.sum())
    assert abs(area - math.pi * SPHERE_R**2) / (math.pi * SPHERE_R**2) < 0.01


def test_sphere_depth_map(sphere):
    verts, faces, frags = sphere
    depth = depth_map(frags, verts[None], faces)[0]
    assert depth.shape == (256, 256)
    assert float(depth[128, 128]) == pytest.approx(1.0, abs=1e-5)  # nearest vertex (front pole) on that centre
    assert torch.all(depth[~frags.mask[0]] == 0)
    assert float(depth.min()) >= 0 and float(depth.max()) <= 1
    # (zmax - z) / (zmax - zmin) with z = cz - sqrt(r^2 - d^2) on the front surface, zmax - zmin = 2r
    ii, jj = pixel_centres(256, 256)
    d2 = ((ii - SPHERE_C[0]) ** 2 + (jj - SPHERE_C[1]) ** 2) / SPHERE_R**2
    expected = 0.5 + 0.5 * torch.sqrt((1 - d2).clamp_min(0))
    inner = frags.mask[0] & (d2 < 0.8)
    assert float((depth[inner].double() - expected[inner]).abs().max()) < 0.005


def test_rotated_cube_silhouette_area():
    """Orthographic projection along z of a convex body: area = 1/2 * sum_faces |n_f . z| * A_f.

    With vertices rotated as ``v' = R v`` (row vectors: ``v @ R.T``), the cube's face normals +-e_k become
    +-R[:, k], whose z components are R[2, k]; each pair of opposite faces (area side^2) contributes
    side^2 * |R[2, k]|, so the silhouette area is side^2 * (|R[2, 0]| + |R[2, 1]| + |R[2, 2]|).
    """
    side = 100.0
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]) * side
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    faces = np.array([[q[0], q[1], q[2]] for q in quads] + [[q[0], q[2], q[3]] for q in quads])

    def rot(axis, angle):
        c, s = math.cos(angle), math.sin(angle)
        i, j = [(1, 2), (2, 0), (0, 1)][axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    r = rot(2, 0.4) @ rot(1, 0.7) @ rot(0, 0.5)
    verts = torch.tensor(corners @ r.T + np.array([128.3, 127.6, 400.0]), dtype=torch.float32)
    frags = rasterize(verts[None], torch.tensor(faces), (256, 256))
    expected = side**2 * np.abs(r[2]).sum()
    assert abs(float(frags.mask.sum()) - expected) / expected < 0.01
    # the visible surface is the front (smaller z) half: every pixel's z is <= the back surface
    assert float(frags.zbuf[frags.mask].max()) < 400.0 + side * np.abs(r[2]).sum() / 2


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
@pytest.mark.parametrize("depths", [(5.0, 9.0), (-9.0, -5.0), (-2.0, 3.0)])
def test_occlusion_nearest_wins(order, depths):
    zn, zf = depths
    near = [[10.0, 10.0, zn], [50.0, 12.0, zn], [20.0, 50.0, zn]]
    far = [[5.0, 20.0, zf], [60.0, 25.0, zf], [40.0, 60.0, zf]]
    tris = [near, far]
    verts = torch.tensor([tris[order[0]], tris[order[1]]], dtype=torch.float32).reshape(1, 6, 3)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(verts, faces, (64, 64))
    near_face = order.index(0)
    single_near = rasterize(torch.tensor([near]), torch.tensor([[0, 1, 2]]), (64, 64)).mask[0]
    single_far = rasterize(torch.tensor([far]), torch.tensor([[0, 1, 2]]), (64, 64)).mask[0]
    overlap = single_near & single_far
    assert int(overlap.sum()) > 100
    assert torch.all(frags.pix_to_face[0][single_near] == near_face)
    assert torch.all(frags.zbuf[0][single_near] == zn)
    assert torch.all(frags.pix_to_face[0][single_far & ~single_near] == 1 - near_face)
    assert torch.equal(frags.mask[0], single_near | single_far)


def test_equal_depth_tie_goes_to_larger_face_index():
    verts = torch.tensor([[[5.0, 5.0, 3.0], [40.0, 6.0, 3.0], [10.0, 30.0, 3.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 1], [0, 1, 2]])  # the same triangle three times, both windings
    frags = rasterize(verts, faces, (40, 48))
    assert int(frags.mask.sum()) > 0
    assert torch.all(frags.pix_to_face[frags.mask] == 2)


def test_both_windings_and_backface_culling():
    verts = torch.tensor([[[5.0, 5.0, 3.0], [40.0, 6.0, 3.0], [10.0, 30.0, 3.0]]])
    front = torch.tensor([[0, 2, 1]])
    back = torch.tensor([[0, 1, 2]])
    assert float(face_normal_z(verts[0], front)) < 0 < float(face_normal_z(verts[0], back))
    m_front = rasterize(verts, front, (40, 48)).mask
    m_back = rasterize(verts, back, (40, 48)).mask
    assert int(m_front.sum()) > 200 and torch.equal(m_front, m_back)
    assert torch.equal(rasterize(verts, front, (40, 48), cull_backfaces=True).mask, m_front)
    assert int(rasterize(verts, back, (40, 48), cull_backfaces=True).mask.sum()) == 0


def test_jittered_grid_has_no_cracks():
    rng = np.random.default_rng(3)
    n = 40
    x0, y0, cell = 7.3, 5.6, 4.7
    gx, gy = np.meshgrid(np.arange(n + 1) * cell + x0, np.arange(n + 1) * cell + y0, indexing="xy")
    jitter = rng.uniform(-0.4, 0.4, (2, n + 1, n + 1)) * cell
    jitter[:, [0, -1], :] = 0
    jitter[:, :, [0, -1]] = 0
    xy = np.stack([gx + jitter[0], gy + jitter[1]], -1).reshape(-1, 2)
    z = 50 + rng.uniform(0, 3, (n + 1) * (n + 1))
    verts = torch.tensor(np.concatenate([xy, z[:, None]], 1), dtype=torch.float32)
    idx = np.arange((n + 1) * (n + 1)).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    flip = rng.random(a.size) < 0.5  # both diagonal directions
    faces = np.concatenate([np.where(flip[:, None], np.stack([a, b, d], 1), np.stack([a, b, c], 1)),
                            np.where(flip[:, None], np.stack([a, d, c], 1), np.stack([b, d, c], 1))])
    size = (200, 200)
    frags = rasterize(verts[None], torch.tensor(faces), size)
    ii, jj = pixel_centres(*size)
    x1, y1 = x0 + n * cell, y0 + n * cell
    inside = (ii >= x0) & (ii <= x1) & (jj >= y0) & (jj <= y1)
    assert torch.equal(frags.mask[0], inside)  # no hole inside, nothing outside
    # the winner really contains the pixel centre: its barycentrics reproduce the pixel position
    pos = interpolate(frags, torch.tensor(faces), verts[None, :, :2].double())[0]
    torch.testing.assert_close(pos[inside], torch.stack([ii, jj], -1)[inside], rtol=0, atol=1e-3)
    assert float(frags.bary[0][inside].min()) >= 0


def test_fan_of_thin_triangles_covers_disk():
    k, radius = 100, 60.0
    centre = np.array([64.2, 63.7])
    angles = np.arange(k) * 2 * np.pi / k
    rim = centre + radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    xy = np.concatenate([[centre], rim])
    verts = torch.tensor(np.concatenate([xy, np.full((k + 1, 1), 10.0)], 1), dtype=torch.float32)
    faces = torch.tensor([[0, 1 + i, 1 + (i + 1) % k] for i in range(k)])
    frags = rasterize(verts[None], faces, (128, 128))
    ii, jj = pixel_centres(128, 128)
    # inside the 100-gon: on the inner side of every rim edge
    inside = torch.ones(128, 128, dtype=torch.bool)
    rim64 = verts[1:, :2].double()
    for i in range(k):
        p, q = rim64[i], rim64[(i + 1) % k]
        inside &= (q[0] - p[0]) * (jj - p[1]) - (q[1] - p[1]) * (ii - p[0]) >= 0
    assert torch.equal(frags.mask[0], inside)
    assert abs(float(inside.sum()) - math.pi * radius**2) / (math.pi * radius**2) < 0.01


def test_batch_equals_single_frames():
    unit, faces = icosphere(2)
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(3):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        frames.append(unit @ q.T * rng.uniform(20, 40) + np.array([*rng.uniform(20, 76, 2), 100.0]))
    verts = torch.tensor(np.stack(frames), dtype=torch.float32)
    faces = torch.tensor(faces)
    batch = rasterize(verts, faces, (96, 96))
    for b in range(3):
        single = rasterize(verts[b:b + 1], faces, (96, 96))
        assert torch.equal(batch.pix_to_face[b], single.pix_to_face[0])
        torch.testing.assert_close(batch.bary[b], single.bary[0], rtol=0, atol=0)
        torch.testing.assert_close(batch.zbuf[b], single.zbuf[0], rtol=0, atol=0)


def reference_rasterize(verts: np.ndarray, faces: np.ndarray, h: int, w: int):
    """Obviously-correct per-pixel loop: inside if all barycentrics >= 0, keep the smallest z."""
    p2f = np.full((h, w), -1)
    bary = np.zeros((h, w, 3))
    zbuf = np.full((h, w), np.inf)
    for j in range(h):
        for i in range(w):
            px, py = i + 0.5, j + 0.5
            for f, (a, b, c) in enumerate(faces):
                (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = verts[a], verts[b], verts[c]
                area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
                if area == 0:
                    continue
                w0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) / area
                w1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) / area
                w2 = ((x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)) / area
                if min(w0, w1, w2) < 0:
                    continue
                z = w0 * z0 + w1 * z1 + w2 * z2
                if z < zbuf[j, i]:
                    zbuf[j, i], p2f[j, i], bary[j, i] = z, f, (w0, w1, w2)
    return p2f, bary, zbuf


def test_matches_per_pixel_reference():
    rng = np.random.default_rng(7)
    num, size = 20, 48
    verts = np.empty((num * 3, 3))
    verts[:, :2] = rng.uniform(-8, size + 8, (num * 3, 2))
    # disjoint depth ranges per triangle: no ties between triangles
    verts[:, 2] = np.repeat(np.arange(num) * 10.0, 3) + rng.uniform(0, 4, num * 3)
    order = rng.permutation(num)
    faces = np.stack([order * 3, order * 3 + 1, order * 3 + 2], 1)
    p2f, bary, zbuf = reference_rasterize(verts, faces, size, size)
    frags = rasterize(torch.tensor(verts[None], dtype=torch.float32), torch.tensor(faces), (size, size))
    assert (p2f >= 0).sum() > 1000
    np.testing.assert_array_equal(frags.pix_to_face[0].numpy(), p2f)
    # float32 rounding of the vertices and of the rasteriser's w0 + wa * di + wb * dj (terms in the hundreds for these
    # slivers): up to 6e-6 from the float64 loop with FMA kernels, 2.3e-5 without (ATEN_CPU_CAPABILITY=default); a
    # pixel centre taken half a pixel off moves every pixel's barycentrics by >= 9.8e-3.
    np.testing.assert_allclose(frags.bary[0].numpy(), bary, rtol=0, atol=5e-5)
    np.testing.assert_allclose(frags.zbuf[0].numpy(), zbuf.astype(np.float32), rtol=1e-5)


def test_vertex_colour_interpolation_exact():
    verts = torch.tensor([[[10.5, 10.5, 1.0], [40.5, 10.5, 1.0], [10.5, 40.5, 1.0]]])
    faces = torch.tensor([[0, 1, 2]])
    colors = torch.eye(3)[None]
    frags = rasterize(verts, faces, (48, 48))
    img = interpolate(frags, faces, colors)[0]
    torch.testing.assert_close(img[10, 10], torch.tensor([1.0, 0, 0]))
    torch.testing.assert_close(img[10, 40], torch.tensor([0, 1.0, 0]))
    torch.testing.assert_close(img[40, 10], torch.tensor([0, 0, 1.0]))
    torch.testing.assert_close(img[25, 25], torch.tensor([0, 0.5, 0.5]))  # midpoint of edge v1-v2
    torch.testing.assert_close(img[10, 25], torch.tensor([0.5, 0.5, 0]))  # midpoint of edge v0-v1
    assert torch.all(img[~frags.mask[0]] == 0)
    # (V, C) attributes broadcast to all frames
    torch.testing.assert_close(interpolate(frags, faces, colors[0]), interpolate(frags, faces, colors))


# ---------------------------------------------------------------------------------------------------- shading


def test_sh_constants_and_dc_only_light_is_constant():
    expected = [0.282095, 1.023327, 1.023327, 1.023327, 0.858086, 0.858086, 0.858086, 0.429043, 0.247708]
    np.testing.assert_allclose(SH_CONSTANTS, expected, atol=1e-6)
    normals = torch.nn.functional.normalize(torch.randn(500, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    basis = sh_basis(normals)
    assert basis.shape == (500, 9)
    torch.testing.assert_close(basis[:, 8], SH_CONSTANTS[8] * (3 * normals[:, 2] ** 2 - 1))
    light = torch.zeros(9, 3)
    light[0] = torch.tensor([1.0, 2.0, 3.0])
    shade = sh_shading(normals, light)
    torch.testing.assert_close(shade, (SH_CONSTANTS[0] * torch.tensor([1.0, 2.0, 3.0])).expand(500, 3))
    # per-frame coefficients
    shade_b = sh_shading(normals.view(2, 250, 3), torch.stack([light, 2 * light]))
    torch.testing.assert_close(shade_b[1], 2 * shade_b[0])


def test_default_light_range_on_front_facing_normals():
    # normals of the front hemisphere tilted at most 60 degrees from the camera axis
    theta = torch.linspace(0, math.radians(60), 20)
    phi = torch.linspace(0, 2 * math.pi, 36)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    normals = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1).reshape(-1, 3)
    shade = sh_shading(normals, DEFAULT_SH_LIGHT)
    assert float(shade.min()) >= 0.6 and float(shade.max()) <= 1.0 + 1e-6
    torch.testing.assert_close(shade[:, 0], shade[:, 2])  # grey light
    # matches its definition 0.7 + 0.3 * cos(angle to normalize(0, 0.5, 1)) and the Lambertian helper
    d = torch.nn.functional.normalize(torch.tensor([0.0, 0.5, 1.0]), dim=0)
    torch.testing.assert_close(shade[:, 0], 0.7 + 0.3 * normals @ d)
    torch.testing.assert_close(lambertian_shading(normals), 0.7 + 0.3 * (normals @ d).clamp_min(0))


def test_second_order_sh_matches_basis_product():
    gen = torch.Generator().manual_seed(1)
    light = torch.randn(9, 3, generator=gen)
    normals = torch.nn.functional.normalize(torch.randn(64, 3, generator=gen), dim=1)
    torch.testing.assert_close(sh_shading(normals, light), sh_basis(normals) @ light)
    # the compact renderer path (shaded_map) agrees with sh_shading
    verts = torch.tensor([[[2.0, 2.0, 1.0], [30.0, 2.0, 1.0], [2.0, 30.0, 1.0]]])
    faces = torch.tensor([[0, 2, 1]])
    frags = rasterize(verts, faces, (32, 32))
    n_img = torch.nn.functional.normalize(torch.randn(1, 32, 32, 3, generator=gen), dim=-1)
    albedo = torch.full((1, 32, 32, 3), 0.5)
    out = shaded_map(frags, n_img, albedo, light)
    m = frags.mask
    torch.testing.assert_close(out[m], (0.5 * sh_shading(n_img[m], light)).clamp(0, 1))
    assert torch.all(out[~m] == 0)


def test_vertex_normals_of_flat_front_quad():
    verts, faces = quad(0.0, 0.0, 10.0, 10.0)
    n = vertex_normals(verts[None], faces)
    torch.testing.assert_close(n, torch.tensor([0.0, 0.0, -1.0]).expand(1, 4, 3))


# ---------------------------------------------------------------------------------------------------- texture


def test_sample_texture_identity():
    gen = torch.Generator().manual_seed(2)
    tex = torch.rand(1, 3, 20, 30, generator=gen)
    ii, jj = pixel_centres(20, 30)
    uv = torch.stack([ii, jj], -1).float()[None]
    torch.testing.assert_close(sample_texture(tex, uv)[0], tex[0].permute(1, 2, 0))
    # half-way between two texel centres: their mean; beyond the border: zero (the official padding)
    uv2 = torch.tensor([[[[1.0, 0.5], [-5.0, 0.5]]]])
    out = sample_texture(tex, uv2)[0, 0]
    torch.testing.assert_close(out[0], tex[0, :, 0, :2].mean(-1))
    torch.testing.assert_close(out[1], torch.zeros(3))


def test_render_textured_full_image_quad_reproduces_image():
    h, w = 48, 64
    gen = torch.Generator().manual_seed(3)
    image = (torch.rand(h, w, 3, generator=gen) * 255).to(torch.uint8)
    verts, faces = quad(0.0, 0.0, float(w), float(h))
    renderer = GuidanceRenderer(faces, image_size=(h, w))
    out, mask = renderer.render_textured(verts[None], image.numpy(), verts[:, :2].numpy())
    assert out.shape == (1, h, w, 3) and bool(mask.all())
    ref = image.float() / 255
    mse = float(((out[0] - ref) ** 2).mean())
    assert 10 * math.log10(1.0 / max(mse, 1e-12)) > 40
    # composited over a background outside a smaller quad
    small, faces_s = quad(8.0, 8.0, 24.0, 24.0)
    renderer2 = GuidanceRenderer(faces_s, image_size=(h, w))
    bg = torch.full((h, w, 3), 0.25)
    out2, mask2 = renderer2.render_textured(small, image, small[:, :2], background=bg)
    assert int(mask2.sum()) == 16 * 16
    assert torch.all(out2[~mask2] == 0.25)
    torch.testing.assert_close(out2[0, 8:24, 8:24], ref[8:24, 8:24])


# ------------------------------------------------------------------------------------------- robustness / misc


def test_degenerate_and_out_of_image_triangles():
    verts = torch.tensor([[
        [5.0, 5.0, 1.0], [5.0, 5.0, 1.0], [5.0, 5.0, 1.0],  # a point
        [2.0, 2.0, 1.0], [10.0, 10.0, 1.0], [20.0, 20.0, 1.0],  # collinear
        [-50.0, -50.0, 1.0], [-10.0, -50.0, 1.0], [-30.0, -10.0, 1.0],  # left/above the image
        [100.0, 100.0, 1.0], [150.0, 100.0, 1.0], [120.0, 140.0, 1.0],  # right/below
        [float("nan"), 3.0, 1.0], [10.0, 3.0, 1.0], [5.0, 9.0, 1.0],  # non-finite
        [2.0, 3.0, float("inf")], [30.0, 3.0, 1.0], [5.0, 29.0, 1.0],
        [-1e4, -1e4, 9.0], [1e4, -1e4, 9.0], [0.0, 1e4, 9.0],  # huge, covers the whole image
    ]])
    faces = torch.arange(21).view(7, 3)
    frags = rasterize(verts, faces, (32, 32))
    assert bool(frags.mask.all()) and torch.all(frags.pix_to_face == 6)
    torch.testing.assert_close(frags.zbuf, torch.full((1, 32, 32), 9.0))
    only_bad = rasterize(verts[:, :18], faces[:6], (32, 32))
    assert int(only_bad.mask.sum()) == 0 and torch.all(torch.isinf(only_bad.zbuf))
    empty = rasterize(verts, torch.zeros((0, 3), dtype=torch.int64), (8, 8))
    assert empty.pix_to_face.shape == (1, 8, 8) and int(empty.mask.sum()) == 0
    with pytest.raises(ValueError):
        rasterize(verts, torch.tensor([[0, 1, 99]]), (8, 8))


def test_chunking_gives_identical_result(sphere):
    verts, faces, frags = sphere
    big, bfaces = quad(-3.0, -2.0, 300.0, 290.0, z=(900.0,) * 4)  # a background wall behind the sphere
    allv = torch.cat([verts, big])[None]
    allf = torch.cat([faces, bfaces + verts.shape[0]])
    ref = rasterize(allv, allf, (256, 256))
    for kwargs in ({"max_chunk": 1000}, {"max_rows": 300}, {"max_chunk": 300, "max_rows": 1}):
        small = rasterize(allv, allf, (256, 256), **kwargs)
        assert torch.equal(ref.pix_to_face, small.pix_to_face)
        assert torch.equal(ref.bary, small.bary) and torch.equal(ref.zbuf, small.zbuf)
    assert bool(ref.mask.all()) and torch.equal(ref.pix_to_face[frags.mask], frags.pix_to_face[frags.mask])


def test_float64_input():
    unit, faces = icosphere(2)
    verts = torch.tensor(unit * 30 + np.array([32.3, 31.8, 100.0]))[None]
    faces = torch.tensor(faces)
    f64 = rasterize(verts, faces, (64, 64))
    f32 = rasterize(verts.float(), faces, (64, 64))
    assert f64.bary.dtype == torch.float64 and f64.zbuf.dtype == torch.float64
    assert torch.equal(f64.pix_to_face, f32.pix_to_face)
    torch.testing.assert_close(f64.bary.float(), f32.bary, atol=1e-5, rtol=0)
    assert normal_map(f64, verts, faces).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(sphere):
    verts, faces, frags = sphere
    gpu = rasterize(verts[None].cuda(), faces.cuda(), (256, 256))
    assert torch.equal(gpu.pix_to_face.cpu(), frags.pix_to_face)
    torch.testing.assert_close(gpu.bary.cpu(), frags.bary, atol=1e-5, rtol=0)
    maps = GuidanceRenderer(faces, (256, 256), device="cuda").render(verts)
    ref = GuidanceRenderer(faces, (256, 256)).render(verts)
    torch.testing.assert_close(maps.normal.cpu(), ref.normal, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------------------- renderer


def test_guidance_renderer_maps(sphere):
    verts, faces, frags = sphere
    renderer = GuidanceRenderer(faces.numpy(), image_size=(256, 256))
    maps = renderer.render(verts.numpy())  # numpy (V, 3) input
    assert isinstance(maps, GuidanceMaps)
    assert maps.depth.shape == (1, 256, 256) and maps.normal.shape == (1, 256, 256, 3)
    assert maps.render.shape == (1, 256, 256, 3) and maps.mask.dtype == torch.bool
    assert torch.equal(maps.mask, frags.mask)
    torch.testing.assert_close(maps.depth, depth_map(frags, verts[None], faces))
    torch.testing.assert_close(maps.normal, normal_map(frags, verts[None], faces))
    for m in (maps.depth, maps.normal, maps.render):
        assert float(m.min()) >= 0 and float(m.max()) <= 1 and torch.all(m[~maps.mask] == 0)
    # default albedo 0.7 under the default light: 0.7 * (0.7 + 0.3 cos) at the centre (normal (0, 0, 1))
    expected = 0.7 * (0.7 + 0.3 / math.sqrt(1.25))
    torch.testing.assert_close(maps.render[0, 128, 128], torch.full((3,), expected), atol=2e-3, rtol=0)
    u8 = maps.to_uint8()
    assert set(u8) == {"depth", "normal", "render"}
    for v in u8.values():
        assert v.shape == (1, 256, 256, 3) and v.dtype == np.uint8
    assert np.array_equal(u8["depth"][..., 0], u8["depth"][..., 2]) and u8["depth"][0, 128, 128, 0] == 255


def test_guidance_renderer_albedo_sources():
    verts, faces = quad(4.0, 4.0, 28.0, 28.0)
    renderer = GuidanceRenderer(faces, image_size=(32, 32), sh_light=torch.cat([
        torch.full((1, 3), 1.0 / SH_CONSTANTS[0]), torch.zeros(8, 3)]))  # shading == 1 everywhere
    colors = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    maps = renderer.render(verts[None].expand(2, 4, 3), vertex_colors=colors)
    m = maps.mask[0]
    ii, jj = pixel_centres(32, 32)
    t = ((jj - 4.0) / 24.0).float()  # red at the top, blue at the bottom
    torch.testing.assert_close(maps.render[1][m], torch.stack([1 - t, 0 * t, t], -1)[m], atol=1e-5, rtol=0)
    tex = np.zeros((32, 32, 3), np.uint8)
    tex[..., 1] = 255
    green = renderer.render(verts, texture=tex, uv=verts[:, :2])
    torch.testing.assert_close(green.render[0][m], torch.tensor([0.0, 1.0, 0.0]).expand(int(m.sum()), 3))
    plain = renderer.render(verts)
    torch.testing.assert_close(plain.render[0][m], torch.full((int(m.sum()), 3), 0.7))
    # per-frame textures (batched texture) are sampled frame by frame
    tex2 = np.zeros((2, 32, 32, 3), np.uint8)
    tex2[0, ..., 0] = 255
    tex2[1, ..., 2] = 255
    out, mask = renderer.render_textured(verts[None].expand(2, 4, 3), tex2, verts[:, :2])
    torch.testing.assert_close(out[0][mask[0]], torch.tensor([1.0, 0, 0]).expand(int(m.sum()), 3))
    torch.testing.assert_close(out[1][mask[1]], torch.tensor([0, 0, 1.0]).expand(int(m.sum()), 3))
    with pytest.raises(ValueError):
        renderer.render(verts, texture=tex)


def test_foreground_is_compact_form_of_fragments(sphere):
    verts, faces, frags = sphere
    fg = rasterize_foreground(verts[None], faces, (256, 256))
    assert fg.num_pixels == int(frags.mask.sum())
    assert torch.equal(fg.mask(), frags.mask)
    assert torch.equal(fg.scatter(fg.face, -1), frags.pix_to_face)
    full = frags.foreground()
    assert torch.equal(full.pixel_index, fg.pixel_index) and torch.equal(full.bary, fg.bary)
    assert EDGE_EPS < 1e-3


def test_render_uint8_matches_render_to_uint8():
    # A tilted quad textured with a gradient: every map has many distinct values.
    vertices = torch.tensor([[[8.0, 8.0, 10.0], [56.0, 10.0, 30.0], [54.0, 58.0, 50.0], [6.0, 52.0, 20.0]]])
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    texture = np.linspace(0, 255, 64 * 64 * 3).reshape(64, 64, 3).astype(np.uint8)
    renderer = GuidanceRenderer(faces, image_size=(64, 64))
    uv = vertices[0, :, :2]
    expected = renderer.render(vertices, texture=texture, uv=uv).to_uint8()
    fast = renderer.render_uint8(vertices, texture=texture, uv=uv)
    for name in ("depth", "normal", "render"):
        np.testing.assert_array_equal(fast[name], expected[name])
        assert len(np.unique(fast[name])) > 10
