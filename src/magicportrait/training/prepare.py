"""``magicportrait prepare VIDEOS_DIR -o DATA_DIR``: a folder of face videos -> the training dataset.

Per clip (streamed, the video is decoded twice and never held in memory): track the face -> crop every frame to
``size`` with its own smoothed box -> fit the head model on the crop-space track -> render the depth / normal /
render maps of the clip's own head in each frame's crop (the render map's texture is the clip's first frame with a
detected face, as the guide stage does with a source portrait) -> write PNGs, ``track.npz``, ``head.npz`` and
``clip.json`` into ``DATA_DIR/clips/<name>/``.

A clip folder is built in a hidden staging folder and renamed when complete (``clip.json`` is written last), so a
rerun skips finished clips and redoes an interrupted one. Unreadable videos and videos without a face are listed
under ``"skipped"`` in ``manifest.json`` instead of stopping the run (a rerun tries them again). The manifest is
rebuilt on every run from all ``clips/*/clip.json`` files plus this run's skipped list.
The format is the contract with the trainers:

    manifest.json: {"version": 1, "size": int, "head_model": "mediapipe" | "flame",
                    "clips": [clip entries, as in each clip.json], "skipped": [{"video": str, "reason": str}]}
    clips/<name>/frames|depth|normal|render/frame_0001.png ..., track.npz, head.npz, clip.json
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
from tqdm.auto import tqdm

from magicportrait.batch.engines import EngineConfig
from magicportrait.config import (
    DATASET,
    INPUT,
    OUTPUT,
    check_at_least,
    check_device,
    check_range,
    option,
)
from magicportrait.errors import InputError, MagicPortraitError
from magicportrait.heads import HeadModelConfig, head_model_from_config
from magicportrait.heads.flame_codes import codes_appearance, head_track_from_codes
from magicportrait.io.frames import MANIFEST_VERSION, FrameFolder
from magicportrait.rendering.appearance import source_appearance
from magicportrait.rendering.guidance import render_guidance
from magicportrait.tracking import FaceTracker, TrackerConfig
from magicportrait.tracking.boxes import crop_face, crop_matrix, crop_track, landmark_bboxes
from magicportrait.tracking.flame_encoders import load_flame_encoders
from magicportrait.types import GUIDANCE_NAMES, FlameCodes, HeadTrack, SourceFace, Track

logger = logging.getLogger(__name__)

FRAME_FOLDERS = ("frames", *GUIDANCE_NAMES)
BLUR_SIDE = 256  # sharpness is measured on the grey crop resized to this side, so it does not depend on ``size``
# Variance of the Laplacian of a 256 px grey face crop: sharp talking-head footage (CelebV-HQ-like) gives
# roughly 50-500; heavily defocused or upscaled low-resolution faces fall below ~10. 10 drops only the
# clearly blurry clips (raise it for a stricter dataset).
DEFAULT_BLUR_THRESHOLD = 10.0
PNG_COMPRESSION = 3  # zlib level: a good size / speed trade-off for a dataset read many times


@dataclass
class PrepareConfig:
    """Options of dataset preparation (the CLI's ``prepare`` flags)."""

    cli_group: ClassVar[str] = DATASET
    cli_field_groups: ClassVar[dict[str, str]] = {"max_frames": INPUT, "show_progress": OUTPUT}

    size: int = option(512, "Side of the square face crops and guidance maps, pixels (512 matches the model).")
    max_frames: int | None = option(None, "Use only the first N frames of each video.")
    min_face_px: float = option(128.0, "A clip is too small when its median face box side (landmark box, original "
                                       "video pixels) is below this.")
    blur_threshold: float = option(DEFAULT_BLUR_THRESHOLD, "A clip is too blurry when the median variance of the "
                                   f"Laplacian of its grey face crops (resized to {BLUR_SIDE} px) is below this.")
    max_lost: float = option(0.2, "A clip is unusable when more than this fraction of its frames has no face.")
    chunk_size: int = option(8, "Frames rendered per batch.")
    device: str = option("cpu", "Torch device for rendering, e.g. cpu or cuda.")
    show_progress: bool = option(True, "Show a progress bar over the clips.")
    head: HeadModelConfig = field(default_factory=HeadModelConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)  # --workers N local processes, or --engine ray

    def __post_init__(self) -> None:
        check_range(self, "size", 64, 2048)  # 512 matches the diffusion model
        check_at_least(self, 1, "max_frames", "chunk_size")
        check_range(self, "max_lost", 0, 1)  # a fraction of the frames
        check_at_least(self, 0, "min_face_px", "blur_threshold")
        check_device(self)


# ----------------------------------------------------------------------------------------------- the whole run


def prepare_dataset(videos_dir: str | os.PathLike, data_dir: str | os.PathLike,
                    config: PrepareConfig | None = None) -> Path:
    """Prepare every video under ``videos_dir`` into ``data_dir``; return the path of ``manifest.json``."""
    from magicportrait.io.atomic import atomic_path, ensure_writable_dir

    config = config or PrepareConfig()
    videos_dir, data_dir = Path(videos_dir), Path(data_dir)
    if not videos_dir.is_dir():
        raise InputError(f"{videos_dir} is not a folder. Give the folder that holds your face videos.")
    head_model = _head_model_name(config)  # a missing FLAME file fails now, not after the first clip
    clips_dir = ensure_writable_dir(data_dir / "clips")
    _remove_stale_staging(clips_dir)
    videos, skipped = _find_clips(videos_dir)
    if not videos and not skipped:
        raise InputError(f"No videos found under {videos_dir} (looked for {', '.join(_video_extensions())}).")
    todo = {name: path for name, path in videos.items() if not (clips_dir / name / "clip.json").is_file()}
    logger.info("%d videos, %d already prepared, %d to do.", len(videos), len(videos) - len(todo), len(todo))
    skipped += _run_clips(todo, clips_dir, config)
    manifest = {"version": MANIFEST_VERSION, "size": config.size, "head_model": head_model,
                "clips": _finished_clips(clips_dir), "skipped": sorted(skipped, key=lambda item: item["video"])}
    path = data_dir / "manifest.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return path


def clip_name(video: Path, videos_dir: Path) -> str:
    """``a/b/c.mp4`` under ``videos_dir`` -> ``a__b__c``: unique per video, flat, readable."""
    return "__".join(video.relative_to(videos_dir).with_suffix("").parts)


def _video_extensions() -> tuple[str, ...]:
    from magicportrait.io.video import VIDEO_EXTENSIONS

    return VIDEO_EXTENSIONS


def _find_clips(videos_dir: Path) -> tuple[dict[str, Path], list[dict[str, str]]]:
    """Videos by clip name (hidden files and folders ignored); a second video with the same name is skipped."""
    videos: dict[str, Path] = {}
    skipped = []
    for path in sorted(videos_dir.rglob("*")):
        relative = path.relative_to(videos_dir)
        if not path.is_file() or path.suffix.lower() not in _video_extensions():
            continue
        if any(part.startswith(".") for part in relative.parts):
            continue
        name = clip_name(path, videos_dir)
        if name in videos:
            skipped.append({"video": str(path), "reason": f"same clip name '{name}' as {videos[name]}; rename one"})
            continue
        videos[name] = path
    return videos, skipped


def _remove_stale_staging(clips_dir: Path) -> None:
    """Staging folders left by an interrupted run (hidden folders in clips/) are deleted; their clips are redone."""
    for entry in clips_dir.iterdir():
        if entry.name.startswith(".") and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _finished_clips(clips_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(clips_dir.glob("*/clip.json"))]


def _head_model_name(config: PrepareConfig) -> str:
    config.head.flame_texture_path()  # a missing texture file (or DECA / SMIRK weights) fails now too
    config.head.encoders.weight_paths()
    return config.head.model_name


def _run_clips(todo: dict[str, Path], clips_dir: Path, config: PrepareConfig) -> list[dict[str, str]]:
    """Prepare the clips in ``todo`` on the configured engine (here, local processes or Ray workers, each with its
    own tracker and head model); return the skipped videos."""
    from magicportrait.batch.engines import TaskFailure, run_tasks

    items = [(video, clips_dir / name) for name, video in todo.items()]
    skipped = []
    with tqdm(total=len(items), desc="prepare", unit="clip", disable=not config.show_progress) as progress:
        for index, result in run_tasks(PreparerFactory(config), items, config.engine):
            if isinstance(result, TaskFailure):
                result = {"video": str(items[index][0]), "reason": result.message}
            skipped += [] if result is None else [result]
            progress.update(1)
    return skipped


@dataclass(frozen=True)
class PreparerFactory:
    """Makes a :class:`ClipPreparer` in each worker's process (picklable)."""

    config: PrepareConfig

    def __call__(self) -> ClipPreparer:
        return ClipPreparer(self.config)


# ------------------------------------------------------------------------------------------------ one clip


@dataclass
class CroppedClip:
    """Pass two's results: the crop-space track, the sharpness per frame, the texture frame for the render map."""

    track: Track
    sharpness: np.ndarray  # (T,) variance of the Laplacian per frame
    texture_index: int
    texture: np.ndarray  # (size, size, 3) uint8


class ClipPreparer:
    """Prepares clips one by one with one face tracker and one head model (one per worker process)."""

    def __init__(self, config: PrepareConfig) -> None:
        self.config = config
        self.head_model = head_model_from_config(config.head)
        self.encoders = load_flame_encoders(config.head.encoders, self.head_model.name, config.device)
        self.tracker = FaceTracker(replace(config.tracker, show_progress=False))

    def __enter__(self) -> ClipPreparer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.tracker.close()

    def __call__(self, item: tuple[Path, Path]) -> dict[str, str] | None:
        """One engine item: ``(video, clip_dir)`` -> :meth:`safe_prepare`."""
        return self.safe_prepare(*item)

    def safe_prepare(self, video: Path, clip_dir: Path) -> dict[str, str] | None:
        """Prepare one clip; return None, or ``{"video", "reason"}`` when it had to be skipped."""
        try:
            self.prepare(video, clip_dir)
        except MagicPortraitError as exc:
            logger.warning("Skipping %s: %s", video, exc)
            return {"video": str(video), "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a damaged file can fail deep inside FFmpeg; never stop the run
            logger.warning("Skipping %s", video, exc_info=True)
            return {"video": str(video), "reason": f"{type(exc).__name__}: {exc}"}
        return None

    def prepare(self, video: Path, clip_dir: Path) -> dict[str, Any]:
        """Write one complete clip folder (atomically) and return its manifest entry."""
        from magicportrait.io.atomic import atomic_dir
        from magicportrait.io.video import probe_video

        info = probe_video(video)
        track = self.tracker.track_frames(self._frames(video), fps=info.fps, source=str(video),
                                          num_frames=min(info.num_frames, self.config.max_frames or info.num_frames))
        if self.encoders is None and self.config.tracker.pose_refinement == "photometric":
            from magicportrait.tracking.photometric import refine_pose_photometric

            track = refine_pose_photometric(lambda: self._frames(video), track)  # as guide does for a driving video
        with atomic_dir(clip_dir) as stage:
            for folder in FRAME_FOLDERS:
                (stage / folder).mkdir()
            cropped = self._write_crops(video, track, stage / "frames")
            head, codes = self._fit(cropped, stage / "frames")
            self._write_maps(cropped, head, stage, codes)
            cropped.track.save(stage / "track.npz")
            head.save(stage / "head.npz")
            entry = self._entry(clip_dir, video, info.fps, track, cropped)
            (stage / "clip.json").write_text(json.dumps(entry, indent=1))
        return entry

    def _frames(self, video: Path) -> Iterator[np.ndarray]:
        from magicportrait.io.video import iter_frames

        return islice(iter_frames(video), self.config.max_frames)

    def _write_crops(self, video: Path, track: Track, folder: Path) -> CroppedClip:
        """Pass two: crop each frame with its own smoothed box, write it, measure its sharpness."""
        size, matrices = self.config.size, np.stack([crop_matrix(box, self.config.size) for box in track.boxes])
        frames = FrameFolder(folder, track.num_frames)
        texture_index = int(np.flatnonzero(track.detected)[0])
        texture, sharpness, count = None, [], 0
        for index, frame in enumerate(self._frames(video)):
            if index >= track.num_frames:
                break
            crop = crop_face(frame, track.boxes[index], size)
            frames.write(index, crop, PNG_COMPRESSION)
            sharpness.append(laplacian_variance(crop))
            if index == texture_index:
                texture = crop
            count = index + 1
        if count != track.num_frames or texture is None:
            raise InputError(f"{video}: {count} frames decoded on the second pass, {track.num_frames} on the first. "
                             "The file may be damaged; re-export it.")
        return CroppedClip(track=crop_track(track, matrices, size), sharpness=np.asarray(sharpness),
                           texture_index=texture_index, texture=texture)

    def _fit(self, cropped: CroppedClip, frames: Path) -> tuple[HeadTrack, FlameCodes | None]:
        """The clip's head per frame: our fit, or (``--tracker deca-smirk`` / ``smirk``) each crop's own codes."""
        if self.encoders is None:
            return self.head_model.fit(cropped.track), None
        folder = FrameFolder(frames, cropped.track.num_frames)
        codes = self.encoders.encode_frames((folder.read(i) for i in range(len(folder))), cropped.track)
        return head_track_from_codes(self.head_model, codes, fps=cropped.track.fps), codes

    def _write_maps(self, cropped: CroppedClip, head: HeadTrack, stage: Path, codes: FlameCodes | None) -> None:
        """The clip's own head rendered in each frame's crop, textured (open geometry) by its first face frame."""
        first = cropped.texture_index
        track, head_first = cropped.track.select(slice(first, first + 1)), head.select(slice(first, first + 1))
        config = self.config
        texture_path = config.head.flame_texture_path()
        appearance = None
        if codes is not None:
            appearance = codes_appearance(self.head_model, codes.select(slice(first, first + 1)), texture_path)
        if appearance is None:
            appearance = source_appearance(self.head_model, cropped.texture, track, head_first,
                                           texture_path=texture_path)
        source = SourceFace(crop=cropped.texture, crop_matrix=np.eye(2, 3), track=track, head=head_first,
                            appearance=appearance)
        folders = {name: FrameFolder(stage / name, head.num_frames) for name in GUIDANCE_NAMES}
        index = 0
        for maps in render_guidance(self.head_model, source, head, config.chunk_size, config.device):
            for i in range(len(maps["depth"])):
                for name, folder in folders.items():
                    folder.write(index, maps[name][i], PNG_COMPRESSION)
                index += 1

    def _entry(self, clip_dir: Path, video: Path, fps: float, track: Track, cropped: CroppedClip) -> dict[str, Any]:
        config = self.config
        flags = quality_flags(track, cropped.sharpness, config)
        usable = (not flags["too_small"] and not flags["too_blurry"]
                  and flags["face_lost_fraction"] <= config.max_lost)
        return {"name": clip_dir.name, "path": f"clips/{clip_dir.name}", "video": str(video),
                "num_frames": track.num_frames, "fps": float(fps), "flags": flags, "usable": bool(usable)}


# --------------------------------------------------------------------------------------------------- helpers


def laplacian_variance(rgb: np.ndarray) -> float:
    """Sharpness of a face crop: variance of the Laplacian of its grey image at :data:`BLUR_SIDE` pixels."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    interpolation = cv2.INTER_AREA if grey.shape[0] > BLUR_SIDE else cv2.INTER_LINEAR
    grey = cv2.resize(grey, (BLUR_SIDE, BLUR_SIDE), interpolation=interpolation)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def face_sides(track: Track) -> np.ndarray:
    """Larger side of each detected frame's landmark box (the face itself, not the crop), original pixels."""
    bboxes = landmark_bboxes(track.landmarks[track.detected])
    return np.maximum(bboxes[:, 2] - bboxes[:, 0], bboxes[:, 3] - bboxes[:, 1])


def quality_flags(track: Track, sharpness: np.ndarray, config: PrepareConfig) -> dict[str, Any]:
    """face_lost_fraction, too_small (median face side), too_blurry (median sharpness) of one clip."""
    lost = float(np.mean(~track.detected))
    return {"face_lost_fraction": round(lost, 6),
            "too_small": bool(np.median(face_sides(track)) < config.min_face_px),
            "too_blurry": bool(np.median(sharpness) < config.blur_threshold)}
