"""Benchmark of the guidance-map renderer (rasterise once + depth + normal + render maps) on CPU.

Meshes (synthetic, built here):
  face  - MediaPipe-like: ~470 vertices / ~900 triangles, a Delaunay-triangulated ellipsoid cap ~300 px wide;
  flame - FLAME-size: a latitude/longitude ellipsoid with ~5k vertices / ~10k triangles, ~240 x 320 px.

Baseline ("naive"): the same maps from a rasteriser that loops over triangles in Python (each triangle
vectorised over its bounding box, z-test by ``torch.where``), timed on a few frames.

Run: ``python benchmarks/bench_rendering.py [--frames 60] [--size 512] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import ctypes
import time

import numpy as np
import torch

from magicportrait.rendering import Fragments, GuidanceRenderer, depth_map, normal_map, shaded_map
from magicportrait.rendering.shading import DEFAULT_SH_LIGHT, camera_normals


def face_like_mesh(size: int = 512, num_points: int = 470, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A ~300 px (at 512) ellipsoid cap: Delaunay triangulation of jittered points in a disk, front-facing."""
    from scipy.spatial import Delaunay

    rng = np.random.default_rng(seed)
    radius = 150.0 * size / 512
    # Fibonacci-disk points + a boundary ring give a uniform triangulation of the disk
    num_ring = 60
    k = np.arange(num_points - num_ring) + 0.5
    r = radius * 0.97 * np.sqrt(k / k.size)
    theta = k * np.pi * (3 - np.sqrt(5))
    inner = np.stack([r * np.cos(theta), r * np.sin(theta)], 1) + rng.normal(0, 0.5, (k.size, 2))
    phi = np.linspace(0, 2 * np.pi, num_ring, endpoint=False)
    ring = radius * np.stack([np.cos(phi), np.sin(phi)], 1)
    xy = np.concatenate([inner, ring])
    faces = Delaunay(xy).simplices.astype(np.int64)
    rr = np.clip((xy**2).sum(1) / (radius * 1.02) ** 2, 0, 1)
    z = 2.0 * radius - 0.8 * radius * np.sqrt(1 - rr)  # nearest (smallest z) in the middle
    verts = np.concatenate([xy * np.array([0.85, 1.0]) + size / 2, z[:, None]], 1).astype(np.float32)
    return verts, _front_facing(verts, faces)


def ellipsoid_mesh(size: int = 512, num_lat: int = 72, num_lon: int = 70) -> tuple[np.ndarray, np.ndarray]:
    """A closed latitude/longitude ellipsoid (2 * num_lon * (num_lat - 1) triangles; ~10k by default)."""
    axes = np.array([120.0, 160.0, 110.0]) * size / 512
    lat = np.linspace(0, np.pi, num_lat + 1)[1:-1]
    lon = np.linspace(0, 2 * np.pi, num_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    pts = np.stack([np.sin(la) * np.cos(lo), -np.cos(la), np.sin(la) * np.sin(lo)], -1).reshape(-1, 3)
    pts = np.concatenate([pts, [[0, -1, 0], [0, 1, 0]]])
    top, bottom = len(pts) - 2, len(pts) - 1
    faces = []
    idx = np.arange((num_lat - 1) * num_lon).reshape(num_lat - 1, num_lon)
    nxt = np.roll(idx, -1, axis=1)
    a, b, c, d = idx[:-1], nxt[:-1], idx[1:], nxt[1:]
    faces.append(np.stack([a, b, d], -1).reshape(-1, 3))
    faces.append(np.stack([a, d, c], -1).reshape(-1, 3))
    faces.append(np.stack([np.full(num_lon, top), nxt[0], idx[0]], -1))
    faces.append(np.stack([np.full(num_lon, bottom), idx[-1], nxt[-1]], -1))
    faces = np.concatenate(faces).astype(np.int64)
    verts = (pts * axes + np.array([size / 2, size / 2, 2 * size])).astype(np.float32)
    # orient outward: normal . (centroid - centre) > 0
    tri = verts[faces].astype(np.float64)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = (normal * (tri.mean(1) - verts.mean(0))).sum(1) < 0
    faces[flip] = faces[flip][:, ::-1]
    return verts, faces


def _front_facing(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = verts[faces].astype(np.float64)
    nz = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - \
         (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0])
    faces = faces.copy()
    faces[nz > 0] = faces[nz > 0][:, ::-1]
    return faces


def animate(verts: np.ndarray, num_frames: int, size: int) -> np.ndarray:
    """Frames of a small head motion (yaw/pitch up to ~12 degrees) about the image centre."""
    out = np.empty((num_frames, *verts.shape), np.float32)
    centre = np.array([size / 2, size / 2, verts[:, 2].mean()])
    for t in range(num_frames):
        yaw, pitch = 0.2 * np.sin(2 * np.pi * t / 30), 0.1 * np.sin(2 * np.pi * t / 45)
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        rot = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        out[t] = (verts - centre) @ rot.T + centre
    return out


def naive_rasterize(vertices: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int]) -> Fragments:
    """Baseline: a Python loop over frames and triangles, each vectorised over its clipped bounding box."""
    n = vertices.shape[0]
    h, w = image_size
    p2f = torch.full((n, h, w), -1, dtype=torch.int64)
    zbuf = torch.full((n, h, w), float("inf"))
    bary = torch.zeros((n, h, w, 3))
    for b in range(n):
        for f, (i0, i1, i2) in enumerate(faces.tolist()):
            v0, v1, v2 = vertices[b, i0], vertices[b, i1], vertices[b, i2]
            area = float((v1[0] - v0[0]) * (v2[1] - v0[1]) - (v1[1] - v0[1]) * (v2[0] - v0[0]))
            if abs(area) < 1e-10:
                continue
            xs = torch.stack([v0[0], v1[0], v2[0]])
            ys = torch.stack([v0[1], v1[1], v2[1]])
            c0, c1 = max(int(np.ceil(float(xs.min()) - 0.5)), 0), min(int(np.floor(float(xs.max()) - 0.5)), w - 1)
            r0, r1 = max(int(np.ceil(float(ys.min()) - 0.5)), 0), min(int(np.floor(float(ys.max()) - 0.5)), h - 1)
            if c1 < c0 or r1 < r0:
                continue
            py, px = torch.meshgrid(torch.arange(r0, r1 + 1) + 0.5, torch.arange(c0, c1 + 1) + 0.5, indexing="ij")
            w0 = ((v2[0] - v1[0]) * (py - v1[1]) - (v2[1] - v1[1]) * (px - v1[0])) / area
            w1 = ((v0[0] - v2[0]) * (py - v2[1]) - (v0[1] - v2[1]) * (px - v2[0])) / area
            w2 = 1 - w0 - w1
            z = w0 * v0[2] + w1 * v1[2] + w2 * v2[2]
            zb = zbuf[b, r0:r1 + 1, c0:c1 + 1]
            hit = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (z < zb)
            zbuf[b, r0:r1 + 1, c0:c1 + 1] = torch.where(hit, z, zb)
            p2f[b, r0:r1 + 1, c0:c1 + 1] = torch.where(hit, f, p2f[b, r0:r1 + 1, c0:c1 + 1])
            bary[b, r0:r1 + 1, c0:c1 + 1] = torch.where(hit[..., None], torch.stack([w0, w1, w2], -1),
                                                         bary[b, r0:r1 + 1, c0:c1 + 1])
    return Fragments(pix_to_face=p2f, bary=bary, zbuf=zbuf)


def _naive_maps(vertices: torch.Tensor, faces: torch.Tensor, size: int):
    frags = naive_rasterize(vertices, faces, (size, size))
    depth = depth_map(frags, vertices, faces)
    normal = normal_map(frags, vertices, faces)
    render = shaded_map(frags, camera_normals(frags, vertices, faces), torch.full((1, 1, 1, 3), 0.7)
                        .expand(*frags.shape, 3), DEFAULT_SH_LIGHT)
    return depth, normal, render


def _time_fast(renderer: GuidanceRenderer, frames: torch.Tensor, batch: int, repeats: int = 2) -> float:
    renderer.render(frames[:batch])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for b in range(0, frames.shape[0], batch):
            renderer.render(frames[b:b + batch])
        best = min(best, time.perf_counter() - start)
    return frames.shape[0] / best


def keep_freed_memory() -> bool:
    """glibc only: stop malloc from returning freed memory to the OS (mallopt), so that big tensors freed by one
    frame are reused by the next instead of being page-faulted in again. Process-wide and irreversible, hence only
    an opt-in measured separately here (an application can do the same at start-up)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def run(num_frames: int = 60, size: int = 512, batch: int = 4, naive_frames: int = 2,
        threads: int | None = 2, tuned_malloc: bool = False) -> dict:
    """Frames/s of rasterise + depth + normal + render maps (one raster pass) for the face and FLAME-size meshes.

    Returns ``{mesh: {"vertices", "faces", "fps", "naive_fps", "speedup", "coverage"}}`` (plus "fps_tuned_malloc"
    when ``tuned_malloc``: the same after :func:`keep_freed_memory`).
    """
    if threads:
        torch.set_num_threads(threads)
    meshes = {"face (~900 tris)": face_like_mesh(size), "flame-size (~10k tris)": ellipsoid_mesh(size)}
    results = {}
    for name, (verts, faces) in meshes.items():
        frames = torch.from_numpy(animate(verts, num_frames, size))
        faces_t = torch.from_numpy(faces)
        renderer = GuidanceRenderer(faces_t, (size, size))
        fps = _time_fast(renderer, frames, batch)
        maps = renderer.render(frames[:1])
        start = time.perf_counter()
        _naive_maps(frames[:naive_frames], faces_t, size)
        naive_fps = naive_frames / (time.perf_counter() - start)
        results[name] = {"vertices": int(verts.shape[0]), "faces": int(faces.shape[0]), "fps": fps,
                         "naive_fps": naive_fps, "speedup": fps / naive_fps,
                         "coverage": float(maps.mask.float().mean())}
    if tuned_malloc and keep_freed_memory():
        for name, (verts, faces) in meshes.items():
            renderer = GuidanceRenderer(torch.from_numpy(faces), (size, size))
            frames = torch.from_numpy(animate(verts, num_frames, size))
            results[name]["fps_tuned_malloc"] = _time_fast(renderer, frames, batch)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-tuned-malloc", action="store_true", help="skip the mallopt-tuned measurement")
    args = parser.parse_args()
    results = run(args.frames, args.size, args.batch, threads=args.threads, tuned_malloc=not args.no_tuned_malloc)
    print(f"guidance maps (depth + normal + render, one raster pass), {args.size}x{args.size}, "
          f"{torch.get_num_threads()} CPU threads, batch {args.batch}, best of 2 passes over {args.frames} frames")
    print(f"{'mesh':<24}{'verts':>7}{'faces':>7}{'cover':>7}{'frames/s':>10}{'naive f/s':>11}{'speed-up':>10}"
          f"{'f/s tuned malloc':>18}")
    for name, r in results.items():
        tuned = f"{r['fps_tuned_malloc']:>18.1f}" if "fps_tuned_malloc" in r else f"{'-':>18}"
        print(f"{name:<24}{r['vertices']:>7}{r['faces']:>7}{r['coverage']:>7.1%}{r['fps']:>10.1f}"
              f"{r['naive_fps']:>11.2f}{r['speedup']:>9.0f}x{tuned}")


if __name__ == "__main__":
    main()
