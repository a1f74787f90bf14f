"""FLAME fitting speed and accuracy on synthetic tracks made with the shared partial FLAME model (512x512).

Usage: ``python benchmarks/bench_flame_fitting.py [num_frames]`` (default 300). Runs on 2 torch threads.

Reports:
- batched fitting frames/s on a moving, talking (jaw) head of ``num_frames`` frames, and its mean landmark
  reprojection error (px) against the noiseless truth, from noiseless and from 1.5 px noisy landmarks;
- per-frame jitter (deg/frame, mean angle between consecutive fitted head rotations) of a static head seen
  through 1.5 px landmark noise, before and after ``smooth_head_track`` (strength 0.5);
- a naive baseline: each frame fitted on its own (T=1, identity re-estimated per frame), for speed and jitter
  ratios (on ``NAIVE_FRAMES`` frames, extrapolated).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from magicportrait.alignment import smooth_head_track
from magicportrait.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from magicportrait.heads.base import pose_vertices
from magicportrait.types import HeadTrack, Track

PARTIAL_MODEL = Path(__file__).resolve().parents[2] / "shared/assets/flame2023-open-partial/flame2023_open_partial.npz"
IMAGE_SIZE = 512
NOISE_PX = 1.5
NAIVE_FRAMES = 30
THREADS = 2


def _track(landmarks: np.ndarray) -> Track:
    num_frames = landmarks.shape[0]
    return Track(landmarks=landmarks.astype(np.float32), boxes=np.zeros((num_frames, 3), np.float32),
                 detected=np.ones(num_frames, bool), fps=25.0, image_size=(IMAGE_SIZE, IMAGE_SIZE))


def _synthetic(model, num_frames: int, moving: bool, rng: np.random.Generator) -> dict:
    t = np.arange(num_frames) / 25.0
    rotation = np.zeros((num_frames, 3))
    joints = np.zeros((num_frames, 4, 3))
    scale = np.full(num_frames, 13.0)
    translation = np.tile([256.0, 250.0, 0.0], (num_frames, 1))
    if moving:
        rotation = np.stack([np.deg2rad(12) * np.sin(2 * np.pi * 0.23 * t),
                             np.deg2rad(25) * np.sin(2 * np.pi * 0.17 * t + 1.0),
                             np.deg2rad(8) * np.sin(2 * np.pi * 0.31 * t)], axis=1)
        joints[:, 1, 0] = np.deg2rad(10) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
        scale = 13.0 + 1.5 * np.sin(2 * np.pi * 0.1 * t)
        translation[:, 0] += 25 * np.sin(2 * np.pi * 0.13 * t)
        translation[:, 1] += 15 * np.cos(2 * np.pi * 0.11 * t)
    identity = 0.5 * rng.standard_normal(model.num_shape)
    vertices = model.shape_vertices(identity, np.zeros((num_frames, model.num_expression)), joints)
    clean = model.landmarks(pose_vertices(vertices, rotation, scale, translation).astype(np.float64))
    noisy = clean.copy()
    noisy[..., :2] += NOISE_PX * rng.standard_normal(noisy[..., :2].shape)
    return {"clean": clean, "noisy": noisy, "rotation": rotation}


def _reprojection(model, head: HeadTrack, clean: np.ndarray) -> float:
    fitted = model.landmarks(model.posed_vertices(head).astype(np.float64))
    return float(np.linalg.norm(fitted[..., :2] - clean[..., :2], axis=-1).mean())


def _rotation_error(head: HeadTrack, rotation: np.ndarray) -> float:
    relative = np.swapaxes(axis_angle_to_matrix(head.rotation), -1, -2) @ axis_angle_to_matrix(rotation)
    return float(np.degrees(np.linalg.norm(matrix_to_axis_angle(relative), axis=-1)).mean())


def _jitter(rotation: np.ndarray) -> float:
    """Mean angle (deg) between consecutive rotations."""
    matrices = axis_angle_to_matrix(rotation)
    relative = np.swapaxes(matrices[:-1], -1, -2) @ matrices[1:]
    return float(np.degrees(np.linalg.norm(matrix_to_axis_angle(relative), axis=-1)).mean())


def _fit_each_frame(model, landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """Naive baseline: every frame fitted alone. Returns rotations `(N, 3)` and seconds."""
    start = time.perf_counter()
    rotations = [model.fit(_track(landmarks[i:i + 1])).rotation[0] for i in range(landmarks.shape[0])]
    return np.stack(rotations), time.perf_counter() - start


def run(num_frames: int = 300) -> dict:
    if not PARTIAL_MODEL.is_file():
        return {"skipped": f"shared partial FLAME model not found at {PARTIAL_MODEL}"}
    from magicportrait.heads.flame_head import FlameHeadModel

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        model = FlameHeadModel.from_file(PARTIAL_MODEL)
        rng = np.random.default_rng(0)
        moving = _synthetic(model, num_frames, moving=True, rng=rng)
        results: dict = {"num_frames": num_frames, "threads": THREADS, "image_size": IMAGE_SIZE,
                         "noise_px": NOISE_PX, "flame_shape_components": model.num_shape,
                         "flame_expression_components": model.num_expression}
        for name in ("clean", "noisy"):
            start = time.perf_counter()
            head = model.fit(_track(moving[name]))
            seconds = time.perf_counter() - start
            results[f"{name}_fps"] = round(num_frames / seconds, 1)
            results[f"{name}_reprojection_px"] = round(_reprojection(model, head, moving["clean"]), 3)
            results[f"{name}_rotation_error_deg"] = round(_rotation_error(head, moving["rotation"]), 3)

        static = _synthetic(model, num_frames, moving=False, rng=rng)
        head = model.fit(_track(static["noisy"]))
        results["static_jitter_deg_per_frame"] = round(_jitter(head.rotation), 4)
        results["static_jitter_smoothed_deg_per_frame"] = round(_jitter(smooth_head_track(head, 0.5).rotation), 4)

        naive_count = min(NAIVE_FRAMES, num_frames)
        _, naive_seconds = _fit_each_frame(model, moving["noisy"][:naive_count])
        naive_rotations, _ = _fit_each_frame(model, static["noisy"][:naive_count])
        results["naive_fps"] = round(naive_count / naive_seconds, 1)
        results["naive_static_jitter_deg_per_frame"] = round(_jitter(naive_rotations), 4)
        results["speedup_vs_naive"] = round(results["noisy_fps"] / results["naive_fps"], 1)
        results["jitter_ratio_naive_vs_batched"] = round(
            results["naive_static_jitter_deg_per_frame"] / max(results["static_jitter_deg_per_frame"], 1e-9), 2)
    finally:
        torch.set_num_threads(previous_threads)
    return results


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 300), indent=2))
