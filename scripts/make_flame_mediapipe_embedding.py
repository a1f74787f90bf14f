"""Derive the MediaPipe-478 -> FLAME surface correspondence (``heads/data/flame_mediapipe_embedding.npz``).

Run once (the result is committed; it holds only face indices and barycentric coordinates, no FLAME data)::

    python scripts/make_flame_mediapipe_embedding.py [--flame PATH_TO_FLAME_NPZ]

Method (our own derivation; no third-party landmark embedding is used):

1. Load the FLAME template (``v_template``, ``f``; FLAME frame: x to the subject's left, y up, z toward the
   viewer, metres). Its three connected components are the head and the two eyeballs.
2. Colour it: skin albedo (0.85, 0.68, 0.58) on the head; each eyeball gets a white sclera, a brown iris disc
   (angular radius ``IRIS_DEG`` about the eyeball's forward (+z) pole, ~5.9 mm radius on a 13 mm eyeball) and a
   black pupil. A stronger directional SH light than the renderer's default (ambient 0.35 + 0.65 cos to a
   frontal-top-right direction) gives the shading cues; the background is mid-grey (128). MediaPipe finds the
   face on every view with this (the default grey render, black or grey background, is found too; the painted
   eyes give the iris model an iris to find).
3. Render the views ``YAWS`` x ``PITCHES`` x ``SCALES`` with :class:`GuidanceRenderer` at 512 x 512: FLAME to
   image space is ``image = (x, -y, -z) * scale + centre`` after the rotation, so the face fills ~40-50 % of
   the frame.
4. Track each render with :class:`magicportrait.tracking.FaceTracker` (MediaPipe Face Mesh, static, refined:
   the same code path the pipeline uses). For each landmark's sub-pixel (x, y) look up the faces that cover
   the 3 x 3 pixels around it (``rasterize``' ``pix_to_face``), recompute exact barycentrics of (x, y) in each
   candidate's projected triangle and keep the nearest one that contains the point (else the nearest-pixel
   face, barycentrics clamped). The barycentrics applied to the *template* vertices give a 3D point.
   Iris points (468-477) are cast onto a rasterisation of the eyeballs only (the eyelid may hide part of the
   iris circle that MediaPipe extrapolates; the iris belongs to the eyeball and moves with the eye joint).
5. Diagnostics: a view's 3D cast counts when the hit face is front-facing with ``cos(normal, view) >=
   MIN_FACING``; per landmark the casts are combined robustly (geometric median, drop those farther than
   ``max(3 * MAD, OUTLIER_MM)``, facing-weighted mean) and their RMS spread is printed ("consistency in mm").
6. Final point: the surface point whose projections best match MediaPipe's landmarks over all views, i.e. the
   minimum of the sum over views of a Huber loss of the image-plane distance in mm (pixels / scale). This is
   what a fit minimises downstream, and it handles the face-oval points, which follow the silhouette and have
   no single surface point (their casts spread over ~3 cm): they get the best compromise. Search: all vertices
   of the faces seen in some view (eyeball faces for the iris points), then a fine barycentric grid on the
   faces near the best vertex. For the other points it agrees with the cast mean within ~0.3 mm (median).
   ``view_spread_mm`` is the RMS image-plane residual over views at the result (mm): MediaPipe's own
   view-to-view inconsistency on these renders, ~1.4 mm median, ~3.5-4.5 mm on the face oval.
7. Save face indices (int64), barycentrics (float32, >= 0, sum 1), ``view_spread_mm`` (float32) and a JSON
   ``meta`` string (``np.savez_compressed``, no pickled objects).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from magicportrait.rendering import SH_CONSTANTS, GuidanceRenderer, rasterize
from magicportrait.tracking import FaceTracker

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FLAME = ROOT.parent / "shared/assets/flame2023-open-partial/flame2023_open_partial.npz"
OUTPUT = ROOT / "src/magicportrait/heads/data/flame_mediapipe_embedding.npz"

IMAGE_SIZE = 512
YAWS = (-20.0, -10.0, 0.0, 10.0, 20.0)  # degrees, rotation about FLAME's y axis
PITCHES = (-10.0, 0.0, 10.0)  # degrees, rotation about FLAME's x axis
SCALES = (1450.0, 1700.0)  # pixels per metre: face (brow to chin, ~13 cm; ~15 cm wide) ~40-50 % of 512 px
FACE_CENTRE = np.array([0.0, -0.015, 0.0])  # FLAME point put at the image centre (mid-face height), metres
PIVOT = np.array([0.0, 0.0, -0.02])  # rotation centre, metres (inside the head)
SKIN = (0.85, 0.68, 0.58)
SCLERA = (0.92, 0.90, 0.88)
IRIS = (0.35, 0.22, 0.12)
PUPIL = (0.03, 0.03, 0.03)
IRIS_DEG = 27.0  # iris disc: angular radius about the eyeball's forward pole (sin 27 deg * 13 mm ~ 5.9 mm)
PUPIL_DEG = 12.0
LIGHT_DIR = (0.2, 0.4, 1.0)  # camera space (x right, y up, z toward the camera)
AMBIENT, DIFFUSE = 0.35, 0.65
BACKGROUND = 128
MIN_FACING = 0.3  # cos(angle between face normal and view direction) for a sample to count
OUTLIER_MM = 2.0
HUBER_MM = 1.0  # robust loss of the reprojection search: quadratic up to 1 mm (~1.5-1.7 px), then linear
REFINE_GRID = 12  # barycentric grid steps per triangle edge in the refinement (~0.3 mm on the face)
REFINE_RADIUS_MM = 10.0
NUM_MESH_POINTS = 468
NUM_LANDMARKS = 478


# ------------------------------------------------------------------------------------------------------ geometry
def rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """FLAME-frame rotation: yaw about y (positive turns the face toward the subject's left, +x), then pitch
    about x (positive tilts the face down)."""
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return rx @ ry


def flame_to_image(points: np.ndarray, yaw: float, pitch: float, scale: float,
                   image_size: int = IMAGE_SIZE) -> np.ndarray:
    """FLAME-frame points (metres) -> image space (x right, y down, z into the scene; pixels) for one view."""
    rot = rotation(yaw, pitch)
    p = (points - PIVOT) @ rot.T
    c = (FACE_CENTRE - PIVOT) @ rot.T
    p = (p - c) * scale
    half = image_size / 2.0
    return np.stack([half + p[:, 0], half - p[:, 1], -p[:, 2]], axis=1)


def components(num_vertices: int, faces: np.ndarray) -> np.ndarray:
    """Connected-component label of every vertex (union-find over the triangle edges)."""
    parent = np.arange(num_vertices)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]]):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(num_vertices)])
    _, labels = np.unique(roots, return_inverse=True)
    return labels


def huber(d: np.ndarray, delta: float = HUBER_MM) -> np.ndarray:
    return np.where(d <= delta, 0.5 * d * d, delta * (d - 0.5 * delta))


def projected_mm(points: np.ndarray, views: list[tuple[float, float, float]]) -> np.ndarray:
    """`(views, P, 2)` image-plane positions of FLAME points in each view, in mm (pixels / scale)."""
    return np.stack([flame_to_image(points, *view)[:, :2] / view[2] * 1e3 for view in views])


def best_surface_points(tracked: np.ndarray, views: list[tuple[float, float, float]], vertices: np.ndarray,
                        faces: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per landmark, the point of the faces ``candidates`` whose projections best match ``tracked``.

    ``tracked`` is `(views, L, 2)` pixels. Cost: sum over views of the Huber loss of the image-plane distance in
    mm (pixels / scale). Search: every vertex of the candidate faces, then a barycentric grid
    (``REFINE_GRID`` steps per edge) on the candidate faces within ``REFINE_RADIUS_MM`` of the best vertex.
    Returns face indices, barycentrics and the RMS distance over views at the result (mm).
    """
    scales = np.array([view[2] for view in views])
    target = tracked / scales[:, None, None] * 1e3  # (views, L, 2) mm
    cand_vertices = np.unique(faces[candidates])
    proj = projected_mm(vertices[cand_vertices], views)  # (views, C, 2)
    num = tracked.shape[1]
    best_vertex = np.zeros(num, dtype=np.int64)
    for start in range(0, num, 8):
        d = np.linalg.norm(proj[:, None] - target[:, start:start + 8, None], axis=-1)  # (views, l, C)
        best_vertex[start:start + 8] = cand_vertices[huber(d).sum(0).argmin(1)]
    n = REFINE_GRID
    grid = np.array([(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)], dtype=np.float64) / n
    face_centres = vertices[faces[candidates]].mean(1)
    face_out = np.zeros(num, dtype=np.int64)
    bary_out = np.zeros((num, 3))
    rms = np.zeros(num)
    for k in range(num):
        near = candidates[np.linalg.norm(face_centres - vertices[best_vertex[k]], axis=1) < REFINE_RADIUS_MM * 1e-3]
        tri_proj = projected_mm(vertices[faces[near]].reshape(-1, 3), views).reshape(len(views), len(near), 3, 2)
        pts = np.einsum("gk,vfkc->vfgc", grid, tri_proj)  # (views, faces, grid, 2): projection is affine
        d = np.linalg.norm(pts - target[:, k, None, None], axis=-1)
        cost = huber(d).sum(0)
        f, g = np.unravel_index(cost.argmin(), cost.shape)
        face_out[k], bary_out[k] = near[f], grid[g]
        rms[k] = np.sqrt(np.mean(d[:, f, g] ** 2))
    return face_out, bary_out, rms


def barycentric_2d(point: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentrics of 2D ``point`` in `(K, 3, 2)` triangles: `(K, 3)` (may be negative outside)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, point[None] - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    w1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    w2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    return np.stack([1 - w1 - w2, w1, w2], axis=1)


def cast(points_2d: np.ndarray, pix_to_face: np.ndarray, image_vertices: np.ndarray,
         faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Surface point under each 2D point: (face index or -1, exact barycentrics) from a rasterisation.

    Candidates are the visible faces of the 3 x 3 pixels around the point; the nearest (smallest z at the point)
    candidate that contains the point wins; else the face of the nearest pixel, barycentrics clamped.
    """
    h, w = pix_to_face.shape
    face_out = np.full(len(points_2d), -1, dtype=np.int64)
    bary_out = np.zeros((len(points_2d), 3))
    for k, (x, y) in enumerate(points_2d):
        i, j = int(np.floor(x)), int(np.floor(y))
        if not (0 <= i < w and 0 <= j < h):
            continue
        cand = np.unique(pix_to_face[max(j - 1, 0):j + 2, max(i - 1, 0):i + 2])
        cand = cand[cand >= 0]
        if cand.size == 0:
            continue
        tri = image_vertices[faces[cand]]
        bary = barycentric_2d(np.array([x, y]), tri[..., :2])
        inside = (bary >= -1e-9).all(1)
        if inside.any():
            z = (bary * tri[..., 2]).sum(1)
            z[~inside] = np.inf
            best = int(z.argmin())
            face_out[k], bary_out[k] = cand[best], bary[best]
        elif pix_to_face[j, i] >= 0:
            f = pix_to_face[j, i]
            b = np.clip(bary[int(np.flatnonzero(cand == f)[0])], 0, None)
            face_out[k], bary_out[k] = f, b / b.sum()
    return face_out, bary_out


def facing(image_vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """`(F,)` cos between each face's outward normal and the direction to the camera (-z in image space)."""
    tri = image_vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return -n[:, 2] / np.maximum(np.linalg.norm(n, axis=1), 1e-12)


def geometric_median(points: np.ndarray, weights: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Weighted geometric median (Weiszfeld iterations)."""
    m = np.average(points, axis=0, weights=weights)
    for _ in range(iterations):
        d = np.maximum(np.linalg.norm(points - m, axis=1), 1e-9)
        new = np.average(points, axis=0, weights=weights / d)
        if np.linalg.norm(new - m) < 1e-9:
            return new
        m = new
    return m


# ---------------------------------------------------------------------------------------------------- rendering
def vertex_colours(vertices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Skin on the head, painted sclera / iris / pupil on each eyeball (about its forward +z pole)."""
    colours = np.tile(np.array(SKIN), (len(vertices), 1))
    head = np.bincount(labels).argmax()
    for comp in np.unique(labels):
        if comp == head:
            continue
        idx = np.flatnonzero(labels == comp)
        eye = vertices[idx]
        centre = (eye.max(0) + eye.min(0)) / 2
        direction = (eye - centre) / np.linalg.norm(eye - centre, axis=1, keepdims=True)
        angle = np.degrees(np.arccos(np.clip(direction[:, 2], -1, 1)))
        c = np.tile(np.array(SCLERA), (len(idx), 1))
        c[angle < IRIS_DEG] = IRIS
        c[angle < PUPIL_DEG] = PUPIL
        colours[idx] = c
    return colours


def sh_light() -> np.ndarray:
    d = np.array(LIGHT_DIR) / np.linalg.norm(LIGHT_DIR)
    light = np.zeros((9, 3))
    light[0] = AMBIENT / SH_CONSTANTS[0]
    light[1:4] = (DIFFUSE * d / SH_CONSTANTS[1])[:, None]
    return light


def render_view(renderer: GuidanceRenderer, image_vertices: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """RGB uint8 render of one view over a mid-grey background."""
    maps = renderer.render(image_vertices, vertex_colors=colours)
    image = maps.to_uint8()["render"][0]
    image[~maps.mask[0].cpu().numpy()] = BACKGROUND
    return image


# --------------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flame", type=Path, default=DEFAULT_FLAME, help="FLAME .npz with v_template and f")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with np.load(args.flame, allow_pickle=False) as data:
        template = data["v_template"].astype(np.float64)
        faces = data["f"].astype(np.int64)
    labels = components(len(template), faces)
    head = np.bincount(labels).argmax()
    eye_faces = np.flatnonzero(labels[faces[:, 0]] != head)
    colours = vertex_colours(template, labels)
    renderer = GuidanceRenderer(faces, (IMAGE_SIZE, IMAGE_SIZE), sh_light=sh_light())

    views = [(yaw, pitch, scale) for scale in SCALES for pitch in PITCHES for yaw in YAWS]
    samples: list[list[tuple[np.ndarray, float]]] = [[] for _ in range(NUM_LANDMARKS)]
    seen_faces = np.zeros(len(faces), dtype=bool)
    used_views: list[tuple[float, float, float]] = []
    tracked_landmarks: list[np.ndarray] = []
    with FaceTracker() as tracker:
        for yaw, pitch, scale in views:
            image_vertices = flame_to_image(template, yaw, pitch, scale)
            image = render_view(renderer, image_vertices, colours)
            try:
                landmarks = tracker.track_image(image).landmarks[0, :, :2].astype(np.float64)
            except Exception as error:  # noqa: BLE001 - a view without a face is skipped, and reported
                print(f"view yaw {yaw:+.0f} pitch {pitch:+.0f} scale {scale:.0f}: no face ({error})")
                continue
            used_views.append((yaw, pitch, scale))
            tracked_landmarks.append(landmarks)
            frags = rasterize(torch.from_numpy(image_vertices), faces, (IMAGE_SIZE, IMAGE_SIZE))
            pix_to_face = frags.pix_to_face[0].numpy()
            seen_faces[np.unique(pix_to_face[pix_to_face >= 0])] = True
            eye_frags = rasterize(torch.from_numpy(image_vertices), faces[eye_faces], (IMAGE_SIZE, IMAGE_SIZE))
            eye_pix = eye_frags.pix_to_face[0].numpy()
            eye_pix = np.where(eye_pix >= 0, eye_faces[np.maximum(eye_pix, 0)], -1)
            cos = facing(image_vertices, faces)
            face_mesh, bary_mesh = cast(landmarks[:NUM_MESH_POINTS], pix_to_face, image_vertices, faces)
            face_iris, bary_iris = cast(landmarks[NUM_MESH_POINTS:], eye_pix, image_vertices, faces)
            hit_faces = np.concatenate([face_mesh, face_iris])
            hit_bary = np.concatenate([bary_mesh, bary_iris])
            for k, (f, b) in enumerate(zip(hit_faces, hit_bary, strict=True)):
                # iris points: the eyeball is seen through the eyelids, no facing limit beyond front-facing
                limit = MIN_FACING if k < NUM_MESH_POINTS else 0.0
                if f >= 0 and cos[f] >= limit:
                    samples[k].append((b @ template[faces[f]], float(cos[f])))
            print(f"view yaw {yaw:+.0f} pitch {pitch:+.0f} scale {scale:.0f}: "
                  f"{sum(1 for f in hit_faces if f >= 0)} landmarks on the surface")

    # ---- 3D casts: robust per-landmark combination of the front-facing samples (first estimate, diagnostics)
    cast_points = np.zeros((NUM_LANDMARKS, 3))
    cast_spread = np.zeros(NUM_LANDMARKS)
    counts = np.zeros(NUM_LANDMARKS, dtype=np.int64)
    for k, items in enumerate(samples):
        if not items:
            raise RuntimeError(f"landmark {k} was never seen front-facing; add views.")
        pts = np.array([p for p, _ in items])
        wts = np.array([c for _, c in items])
        med = geometric_median(pts, wts)
        dist = np.linalg.norm(pts - med, axis=1)
        keep = dist <= max(3.0 * np.median(dist), OUTLIER_MM * 1e-3)
        cast_points[k] = np.average(pts[keep], axis=0, weights=wts[keep])
        cast_spread[k] = np.sqrt(np.mean(np.sum((pts[keep] - cast_points[k]) ** 2, axis=1))) * 1e3
        counts[k] = int(keep.sum())

    # ---- final: the surface point that best reprojects onto MediaPipe's landmarks in all views
    head_candidates = np.flatnonzero(seen_faces & (labels[faces[:, 0]] == head))
    groups = {"mesh": (slice(0, NUM_MESH_POINTS), head_candidates), "iris": (slice(NUM_MESH_POINTS, NUM_LANDMARKS),
                                                                               eye_faces)}
    face_idx = np.zeros(NUM_LANDMARKS, dtype=np.int64)
    bary = np.zeros((NUM_LANDMARKS, 3))
    residual = np.zeros(NUM_LANDMARKS)
    tracked = np.stack(tracked_landmarks)  # (views, 478, 2)
    for part, candidates in groups.values():
        face_idx[part], bary[part], residual[part] = best_surface_points(
            tracked[:, part], used_views, template, faces, candidates)
    points = np.einsum("lk,lkc->lc", bary, template[faces[face_idx]])
    snap = np.linalg.norm(points - cast_points, axis=1) * 1e3
    spread = residual

    # ---- report
    print(f"\n{len(used_views)}/{len(views)} views tracked; samples per landmark: min {counts.min()}, "
          f"median {np.median(counts):.0f}")
    parts = (("mesh (0-467)", slice(0, NUM_MESH_POINTS)), ("iris (468-477)", slice(NUM_MESH_POINTS, None)),
             ("all", slice(0, NUM_LANDMARKS)))
    for title, values in (("3D spread of the front-facing casts over views, mm", cast_spread),
                          ("RMS reprojection residual over views (image plane), mm", spread),
                          ("distance final point - mean of the casts, mm", snap)):
        print(title)
        for name, part in parts:
            s = values[part]
            print(f"  {name:>15}: median {np.median(s):.2f}  mean {s.mean():.2f}  p90 {np.percentile(s, 90):.2f}  "
                  f"max {s.max():.2f}")
    worst = np.argsort(spread)[::-1][:12]
    print("largest residuals (landmark: mm):", ", ".join(f"{k}: {spread[k]:.1f}" for k in worst))
    worst = np.argsort(cast_spread)[::-1][:12]
    print("largest cast spreads (landmark: mm):", ", ".join(f"{k}: {cast_spread[k]:.1f}" for k in worst))
    for k in (1, 33, 263, 152, 468, 473):
        print(f"landmark {k:3d} -> face {face_idx[k]:4d}, FLAME point (mm) {np.round(points[k] * 1e3, 1)}")

    meta = {
        "description": "MediaPipe Face Mesh 478 refined landmarks on the FLAME surface: landmark k is "
                       "sum_i barycentric[k, i] * vertices[faces[face_indices[k], i]].",
        "script": "scripts/make_flame_mediapipe_embedding.py",
        "flame_variant": "FLAME 2023 Open (partial copy: v_template and f; FLAME topology, 5023 vertices, "
                         "9976 faces)",
        "flame_file": args.flame.name,
        "faces_sha256": hashlib.sha256(np.ascontiguousarray(faces.astype(np.int32)).tobytes()).hexdigest(),
        "num_faces": int(len(faces)),
        "num_vertices": int(len(template)),
        "image_size": IMAGE_SIZE,
        "views_yaw_pitch_scale": [list(v) for v in used_views],
        "view_convention": "yaw about FLAME y, then pitch about FLAME x; image = (x, -y, -z) * scale + centre",
        "colouring": {"skin": SKIN, "sclera": SCLERA, "iris": IRIS, "pupil": PUPIL, "iris_deg": IRIS_DEG,
                      "light": {"ambient": AMBIENT, "diffuse": DIFFUSE, "direction": LIGHT_DIR},
                      "background": BACKGROUND},
        "min_facing_cos": MIN_FACING,
        "outlier_mm": OUTLIER_MM,
        "iris": "cast onto the eyeball meshes only (components 2 and 3 of the template)",
        "combination": "per landmark, the surface point (faces visible in some view; eyeball faces for the "
                       "iris) minimising the sum over views of a Huber loss (huber_mm) of the image-plane "
                       "distance (mm) between its projection and MediaPipe's landmark; vertex search then a "
                       "barycentric grid (refine_grid steps per edge) on the faces near the best vertex",
        "huber_mm": HUBER_MM,
        "refine_grid": REFINE_GRID,
        "view_spread_mm": "RMS over views of the image-plane distance (mm = px / scale) between MediaPipe's "
                          "landmark and the projected embedded point",
        "cast_spread_mm": {"median": float(np.median(cast_spread)), "p90": float(np.percentile(cast_spread, 90)),
                           "note": "3D spread of the per-view surface casts (front-facing, robust), diagnostics"},
        "mediapipe": _mediapipe_version(),
        "date": datetime.date.today().isoformat(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, face_indices=face_idx.astype(np.int64), barycentric=bary.astype(np.float32),
                        view_spread_mm=spread.astype(np.float32), meta=np.array(json.dumps(meta, sort_keys=True)))
    print(f"\nwrote {args.output}")


def _mediapipe_version() -> str:
    try:
        import mediapipe

        return str(mediapipe.__version__)
    except Exception:  # noqa: BLE001
        return "unknown"


if __name__ == "__main__":
    main()
