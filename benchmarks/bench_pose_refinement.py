"""Head-pose accuracy of our fitter before and after the photometric pose refinement (issue 16, section 4).

    python benchmarks/bench_pose_refinement.py           # ~10 minutes; writes its docs/benchmarks.md section
    python benchmarks/bench_pose_refinement.py --quick   # 40-frame example, 3 held-out faces; docs untouched

Two closed loops, each through MediaPipe on encoded video; "before" fits the tracked landmarks, "after" fits them
once ``refine_pose_photometric`` has moved each frame to its photometric pose (the default of guide / animate):

- the bundled example (300 frames: the astronaut portrait turning up to 18 deg yaw, 8 pitch, with a jaw opening
  and a brow raise; mapped into the guide's 512x512 face crop), fitted with the open geometry and with the shared
  partial FLAME model (60 identity, 0 expression components): head rotation error relative to frame 0 (the portrait
  itself), landmark reprojection (px, FLAME), frame-to-frame jitter;
- held-out faces and poses: the 22 faces of face-api's six group photos and Grace Hopper (real photos, fetched with
  npm into a cache, never committed), each cropped as guide crops a portrait and re-rendered by the example's
  renderer along its own random motion (90 frames, yaw up to 30 deg, pitch 15, roll 8, seeded per face) — faces
  and poses nothing was tuned on (the refinement's settings were chosen on the bundled example). A contact sheet per
  face (``outputs/bench-pose-refinement/NAME.png``: true landmarks white, before red, after green).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.cbook
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_flame_fitting import (  # noqa: E402 - benchmarks/ is not a package
    PARTIAL_MODEL,
    embedding_floor_px,
    relative_rotations,
    reprojection_by_group,
    step_jitter,
)
from bench_real_photos import write_docs  # noqa: E402
from real_photo_inputs import FACE_BOXES, face_crop, fetch_samples, load_rgb  # noqa: E402

MARKS = ("<!-- pose-refinement: start -->", "<!-- pose-refinement: end -->")
CACHE = Path.home() / ".cache" / "magicportrait-bench"
HELD_OUT_FRAMES = 90
TARGET_DEG = 1.5
WORK = tempfile.TemporaryDirectory(prefix="magicportrait-pose-")  # the videos written on the way
OUTPUT = ROOT / "outputs" / "bench-pose-refinement"  # the JSON and a contact sheet per held-out face


def models() -> dict:
    from magicportrait.heads.flame_head import FlameHeadModel
    from magicportrait.heads.mediapipe_mesh import MediaPipeHeadModel

    return {"open geometry": MediaPipeHeadModel(), "FLAME": FlameHeadModel.from_file(PARTIAL_MODEL)}


def tracked_video(frames: list[np.ndarray]):
    """The track of ``frames`` written as an encoded video (as a user's driving video), and a frame re-reader."""
    from magicportrait.io.video import iter_frames, write_video
    from magicportrait.tracking import FaceTracker, TrackerConfig

    path = Path(tempfile.mkdtemp(prefix="driving-", dir=WORK.name)) / "driving.mp4"
    write_video(path, iter(frames), fps=25.0)
    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        track = tracker.track_frames(iter_frames(path), fps=25.0)
    return track, lambda: iter_frames(path)


def refined(track, read_frames) -> tuple:
    from magicportrait.tracking.photometric import refine_pose_photometric

    began = time.perf_counter()
    result = refine_pose_photometric(read_frames, track)
    return result, track.num_frames / (time.perf_counter() - began)


def rotation_errors(head, true_relative: np.ndarray) -> np.ndarray:
    from magicportrait.heads.flame_head import rotation_error_degrees

    return rotation_error_degrees(relative_rotations(head.rotation), true_relative)


def example_loop(num_frames: int) -> dict:
    """Before / after on the bundled example, in the guide's 512x512 crop of the portrait."""
    from magicportrait.geometry.rotations import matrix_to_axis_angle
    from magicportrait.io.video import iter_frames
    from magicportrait.pipelines.example import example_motion, example_portrait, write_example
    from magicportrait.tracking import FaceTracker, TrackerConfig
    from magicportrait.tracking.boxes import crop_matrix, crop_track

    _, driving = write_example(Path(tempfile.mkdtemp(prefix="example-", dir=WORK.name)), num_frames=num_frames)
    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        track = tracker.track_frames(iter_frames(driving), fps=25.0)
        portrait = tracker.track_image(example_portrait())
    after, fps = refined(track, lambda: iter_frames(driving))
    matrix = crop_matrix(portrait.boxes[0], 512)
    truth = matrix_to_axis_angle(example_motion(num_frames).relative_rotation)
    report = {"num_frames": num_frames, "refine_fps": round(fps, 1)}
    for name, model in models().items():
        for stage, landmarks in (("before", track), ("after", after)):
            cropped = crop_track(landmarks, matrix, 512)
            head = model.fit(cropped)
            errors = rotation_errors(head, truth)
            entry = {"rotation_deg_mean": round(float(errors.mean()), 2),
                     "rotation_deg_max": round(float(errors.max()), 2),
                     "jitter_deg_per_frame": round(step_jitter(head.rotation), 4)}
            if name == "FLAME":
                entry["reprojection_px"] = reprojection_by_group(model, head, cropped.landmarks)
                entry["embedding_floor_px"] = round(embedding_floor_px(head), 2)
            report[f"{name}/{stage}"] = entry
    return report


def held_out_motion(num_frames: int, seed: int):
    from magicportrait.pipelines.example import ExampleMotion

    rng = np.random.default_rng(seed)
    phase = np.arange(num_frames) / num_frames
    rates, offsets = rng.uniform(0.8, 1.6, 3), rng.uniform(0, 2 * np.pi, 3)
    euler = np.stack([amplitude * np.sin(2 * np.pi * rate * phase + offset)
                      for amplitude, rate, offset in zip((30.0, 15.0, 8.0), rates, offsets, strict=True)], axis=-1)
    jaw = 12.0 * np.clip(np.sin(2 * np.pi * 1.3 * phase + offsets[0]), 0, 1) ** 2
    brows = 0.3 * np.clip(np.sin(2 * np.pi * 0.9 * phase + offsets[1]), 0, 1) ** 2
    return ExampleMotion(euler, jaw, brows)


def held_out_faces(limit: int | None) -> list[tuple[str, np.ndarray, int | None]]:
    demo = fetch_samples(CACHE)
    faces = [(f"sample{sample}-face{face}", load_rgb(demo / f"sample{sample}.jpg"), face)
             for sample, boxes in FACE_BOXES.items() for face in range(len(boxes))]
    grace = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    faces.append(("grace-hopper", load_rgb(grace), None))
    return faces[:limit] if limit else faces


def held_out(limit: int | None) -> dict:
    """Before / after per held-out face, and the summary over faces."""
    from magicportrait.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
    from magicportrait.heads.mediapipe_mesh import MediaPipeHeadModel
    from magicportrait.pipelines.example import example_head_track, render_example_frames

    renderer_model, fitted = MediaPipeHeadModel(), models()
    per_face = {}
    for seed, (name, image, face) in enumerate(held_out_faces(limit)):
        crop, portrait = face_crop(image, face if face is not None else 0)
        truth = example_head_track(renderer_model.fit(portrait), held_out_motion(HELD_OUT_FRAMES, seed))
        track, read_frames = tracked_video(list(render_example_frames(crop, portrait.landmarks[0], truth,
                                                                      renderer_model)))
        if track.detected.mean() < 0.9:
            per_face[name] = {"skipped": f"MediaPipe found the face in {track.detected.mean():.0%} of the frames"}
            continue
        matrices = axis_angle_to_matrix(truth.rotation.astype(np.float64))
        true_relative = matrix_to_axis_angle(matrices @ np.swapaxes(matrices[:1], -1, -2))
        after, _ = refined(track, read_frames)
        contact_sheet(read_frames, track, after, truth, renderer_model, OUTPUT / f"{name}.png")
        per_face[name] = {f"{model_name}/{stage}": [round(float(rotation_errors(head, true_relative).mean()), 2),
                                                    round(step_jitter(head.rotation), 4)]
                          for model_name, model in fitted.items()
                          for stage, head in (("before", model.fit(track)), ("after", model.fit(after)))}
    return {"frames": HELD_OUT_FRAMES, "per_face": per_face, "summary": summarise(per_face)}


def contact_sheet(read_frames, before, after, truth, model, path: Path, columns: int = 5, tile: int = 320) -> None:
    """Frames spread over the clip, zoomed on the face: every third true landmark (white), before (red) and after
    (green) the refinement."""
    import cv2

    from magicportrait.io.image import save_image

    true = model.posed_vertices(truth)
    picks = set(np.linspace(0, before.num_frames - 1, columns).round().astype(int).tolist())
    tiles = []
    for index, frame in enumerate(read_frames()):
        if index not in picks:
            continue
        low, high = true[index, :, :2].min(0), true[index, :, :2].max(0)
        zoom = tile / (1.3 * float((high - low).max()))
        shift = tile / 2 - zoom * (low + high) / 2
        view = cv2.warpAffine(frame, np.array([[zoom, 0, shift[0]], [0, zoom, shift[1]]]), (tile, tile),
                              flags=cv2.INTER_LINEAR)
        for points, colour in ((true, (255, 255, 255)), (before.landmarks, (255, 40, 40)),
                               (after.landmarks, (40, 255, 40))):
            for x, y in points[index, ::3, :2] * zoom + shift:
                cv2.circle(view, (int(round(x)), int(round(y))), 2, colour, -1, lineType=cv2.LINE_AA)
        tiles.append(view)
    save_image(path, np.concatenate(tiles, axis=1))


def summarise(per_face: dict) -> dict:
    measured = [entry for entry in per_face.values() if "skipped" not in entry]
    summary = {}
    for key in measured[0] if measured else ():
        errors = np.array([entry[key][0] for entry in measured])
        jitter = np.array([entry[key][1] for entry in measured])
        summary[key] = {"faces": len(errors), "mean": round(float(errors.mean()), 2),
                        "median": round(float(np.median(errors)), 2), "worst": round(float(errors.max()), 2),
                        "jitter": round(float(jitter.mean()), 3)}
    return summary


def section(report: dict) -> list[str]:
    example, held = report["example"], report["held_out"]
    lines = [MARKS[0], "", "## Head pose: photometric refinement (issue 16, section 4)", "",
             f"{report['machine']}. `python benchmarks/bench_pose_refinement.py`. Before: our fit of MediaPipe's "
             "landmarks; after: the same once `refine_pose_photometric` has moved each frame to the pose its "
             "texture gives (the default of guide / animate, `--pose-refinement photometric`). Rotation errors "
             "relative to frame 0, mean over frames.", "",
             f"Bundled example, {example['num_frames']} frames, the guide's 512x512 face crop (refinement: "
             f"{example['refine_fps']:.0f} frames/s on 2 threads, frames re-read from the video):", "",
             "| head model | rotation, before | rotation, after | jitter before -> after (deg/frame) | "
             "reprojection (FLAME, px) before -> after | target |", "|---|---|---|---|---|---|"]
    for name in ("open geometry", "FLAME"):
        before, after = example[f"{name}/before"], example[f"{name}/after"]
        reprojection = (f"{before['reprojection_px']['all']:.2f} -> {after['reprojection_px']['all']:.2f} (the "
                        f"embedding's own spread: {after['embedding_floor_px']:.2f})" if name == "FLAME" else "—")
        lines.append(f"| {name} | {before['rotation_deg_mean']:.2f} deg (max {before['rotation_deg_max']:.1f}) | "
                     f"**{after['rotation_deg_mean']:.2f} deg** (max {after['rotation_deg_max']:.1f}) | "
                     f"{before['jitter_deg_per_frame']:.3f} -> {after['jitter_deg_per_frame']:.3f} | {reprojection} "
                     f"| <= {TARGET_DEG} deg{'; <= 2.0 px' if name == 'FLAME' else ''} |")
    summary = held["summary"]
    skipped = [name for name, entry in held["per_face"].items() if "skipped" in entry]
    lines += ["", f"Held-out faces and poses ({next(iter(summary.values()))['faces'] if summary else 0} real faces, "
              f"{held['frames']} frames each, yaw up to 30 deg, pitch 15, roll 8; skipped: "
              f"{', '.join(skipped) or 'none'}):", "",
              "| head model | before: mean / median / worst face | after: mean / median / worst face | "
              "jitter before -> after |", "|---|---|---|---|"]
    for name in ("open geometry", "FLAME"):
        before, after = summary.get(f"{name}/before"), summary.get(f"{name}/after")
        if before and after:
            lines.append(f"| {name} | {before['mean']:.2f} / {before['median']:.2f} / {before['worst']:.2f} deg | "
                         f"**{after['mean']:.2f}** / {after['median']:.2f} / {after['worst']:.2f} deg | "
                         f"{before['jitter']:.3f} -> {after['jitter']:.3f} |")
    return lines + ["", MARKS[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 example frames and 3 held-out faces; the docs "
                        "are not touched.")
    args = parser.parse_args()
    torch.set_num_threads(2)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    if not PARTIAL_MODEL.is_file():
        raise SystemExit(f"error: the shared partial FLAME model is not at {PARTIAL_MODEL}.")
    report = {"machine": f"x86_64, 2 cores, torch {torch.__version__} (2 threads), {time.strftime('%Y-%m-%d')}",
              "example": example_loop(40 if args.quick else 300), "held_out": held_out(3 if args.quick else None)}
    (OUTPUT / "pose_refinement.json").write_text(json.dumps(report, indent=2))
    print("\n".join(section(report)))
    if not args.quick:
        write_docs(ROOT / "docs" / "benchmarks.md", section(report), MARKS)


if __name__ == "__main__":
    main()
