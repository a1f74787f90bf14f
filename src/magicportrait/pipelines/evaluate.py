"""``magicportrait evaluate`` and ``magicportrait benchmark``: the metrics on files and on a folder of clips.

- :func:`evaluate_files`: one generated video (a video file, a folder of frames, or a magicportrait result folder,
  whose ``result.mp4`` is used) against its driving video, source portrait and optional ground truth; writes
  ``metrics.json``, ``metrics.md`` (the paper's layout) and ``plots/``.
- :func:`run_benchmark`: the self-reenactment protocol on a folder of clips (CelebV-HQ style: one video per clip):
  each clip's first frame is the source, the clip is both the driving video and the ground truth; every clip is
  reenacted with the configured generator and evaluated; ``summary.json`` / ``summary.md`` hold the per-clip rows and
  their mean. A rerun skips clips that already have their metrics.
"""

from __future__ import annotations

import json
import logging
from itertools import islice
from pathlib import Path

import numpy as np

from magicportrait.errors import InputError
from magicportrait.evaluation.suite import LABELS, PAPER_ORDER, EvaluationConfig, EvaluationReport, Evaluator

logger = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v"}


def read_frames(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """`(T, H, W, 3)` uint8 frames and fps of a video file, a folder of image frames (sorted by name; 25 fps) or a
    magicportrait result folder (its result.mp4)."""
    from magicportrait.io.image import load_image
    from magicportrait.io.video import iter_frames, probe_video

    path = Path(path)
    if path.is_dir():
        if (path / "result.mp4").is_file():
            return read_frames(path / "result.mp4", max_frames)
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:max_frames]
        if not images:
            raise InputError(f"{path}: a folder without result.mp4 or image frames. Pass a video, a folder of "
                             f"frames, or a magicportrait output folder.")
        frames = [load_image(image) for image in images]
        if len({frame.shape for frame in frames}) > 1:
            raise InputError(f"{path}: the frames have different sizes.")
        return np.stack(frames), 25.0
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder.")
    info = probe_video(path)
    return np.stack(list(islice(iter_frames(path), max_frames))), info.fps


def evaluate_files(generated: str | Path, driving: str | Path, source: str | Path, ground_truth: str | Path | None,
                   output_dir: str | Path, config: EvaluationConfig | None = None,
                   evaluator: Evaluator | None = None) -> tuple[EvaluationReport, dict[str, Path]]:
    """Evaluate files and write the report into ``output_dir``; returns the report and the written files."""
    from magicportrait.io.image import load_image
    from magicportrait.io.output import output_folder

    config = config or EvaluationConfig()
    with output_folder(output_dir) as out:  # locked, and removed again on failure if it is new
        generated_frames, fps = read_frames(generated, config.max_frames)
        driving_frames, _ = read_frames(driving, config.max_frames)
        truth = read_frames(ground_truth, config.max_frames)[0] if ground_truth is not None else None
        evaluator = evaluator or Evaluator(config)
        portrait = load_image(source)
        box = generator_face_box(generated, generated_frames.shape[1:3], portrait.shape[:2])
        report = evaluator.evaluate(generated_frames, driving_frames, portrait, truth, fps=fps, face_box=box)
        report.info["inputs"] = {"generated": str(generated), "driving": str(driving), "source": str(source),
                                 "ground_truth": None if ground_truth is None else str(ground_truth)}
        with out.stage() as stage:
            files = report.save(stage, plots=config.write_plots)
    return report, {name: Path(output_dir) / path.relative_to(stage) for name, path in files.items()}


def generator_face_box(generated: str | Path, frame_size: tuple[int, int],
                       source_size: tuple[int, int]) -> np.ndarray | None:
    """The face crop a magicportrait run animated, as (x0, y0, x1, y1) pixels of its generated frames, or None.

    ``generated`` is a result folder (or its ``result.mp4`` / ``result_crop.mp4``) with ``source_face.npz``: its
    ``crop_matrix`` maps the portrait (``source_size``, H x W) to the crop. ``result.mp4`` beside
    ``result_crop.mp4`` is the portrait with the crop pasted back (possibly downscaled to ``frame_size``); otherwise
    the video is the crop itself (``--no-paste-back``), so its whole frame is the face's box.
    """
    from magicportrait.tracking import invert_affine, transform_points
    from magicportrait.types import SourceFace

    path = Path(generated)
    folder, name = (path, "result.mp4") if path.is_dir() else (path.parent, path.name)
    if not (folder / "source_face.npz").is_file() or name not in ("result.mp4", "result_crop.mp4"):
        return None
    height, width = frame_size
    if name == "result_crop.mp4" or not (folder / "result_crop.mp4").is_file():
        return np.array([0.0, 0.0, width, height])
    if abs(width / height - source_size[1] / source_size[0]) > 0.02:
        logger.warning("%s is not the size of the source portrait; the face to measure is not taken from its "
                       "source_face.npz (choose it with --face N).", path)
        return None
    face = SourceFace.load(folder / "source_face.npz")
    corners = transform_points(np.array([[0.0, 0.0], [face.size, face.size]]), invert_affine(face.crop_matrix))
    return corners.ravel() * (width / source_size[1])


def find_clips(folder: str | Path) -> list[Path]:
    """The video files in ``folder`` (and its sub-folders), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of clips.")
    clips = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not clips:
        raise InputError(f"{folder}: no video clips ({', '.join(sorted(VIDEO_SUFFIXES))}) found.")
    return clips


def run_benchmark(clips_dir: str | Path, output_dir: str | Path, animate_config=None,
                  evaluation_config: EvaluationConfig | None = None, max_clips: int | None = None) -> Path:
    """Self-reenactment on every clip of ``clips_dir`` (see the module docstring); returns the summary's path."""
    from magicportrait.pipelines.animate import AnimateConfig, load_pipeline

    animate_config = animate_config or AnimateConfig()
    evaluation_config = evaluation_config or EvaluationConfig()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    clips = find_clips(clips_dir)[:max_clips]
    pipeline, evaluator = None, Evaluator(evaluation_config)
    rows: dict[str, dict] = {}
    for index, clip in enumerate(clips):
        name = _clip_name(clip, Path(clips_dir))
        folder = output_dir / name
        metrics_file = folder / "metrics" / "metrics.json"
        if metrics_file.is_file():
            logger.info("[%d/%d] %s: already evaluated.", index + 1, len(clips), name)
        else:
            logger.info("[%d/%d] %s", index + 1, len(clips), name)
            try:
                source = _first_frame(clip, folder / "source.png")
                pipeline = pipeline or load_pipeline(animate_config)
                pipeline.run(source, clip, folder / "result")
                evaluate_files(folder / "result", clip, source, clip, folder / "metrics", evaluation_config,
                               evaluator)
            except InputError as error:  # a clip without a usable face: listed, the others go on
                logger.warning("%s skipped: %s", name, error)
                rows[name] = {"error": str(error)}
                continue
        rows[name] = json.loads(metrics_file.read_text())["metrics"]
    return _write_summary(output_dir, rows)


def _clip_name(clip: Path, root: Path) -> str:
    return "__".join(clip.relative_to(root).with_suffix("").parts)


def _first_frame(clip: Path, path: Path) -> Path:
    from magicportrait.io.image import save_image
    from magicportrait.io.video import iter_frames

    frame = next(iter_frames(clip), None)
    if frame is None:
        raise InputError(f"{clip}: no frames.")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(path, frame)
    return path


def _write_summary(output_dir: Path, rows: dict[str, dict]) -> Path:
    evaluated = {name: row for name, row in rows.items() if "error" not in row}
    names = [m for m in PAPER_ORDER if any(m in row for row in evaluated.values())]
    mean = {m: float(np.nanmean([_value(row.get(m)) for row in evaluated.values()])) for m in names}
    summary = {"clips": len(rows), "evaluated": len(evaluated), "mean": mean, "per_clip": rows}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["| clip | " + " | ".join(LABELS[m] for m in names) + " |", "|---|" + "---|" * len(names)]
    for name, row in evaluated.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(m)) for m in names) + " |")
    lines.append("| **mean** | " + " | ".join(_cell(mean[m]) for m in names) + " |")
    lines += [f"\n{name}: skipped ({row['error']})" for name, row in rows.items() if "error" in row]
    (output_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return output_dir / "summary.json"


def _value(value) -> float:
    return float("nan") if value is None else float(value)


def _cell(value) -> str:
    value = _value(value)
    return "n/a" if np.isnan(value) else f"{value:.4f}"
