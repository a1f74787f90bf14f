"""FLAME fitting speed and accuracy, on synthetic tracks made with the shared partial FLAME model (512x512) and in
closed loop through the real tracker on the bundled example.

Usage: ``python benchmarks/bench_flame_fitting.py [num_frames]`` (default 300). Runs on 2 torch threads.

Reports:
- batched fitting frames/s on a moving, talking (jaw) head of ``num_frames`` frames, and its mean landmark
  reprojection error (px) against the noiseless truth, from noiseless and from 1.5 px noisy landmarks;
- per-frame jitter (deg/frame, mean angle between consecutive fitted head rotations) of a static head seen
  through 1.5 px landmark noise, before and after ``smooth_head_track`` (strength 0.5);
- a naive baseline: each frame fitted on its own (T=1, identity re-estimated per frame), for speed and jitter
  ratios (on ``NAIVE_FRAMES`` frames, extrapolated);
- closed loop (``closed_loop``): the bundled example (the astronaut portrait re-rendered with a known head motion,
  jaw opening and brow raise) written with ``num_frames`` frames, tracked with MediaPipe from its encoded video,
  cropped like the guide pipeline crops the portrait (frame 0's face box -> 512x512), fitted: fitting frames/s,
  landmark reprojection error (px at the 512x512 crop) against the tracked landmarks per landmark group, relative
  head rotation error against the known motion, correlation of the fitted jaw with the known jaw opening, and
  frame-to-frame pose jitter before and after smoothing. The same fit on the renderer's exact landmarks (no
  tracker) separates the tracker's share of the error from the fitter's.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from magicportrait.alignment import smooth_head_track
from magicportrait.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from magicportrait.heads.base import pose_vertices
from magicportrait.heads.embedding import load_flame_mediapipe_embedding
from magicportrait.heads.mediapipe_mesh import MediaPipeHeadModel
from magicportrait.heads.mediapipe_topology import IRIS_POINTS, landmark_groups
from magicportrait.io.video import iter_frames
from magicportrait.pipelines.example import (
    EXAMPLE_FPS,
    ExampleMotion,
    example_head_track,
    example_motion,
    example_portrait,
    write_example,
)
from magicportrait.tracking import FaceTracker, TrackerConfig
from magicportrait.tracking.boxes import crop_matrix, crop_track
from magicportrait.types import NUM_LANDMARKS, HeadTrack, Track

PARTIAL_MODEL = Path(__file__).resolve().parents[2] / "shared/assets/flame2023-open-partial/flame2023_open_partial.npz"
IMAGE_SIZE = 512
NOISE_PX = 1.5
NAIVE_FRAMES = 30
THREADS = 2
SMOOTHING = 0.5
FIT_REPEATS = 2  # closed-loop fitting speed: the best of this many fits (other processes may share the CPU)
UPPER_LIP, LOWER_LIP = 13, 14  # inner-lip midpoints: their distance is the tracked mouth opening


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


def landmark_masks() -> dict[str, np.ndarray]:
    """Boolean masks over the 478 landmarks: all, non-oval, inner face (neither oval nor iris), oval, iris."""
    oval = np.zeros(NUM_LANDMARKS, bool)
    oval[landmark_groups()["face_oval"]] = True
    iris = np.zeros(NUM_LANDMARKS, bool)
    iris[list(IRIS_POINTS)] = True
    return {"all": np.ones(NUM_LANDMARKS, bool), "non_oval": ~oval, "inner": ~oval & ~iris, "oval": oval,
            "iris": iris}


def example_tracks(num_frames: int) -> tuple[Track, Track, float]:
    """The bundled example's driving video as tracked by MediaPipe, the renderer's exact landmarks as a Track,
    and the crop's magnification.

    Both tracks are mapped into the guide pipeline's 512x512 crop of the portrait (its face box); the portrait is
    also frame 0 of the example.
    """
    with tempfile.TemporaryDirectory() as folder:
        _, driving = write_example(folder, num_frames=num_frames)
        with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
            tracked = tracker.track_frames(iter_frames(driving), fps=EXAMPLE_FPS)
            source_track = tracker.track_image(example_portrait())
    rendered = Track(landmarks=rendered_landmarks(source_track, num_frames), boxes=tracked.boxes,
                     detected=np.ones(num_frames, bool), fps=EXAMPLE_FPS, image_size=tracked.image_size)
    matrix = crop_matrix(source_track.boxes[0], IMAGE_SIZE)
    magnification = IMAGE_SIZE / float(source_track.boxes[0, 2])
    return crop_track(tracked, matrix, IMAGE_SIZE), crop_track(rendered, matrix, IMAGE_SIZE), magnification


def rendered_landmarks(source_track: Track, num_frames: int) -> np.ndarray:
    """`(T, 478, 3)` landmarks of the example's known head in each frame (what the renderer drew)."""
    model = MediaPipeHeadModel()
    truth = example_head_track(model.fit(source_track), example_motion(num_frames))
    return model.posed_vertices(truth).astype(np.float32)


def relative_rotations(rotation: np.ndarray) -> np.ndarray:
    """`(T, 3)` axis-angle rotations of each frame relative to frame 0 (``R_t R_0^T``), image space."""
    matrices = axis_angle_to_matrix(np.asarray(rotation, np.float64))
    return matrix_to_axis_angle(matrices @ np.swapaxes(matrices[:1], -1, -2))


def step_rotations(matrices: np.ndarray) -> np.ndarray:
    """`(T - 1, 3, 3)` frame-to-frame rotations ``R_t R_{t-1}^T`` of `(T, 3, 3)` rotations."""
    return matrices[1:] @ np.swapaxes(matrices[:-1], -1, -2)


def step_jitter(rotation: np.ndarray) -> float:
    """Mean angle (deg/frame) by which the frame-to-frame rotation changes between consecutive frames.

    A smooth motion changes its per-frame rotation slowly (the example's truth: ~0.01 deg/frame at 300 frames),
    so this measures jitter of a moving head without being dominated by the motion itself.
    """
    steps = step_rotations(axis_angle_to_matrix(np.asarray(rotation, np.float64)))
    return _jitter(matrix_to_axis_angle(steps)) if len(steps) > 1 else 0.0


def reprojection_by_group(model, head: HeadTrack, target: np.ndarray) -> dict[str, float]:
    """Mean 2D distance (px) between the fitted and the ``target`` landmarks, per landmark group."""
    fitted = model.landmarks(model.posed_vertices(head).astype(np.float64))
    distance = np.linalg.norm(fitted[..., :2] - target[..., :2], axis=-1)
    return {name: round(float(distance[:, mask].mean()), 3) for name, mask in landmark_masks().items()}


def rotation_errors(head: HeadTrack, motion: ExampleMotion) -> np.ndarray:
    """Per-frame angle (deg) between the fitted and the known rotations relative to frame 0."""
    from magicportrait.heads.flame_head import rotation_error_degrees

    return rotation_error_degrees(relative_rotations(head.rotation), matrix_to_axis_angle(motion.relative_rotation))


def embedding_floor_px(head: HeadTrack) -> float:
    """The embedding's own landmark spread (mean over non-oval points, mm) in px at the fitted face size."""
    _, _, spread_mm = load_flame_mediapipe_embedding()
    return float(spread_mm[landmark_masks()["non_oval"]].mean() / 10.0 * head.scale.mean())


def timed_fit(model, track: Track, repeats: int = FIT_REPEATS) -> tuple[HeadTrack, float]:
    """The fit of ``track`` and its best frames/s over ``repeats`` runs."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        head = model.fit(track)
        best = min(best, time.perf_counter() - start)
    return head, track.num_frames / best


def closed_loop(model, num_frames: int) -> dict:
    """Closed-loop figures on the bundled example (see the module docstring)."""
    tracked, rendered, magnification = example_tracks(num_frames)
    motion = example_motion(num_frames)
    head, fps = timed_fit(model, tracked)
    results = {"num_frames": num_frames, "fps": round(fps, 1),
               "crop_magnification": round(magnification, 3),
               "face_width_px": round(float(np.ptp(tracked.landmarks[0, :, 0])), 1),
               "embedding_floor_px": round(embedding_floor_px(head), 2)}
    results.update(accuracy_figures(model, head, tracked, motion))
    results.update(jaw_figures(head, tracked, motion))
    results.update(jitter_figures(head, motion))
    # The fitter alone: the same fit on the renderer's exact landmarks (no tracker between).
    ideal = accuracy_figures(model, model.fit(rendered), rendered, motion)
    results.update({f"rendered_{name}": value for name, value in ideal.items()})
    return results


def accuracy_figures(model, head: HeadTrack, track: Track, motion: ExampleMotion) -> dict:
    """Reprojection error (px) per landmark group against ``track`` and rotation error (deg) against the truth."""
    errors = rotation_errors(head, motion)
    return {"reprojection_px": reprojection_by_group(model, head, track.landmarks),
            "rotation_error_deg_mean": round(float(errors.mean()), 2),
            "rotation_error_deg_max": round(float(errors.max()), 2)}


def jaw_figures(head: HeadTrack, track: Track, motion: ExampleMotion) -> dict:
    """How the fitted jaw angle follows the known jaw opening and the tracked inner-lip gap."""
    jaw = np.degrees(head.joint_rotations[:, 1, 0])
    mouth_gap = np.linalg.norm(track.landmarks[:, LOWER_LIP, :2] - track.landmarks[:, UPPER_LIP, :2], axis=-1)
    return {"jaw_correlation": round(float(np.corrcoef(jaw, motion.jaw_open_degrees)[0, 1]), 3),
            "jaw_vs_tracked_mouth_gap_correlation": round(float(np.corrcoef(jaw, mouth_gap)[0, 1]), 3),
            "fitted_jaw_max_deg": round(float(jaw.max()), 1),
            "true_jaw_max_deg": round(float(motion.jaw_open_degrees.max()), 1)}


def jitter_figures(head: HeadTrack, motion: ExampleMotion) -> dict:
    """Frame-to-frame pose jitter (deg/frame) of the fit, after smoothing, and of the known motion."""
    return {"jitter_deg_per_frame": round(step_jitter(head.rotation), 4),
            "jitter_smoothed_deg_per_frame": round(step_jitter(smooth_head_track(head, SMOOTHING).rotation), 4),
            "true_jitter_deg_per_frame": round(step_jitter(matrix_to_axis_angle(motion.relative_rotation)), 4)}


def run(num_frames: int = 300, closed_loop_frames: int | None = None) -> dict:
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
        results["closed_loop"] = closed_loop(model, closed_loop_frames or num_frames)
    finally:
        torch.set_num_threads(previous_threads)
    return results


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 300), indent=2))
