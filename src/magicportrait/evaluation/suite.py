"""``magicportrait evaluate``: the paper's metrics on one generated video, offline and reproducible.

Cross-reenactment (no ground truth): CSIM (source vs each generated frame), FID/KID and FVD (generated vs the
driving video), APD / P-RMSE (relative pose by default) and AED / E-RMSE (generated vs driving motion), motion
transfer (correlation of the motion over time), jitter, face-region flicker and the artefact score.
Self-reenactment (``gt`` given, e.g. the driving clip itself): also LPIPS, PSNR, SSIM and LMD against the ground
truth, and FID/KID/FVD against the ground truth instead of the driving video. Frame-aligned comparisons use the
shorter video's length; a ground truth of another size is resized to the generated frames' size. Every metric, which
way is good and what a frozen video scores: docs/metrics.md.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from magicportrait.config import (
    EVALUATION,
    FACE,
    INPUT,
    OUTPUT,
    check_at_least,
    check_choices,
    check_device,
    flag,
    option,
)
from magicportrait.errors import InputError
from magicportrait.heads.factory import HeadModelConfig, head_model_from_config

logger = logging.getLogger(__name__)

ALL_METRICS = ("csim", "lpips", "psnr", "ssim", "fid", "kid", "fvd", "apd", "p_rmse", "aed", "e_rmse", "lmd",
               "motion_transfer", "jitter", "flicker", "artefact_frames", "duplication")
NEEDS_GROUND_TRUTH = ("lpips", "psnr", "ssim", "lmd")
HIGHER_IS_BETTER = {"csim", "psnr", "ssim", "motion_transfer"}
MOTION = ("apd", "p_rmse", "aed", "e_rmse", "motion_transfer")  # need both videos' head fits
ARTEFACTS = ("artefact_frames", "duplication")
LABELS = {"csim": "CSIM", "lpips": "LPIPS", "psnr": "PSNR (dB)", "ssim": "SSIM", "fid": "FID", "kid": "KID",
          "fvd": "FVD", "apd": "APD (deg)", "p_rmse": "P-RMSE (deg)", "aed": "AED", "e_rmse": "E-RMSE",
          "lmd": "LMD (px)", "motion_transfer": "motion transfer", "jitter": "jitter (px/frame^2)",
          "flicker": "flicker (grey levels)", "artefact_frames": "artefact frames", "duplication": "duplication"}
# the paper's tables first (CSIM, LPIPS, FID, FVD, APD, P-RMSE, AED, E-RMSE)
PAPER_ORDER = ("csim", "lpips", "fid", "fvd", "apd", "p_rmse", "aed", "e_rmse", "psnr", "ssim", "lmd", "kid",
               "motion_transfer", "jitter", "flicker", "artefact_frames", "duplication")
MIN_FVD_FRAMES = 32  # two 16-frame I3D clips per video at least (a Frechet distance needs two samples)
CURVE_LABELS = {**LABELS, "pose_error": "pose error (deg)", "expression_error": "expression error",
                "temporal_change": "face change vs neighbours (grey levels)"}


@dataclass
class EvaluationConfig:
    """Options of ``magicportrait evaluate`` (and of the ``benchmark`` protocol's evaluation)."""

    cli_group: ClassVar[str] = EVALUATION
    cli_field_groups: ClassVar[dict[str, str]] = {"max_frames": INPUT, "write_plots": OUTPUT,
                                                  "show_progress": OUTPUT, "face": FACE, "driving_face": FACE}

    metrics: str = option("all", f"Comma-separated metrics to compute (default all that apply): "
                                 f"{', '.join(ALL_METRICS)}.")
    pose: Literal["auto", "absolute", "relative"] = option(
        "auto", "APD/P-RMSE on head rotations relative to each video's first frame (relative: what animate's default "
                "--pose-mode relative transfers) or on absolute rotations (the paper's; it also counts the portrait's "
                "own pose offset); auto: absolute with a ground truth (--gt), else relative.")
    face: int | None = option(None, "Which face of the generated video (and of the source and ground truth) to "
                                    "measure when it shows several: 0 is the leftmost in the first frame, 1 the next "
                                    "...; default: for a magicportrait output folder the face its generator "
                                    "animated (source_face.npz), else the most prominent one.")
    driving_face: int | None = option(None, "Which face of the driving video to compare with (numbered the same "
                                            "way); default: the most prominent one, as animate tracks it.")
    arcface: str | None = option(None, "ArcFace ONNX model for CSIM instead of dlib's face-recognition ResNet (needs "
                                       "onnxruntime).")
    max_frames: int | None = option(None, "Evaluate only the first N frames.")
    batch_size: int = option(8, "Frames per batch for the networks.")
    device: str = option("cpu", "Torch device for the networks.")
    write_plots: bool = option(True, "Write per-frame plots (PNG) of the metrics that vary over time.")
    show_progress: bool = option(True, "Show progress bars.")
    head: HeadModelConfig = field(default_factory=HeadModelConfig)  # FLAME: motion metrics on FLAME parameters

    def __post_init__(self) -> None:
        self.selected()  # fail early on an unknown name
        check_choices(self)
        check_at_least(self, 1, "max_frames", "batch_size")
        check_at_least(self, 0, "face", "driving_face")
        check_device(self)

    def selected(self) -> tuple[str, ...]:
        if self.metrics.strip() in ("", "all"):
            return ALL_METRICS
        names = tuple(name.strip().lower().replace("-", "_") for name in self.metrics.split(","))
        unknown = [name for name in names if name not in ALL_METRICS]
        if unknown:
            raise InputError(f"Unknown metric(s) in {flag('metrics')}: {', '.join(unknown)}. Choose from: "
                             f"{', '.join(ALL_METRICS)}.")
        return names

    def pose_mode(self, has_ground_truth: bool) -> str:
        """The pose comparison used: ``pose``, with auto resolved (absolute for self-reenactment)."""
        if self.pose != "auto":
            return self.pose
        return "absolute" if has_ground_truth else "relative"


@dataclass
class EvaluationReport:
    """Metric values, per-frame curves and how they were measured."""

    values: dict[str, float]
    per_frame: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"metrics": {k: _json_number(v) for k, v in self.values.items()}, "info": self.info,
                "per_frame": {k: [_json_number(x) for x in np.asarray(v, float)] for k, v in self.per_frame.items()}}

    def markdown(self) -> str:
        """One-row table in the paper's layout (arrows say which way is better)."""
        names = [name for name in PAPER_ORDER if name in self.values]
        header = "| " + " | ".join(f"{LABELS[n]} {'↑' if n in HIGHER_IS_BETTER else '↓'}" for n in names) + " |"
        rule = "|" + "---|" * len(names)
        row = "| " + " | ".join(_format(self.values[n]) for n in names) + " |"
        notes = [f"- {key}: {_note(value)}" for key, value in self.info.items() if _note(value) is not None]
        return "\n".join([header, rule, row, "", *notes]) + "\n"

    def save(self, output_dir: str | Path, plots: bool = True) -> dict[str, Path]:
        """Write metrics.json, metrics.md and (``plots``) per-frame curves as plots/*.png; returns the paths."""
        from magicportrait.io.atomic import atomic_path

        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        files = {"json": output_dir / "metrics.json", "markdown": output_dir / "metrics.md"}
        with atomic_path(files["json"]) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        with atomic_path(files["markdown"]) as tmp:
            Path(tmp).write_text(self.markdown())
        if plots and self.per_frame:
            files["plots"] = self._plot(output_dir / "plots")
        return files

    def _plot(self, folder: Path) -> Path:
        """One PNG per per-frame curve, plus all of them stacked in per_frame.png."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        folder.mkdir(parents=True, exist_ok=True)
        names = list(self.per_frame)
        figure, axes = plt.subplots(len(names), 1, figsize=(8, 1.8 * len(names)), sharex=True, squeeze=False)
        for axis, name in zip(axes[:, 0], names, strict=True):
            axis.plot(np.asarray(self.per_frame[name], float), linewidth=1.2)
            axis.set_ylabel(CURVE_LABELS.get(name, name), fontsize=8)
            axis.grid(alpha=0.3)
            single, single_axis = plt.subplots(figsize=(8, 2.5))
            single_axis.plot(np.asarray(self.per_frame[name], float), linewidth=1.2)
            single_axis.set(xlabel="frame", ylabel=CURVE_LABELS.get(name, name))
            single_axis.grid(alpha=0.3)
            single.tight_layout()
            single.savefig(folder / f"{name}.png", dpi=100)
            plt.close(single)
        axes[-1, 0].set_xlabel("frame")
        figure.tight_layout()
        figure.savefig(folder / "per_frame.png", dpi=100)
        plt.close(figure)
        return folder


def _note(value) -> str | None:
    """A report note's text: plain values, and flat dicts of numbers (per-channel values); None: not a note."""
    if isinstance(value, dict):
        if not value or not all(isinstance(v, (int, float)) or v is None for v in value.values()):
            return None
        return ", ".join(f"{k} {_format(float('nan') if v is None else float(v))}" for k, v in value.items())
    return None if isinstance(value, list) else str(value)


def _json_number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else (value if math.isfinite(value) else (1e309 if value > 0 else -1e309))


def _format(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


@dataclass
class _Inputs:
    generated: np.ndarray  # (T, H, W, 3) uint8
    driving: np.ndarray
    source: np.ndarray  # (H, W, 3)
    ground_truth: np.ndarray | None
    fps: float
    face_box: np.ndarray | None = None  # the generator's face crop in generated-frame pixels (x0, y0, x1, y1)


class Evaluator:
    """Computes the metrics (networks are loaded on first use and kept for further videos)."""

    def __init__(self, config: EvaluationConfig | None = None) -> None:
        self.config = config or EvaluationConfig()
        self._networks: dict[str, object] = {}

    # ---------------------------------------------------------------------------------------------- public
    def evaluate(self, generated, driving, source: np.ndarray, ground_truth=None, fps: float = 25.0,
                 face_box: np.ndarray | None = None) -> EvaluationReport:
        """Metrics of ``generated`` frames made from ``source`` and ``driving`` frames (+ ``ground_truth``).

        ``face_box``: (x0, y0, x1, y1) generated-frame pixels of the face the generator made; without
        ``config.face`` the face nearest it is measured (in the generated video, the source and the ground truth).
        """
        inputs = self._prepare(generated, driving, source, ground_truth, fps)
        inputs.face_box = None if face_box is None else np.asarray(face_box, np.float64)
        wanted = self._applicable(inputs)
        values: dict[str, float] = {}
        per_frame: dict[str, np.ndarray] = {}
        tracks = self._tracks(inputs, wanted)
        info: dict = {}
        for group in (self._identity, self._image_quality, self._distributions, self._motion, self._stability,
                      self._artefacts):
            group(inputs, tracks, wanted, values, per_frame)
        info.update(tracks.get("info", {}))
        reference = "ground truth" if inputs.ground_truth is not None else "driving video"
        info = {"protocol": "self-reenactment" if inputs.ground_truth is not None else "cross-reenactment",
                "frames": int(len(inputs.generated)), "frame_size": list(inputs.generated.shape[1:3]),
                "fid_fvd_reference": reference, "head_model": tracks.get("head_model", "n/a"),
                "pose": self.config.pose_mode(inputs.ground_truth is not None), **info,
                "skipped": sorted(set(self.config.selected()) - set(values))}
        return EvaluationReport(values={k: values[k] for k in ALL_METRICS if k in values}, per_frame=per_frame,
                                info=info)

    # ------------------------------------------------------------------------------------------ plumbing
    def _prepare(self, generated, driving, source, ground_truth, fps) -> _Inputs:
        limit = self.config.max_frames
        generated = _frames(generated, "generated video", limit)
        driving = _frames(driving, "driving video", limit)
        if ground_truth is not None:
            ground_truth = _frames(ground_truth, "ground truth", limit)
            if ground_truth.shape[1:3] != generated.shape[1:3]:
                logger.info("Resizing the ground truth from %dx%d to the generated %dx%d frames.",
                            ground_truth.shape[2], ground_truth.shape[1], generated.shape[2], generated.shape[1])
                ground_truth = _resize_frames(ground_truth, generated.shape[1:3])
        return _Inputs(generated, driving, np.asarray(source), ground_truth, fps)

    def _applicable(self, inputs: _Inputs) -> set[str]:
        wanted = set(self.config.selected())
        if inputs.ground_truth is None:
            dropped = wanted & set(NEEDS_GROUND_TRUTH)
            if dropped and self.config.metrics.strip() not in ("", "all"):
                logger.warning("%s need a ground truth (--gt); skipped.", ", ".join(sorted(dropped)))
            wanted -= set(NEEDS_GROUND_TRUTH)
        reference = inputs.ground_truth if inputs.ground_truth is not None else inputs.driving
        if "fvd" in wanted and min(len(inputs.generated), len(reference)) < MIN_FVD_FRAMES:
            logger.warning("FVD needs at least %d frames; skipped.", MIN_FVD_FRAMES)
            wanted.discard("fvd")
        return wanted

    def _network(self, name: str, build):
        if name not in self._networks:
            self._networks[name] = build()
        return self._networks[name]

    def _tracks(self, inputs: _Inputs, wanted: set[str]) -> dict:
        """Face tracks (and head fits) of the videos the wanted metrics need, all on the chosen face."""
        from magicportrait.evaluation.face_choice import scale_box, track_portrait, track_video
        from magicportrait.tracking import FaceTracker, TrackerConfig

        needs_motion = wanted & set(MOTION)
        needs_landmarks = needs_motion or wanted & {"csim", "lmd", "jitter", "flicker", *ARTEFACTS}
        if not needs_landmarks:
            return {}
        tracks: dict = {}
        face, box, size = self.config.face, inputs.face_box, inputs.generated.shape[1:3]
        config = TrackerConfig(show_progress=self.config.show_progress)
        with FaceTracker(config) as tracker:
            tracks["generated"] = track_video(tracker, inputs.generated, inputs.fps, "generated video", face, box)
            if wanted & {"csim", "duplication", "artefact_frames"}:
                tracks["source"] = track_portrait(tracker, inputs.source, "source image", face,
                                                  scale_box(box, size, inputs.source.shape[:2]))
            if needs_motion:
                tracks["driving"] = track_video(tracker, inputs.driving, inputs.fps, "driving video",
                                                self.config.driving_face, None)
            if inputs.ground_truth is not None and "lmd" in wanted:
                tracks["ground_truth"] = track_video(tracker, inputs.ground_truth, inputs.fps, "ground truth", face,
                                                     box)
        # the share of generated frames where the face was lost (no face found: the track filled them in)
        tracks["info"] = {"face_lost": float(1.0 - np.mean(tracks["generated"].detected))}
        if face is not None or box is not None:
            tracks["info"]["face"] = f"number {face}" if face is not None else "nearest the generator's crop"
        if needs_motion:
            tracks["heads"] = self._heads(inputs, tracks)
            tracks["head_model"] = tracks["heads"]["generated"].model
        return tracks

    def _heads(self, inputs: _Inputs, tracks: dict) -> dict:
        """Both videos' heads: our fit, or the paper's tracker (``--tracker smirk``: SMIRK's pose and expression
        parameters, as the paper's Table I measures APD and AED)."""
        names = ("generated", "driving")
        if not self.config.head.encoders.uses_encoders:
            model = self._head_model()
            return {name: model.fit(tracks[name]) for name in names}
        from magicportrait.evaluation.motion import head_from_codes
        from magicportrait.tracking.flame_encoders import FlameEncoders

        encoders = self._network("flame_encoders", lambda: FlameEncoders(self.config.head.encoders,
                                                                         self.config.device))
        frames = {"generated": inputs.generated, "driving": inputs.driving}
        return {name: head_from_codes(encoders.encode_frames(iter(frames[name]), tracks[name]), tracks[name].fps)
                for name in names}

    def _head_model(self):
        return self._network("head_model", lambda: head_model_from_config(self.config.head))

    # ------------------------------------------------------------------------------------------- metrics
    def _identity(self, inputs, tracks, wanted, values, per_frame) -> None:
        if "csim" not in wanted:
            return
        from magicportrait.evaluation.identity import identity_similarity

        similarity = identity_similarity(inputs.source, inputs.generated, self._embedder(),
                                         source_landmarks=tracks["source"].landmarks[0],
                                         frame_landmarks=_detected_landmarks(tracks["generated"]))
        per_frame["csim"] = similarity
        values["csim"] = float(np.nanmean(similarity)) if np.isfinite(similarity).any() else float("nan")

    def _embedder(self):
        from magicportrait.evaluation.identity import ArcFaceOnnxEmbedder, DlibFaceEmbedder

        if self.config.arcface:
            return self._network("arcface", lambda: ArcFaceOnnxEmbedder(self.config.arcface))
        return self._network("dlib", DlibFaceEmbedder.from_package)

    def _image_quality(self, inputs, tracks, wanted, values, per_frame) -> None:
        if inputs.ground_truth is None:
            return
        count = min(len(inputs.generated), len(inputs.ground_truth))
        generated, truth = inputs.generated[:count], inputs.ground_truth[:count]
        if "lpips" in wanted:
            from magicportrait.evaluation.lpips import LPIPS, lpips_distances

            model = self._network("lpips", LPIPS.from_package)
            per_frame["lpips"] = lpips_distances(generated, truth, batch_size=self.config.batch_size,
                                                 device=self.config.device, model=model)
            values["lpips"] = float(per_frame["lpips"].mean())
        if wanted & {"psnr", "ssim"}:
            from magicportrait.evaluation.image_quality import psnr_frames, ssim_frames

            for name, function in (("psnr", psnr_frames), ("ssim", ssim_frames)):
                if name in wanted:
                    per_frame[name] = function(generated, truth)
                    values[name] = float(np.mean(per_frame[name]))
        if "lmd" in wanted:
            from magicportrait.evaluation.motion import landmark_distance

            per_frame["lmd"] = landmark_distance(tracks["generated"], tracks["ground_truth"])
            values["lmd"] = float(per_frame["lmd"].mean())

    def _distributions(self, inputs, tracks, wanted, values, per_frame) -> None:
        reference = inputs.ground_truth if inputs.ground_truth is not None else inputs.driving
        if wanted & {"fid", "kid"}:
            from magicportrait.evaluation.fid import InceptionFeatures, fid_from_features, kid_from_features

            inception = self._network("inception", InceptionFeatures.from_package)
            ours = inception.features(inputs.generated, batch_size=self.config.batch_size)
            theirs = inception.features(reference, batch_size=self.config.batch_size)
            if "fid" in wanted:
                values["fid"] = float(fid_from_features(ours, theirs))
            if "kid" in wanted:
                values["kid"] = float(kid_from_features(ours, theirs)[0])
        if "fvd" in wanted:
            from magicportrait.evaluation.fvd import I3D, fvd_from_features

            i3d = self._network("i3d", I3D.from_package)
            values["fvd"] = float(fvd_from_features(i3d.video_features([inputs.generated]),
                                                    i3d.video_features([reference])))

    def _motion(self, inputs, tracks, wanted, values, per_frame) -> None:
        if not wanted & set(MOTION):
            return
        from magicportrait.evaluation.motion import compare_heads

        pose = self.config.pose_mode(inputs.ground_truth is not None)
        comparison = compare_heads(tracks["heads"]["generated"], tracks["heads"]["driving"], pose)
        per_frame["pose_error"] = comparison.pose_error.mean(axis=1)
        if comparison.expression_error.size:
            per_frame["expression_error"] = comparison.expression_error.mean(axis=1)
        for name in ("apd", "p_rmse", "aed", "e_rmse"):
            if name in wanted:
                values[name] = getattr(comparison, name)
        if "motion_transfer" in wanted:
            from magicportrait.evaluation.transfer import motion_signals, motion_transfer

            signals = {name: motion_signals(tracks["heads"][name], tracks[name].landmarks)
                       for name in ("generated", "driving")}
            transfer = motion_transfer(signals["generated"], signals["driving"])
            values["motion_transfer"] = transfer.mean
            tracks.setdefault("info", {})["motion_transfer"] = transfer.correlation

    def _stability(self, inputs, tracks, wanted, values, per_frame) -> None:
        from magicportrait.evaluation.motion import flicker, landmark_jitter

        if "jitter" in wanted:
            per_frame["jitter"] = landmark_jitter(tracks["generated"])
            values["jitter"] = float(per_frame["jitter"][1:-1].mean()) if len(per_frame["jitter"]) > 2 else 0.0
        if "flicker" in wanted:
            from magicportrait.evaluation.regions import face_boxes

            boxes = face_boxes(tracks["generated"].landmarks, inputs.generated.shape[1:3])
            per_frame["flicker"] = flicker(inputs.generated, boxes)
            values["flicker"] = float(per_frame["flicker"][1:].mean()) if len(inputs.generated) > 1 else 0.0

    def _artefacts(self, inputs, tracks, wanted, values, per_frame) -> None:
        if not wanted & set(ARTEFACTS):
            return
        from magicportrait.evaluation.artefacts import artefact_score

        report = artefact_score(inputs.generated, tracks["generated"].landmarks, inputs.source,
                                tracks["source"].landmarks[0])
        per_frame["temporal_change"], per_frame["duplication"] = report.temporal_change, report.duplication
        values["artefact_frames"] = report.artefact_frames
        values["duplication"] = float(report.duplication.mean())
        tracks.setdefault("info", {})["artefact_flagged_frames"] = report.flagged_frames


def _detected_landmarks(track) -> list[np.ndarray | None]:
    """Per-frame landmarks, None where the tracker did not see a face (interpolated frames are not faces)."""
    return [landmarks if seen else None for landmarks, seen in zip(track.landmarks, track.detected, strict=True)]


def _frames(frames, what: str, limit: int | None) -> np.ndarray:
    array = np.asarray(frames[:limit] if limit else frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise InputError(f"The {what} must be uint8 RGB frames (T, H, W, 3), got {array.dtype} {array.shape}.")
    if len(array) == 0:
        raise InputError(f"The {what} has no frames.")
    return array


def _resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    height, width = size
    return np.stack([cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA) for frame in frames])
