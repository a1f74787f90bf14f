"""Tracking speed on a synthetic video: the astronaut portrait (512x512) moving and turning in the frame.

Usage: ``python benchmarks/bench_tracking.py [num_frames]`` (default 100). Frames are made before timing, so the
figure is the tracker's own speed (Face Mesh + face choice + box smoothing), not frame generation.
"""

from __future__ import annotations

import json
import os
import sys
import time

import cv2
import numpy as np
from skimage import data

from magicportrait.tracking import FaceTracker, TrackerConfig


def moving_astronaut(num_frames: int, size: int = 512) -> list[np.ndarray]:
    """The astronaut drifting (+-30 px) and rolling (+-10 degrees) around her face over ``num_frames`` frames."""
    image = data.astronaut()
    frames = []
    for t in np.arange(num_frames) / 25.0:
        angle = 10.0 * np.sin(2 * np.pi * 0.3 * t)
        matrix = cv2.getRotationMatrix2D((225.0, 125.0), angle, 1.0)
        matrix[:, 2] += [30.0 * np.sin(2 * np.pi * 0.2 * t), 20.0 * np.cos(2 * np.pi * 0.25 * t)]
        frames.append(cv2.warpAffine(image, matrix, (size, size), borderMode=cv2.BORDER_REFLECT))
    return frames


def _time_tracking(frames: list[np.ndarray], config: TrackerConfig) -> tuple[float, float]:
    """(seconds, fraction of frames with a detected face) of one tracking run."""
    with FaceTracker(config) as tracker:
        start = time.perf_counter()
        track = tracker.track_frames(frames, fps=25.0, num_frames=len(frames))
        seconds = time.perf_counter() - start
    return seconds, float(track.detected.mean())


def _time_static_baseline(frames: list[np.ndarray]) -> float:
    """Seconds for MediaPipe's face mesh in static-image mode on every frame: detection from scratch each time,
    which is how per-frame pipelines (like the official release's preprocessing) treat a video."""
    from mediapipe.python.solutions import face_mesh

    with face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as mesh:
        mesh.process(frames[0])
        start = time.perf_counter()
        for frame in frames:
            mesh.process(frame)
        return time.perf_counter() - start


def run(num_frames: int = 100) -> dict:
    """Time tracking ``num_frames`` 512x512 frames with the default config and with ``max_faces=1``."""
    frames = moving_astronaut(num_frames)
    _time_tracking(frames[:2], TrackerConfig(show_progress=False))  # warm-up: model loading, XNNPACK set-up
    seconds, detected = _time_tracking(frames, TrackerConfig(show_progress=False))
    seconds_one, _ = _time_tracking(frames, TrackerConfig(show_progress=False, max_faces=1))
    seconds_static = _time_static_baseline(frames)
    return {
        "num_frames": num_frames,
        "frame_size": list(frames[0].shape[:2]),
        "cpu_count": os.cpu_count(),
        "seconds": round(seconds, 3),
        "fps": round(num_frames / seconds, 1),
        "detected_fraction": detected,
        "fps_max_faces_1": round(num_frames / seconds_one, 1),
        "baseline_static_per_frame_fps": round(num_frames / seconds_static, 1),
        "ratio_to_baseline": round(seconds_static / seconds, 2),
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 100), indent=2))
