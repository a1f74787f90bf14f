"""The stage calls that the guide and animate pipelines share: the source portrait prepared for generation, the
driving video tracked, its motion aligned to the source (or a saved motion checked and reused), and the driving
crops shown in previews. Each function calls the stages through their public functions and boundary types."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from magicportrait.alignment import align_to_source, edit_motion
from magicportrait.errors import InputError
from magicportrait.heads import HeadModel
from magicportrait.pipelines import paper_tracker
from magicportrait.rendering.appearance import source_appearance
from magicportrait.tracking import FaceTracker
from magicportrait.tracking.boxes import (
    crop_face,
    crop_matrix,
    crop_track,
    official_framing_box,
    parse_face_box,
)
from magicportrait.types import HeadTrack, SourceFace, Track

if TYPE_CHECKING:
    from magicportrait.pipelines.guide import GuideConfig
    from magicportrait.pipelines.paper_tracker import PaperTracker
    from magicportrait.pipelines.run_cache import RunCache

logger = logging.getLogger(__name__)
# A saved motion's crop must be this portrait's crop: re-tracking the same pixels gives the same box, up to float
# noise between machines.
CROP_TOLERANCE_PX, CROP_SCALE_TOLERANCE = 0.05, 1e-4


def image_digest(image: np.ndarray) -> str:
    """SHA-256 of an image's pixels and shape (not of its file: a re-saved copy of the same pixels matches)."""
    digest = hashlib.sha256(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def prepare_source(image: np.ndarray, tracker: FaceTracker, head_model: HeadModel, config: GuideConfig,
                   source_name: str = "", paper: PaperTracker | None = None) -> SourceFace:
    """Track the chosen face of the portrait, crop it to ``config.size``, fit the head model (or encode it with the
    paper's tracker), estimate the render map's appearance."""
    face_box = None if config.face_box is None else parse_face_box(config.face_box)
    track = tracker.track_image(image, source=source_name, face_index=config.face, face_box=face_box)
    num_faces = int(track.num_faces[0])
    if num_faces > 1 and face_box is None:
        number = config.face if config.face is not None else tracker.face_number(image, track.landmarks[0],
                                                                                  source_name)
        logger.info("%d faces found in %s; using face %s (numbered from the left; choose with --face N).",
                    num_faces, source_name or "the source portrait",
                    "the most prominent one" if number is None else number)
    size = config.size
    box = official_framing_box(track.landmarks[0]) if config.framing == "official" else track.boxes[0]
    matrix = crop_matrix(box, size)
    crop = crop_face(image, box, size)
    cropped = crop_track(track, matrix, size)
    encoded = None if paper is None else paper.source_head(image, matrix, crop, cropped)
    if encoded is not None:
        head, appearance = encoded
    else:
        head = head_model.fit(cropped)
        appearance = source_appearance(head_model, crop, cropped, head, config.appearance,
                                       config.head.flame_texture_path())
    return SourceFace(crop=crop, crop_matrix=matrix, track=cropped, head=head, appearance=appearance,
                      image_digest=image_digest(image))


def driving_frames(driving_path: str | Path, config: GuideConfig) -> Iterator[np.ndarray]:
    from magicportrait.io.video import iter_frames

    return islice(iter_frames(driving_path, max_size=config.driving_max_size), config.max_frames)


def track_driving(driving_path: str | Path, tracker: FaceTracker, config: GuideConfig) -> Track:
    from magicportrait.io.video import probe_video

    info = probe_video(driving_path)
    num_frames = min(info.num_frames, config.max_frames or info.num_frames)
    track = tracker.track_frames(driving_frames(driving_path, config), fps=info.fps, num_frames=num_frames,
                                 source=str(driving_path))
    encoders = config.head.encoders
    if config.tracker.pose_refinement == "photometric" and not (encoders.uses_encoders or encoders.flame_codes):
        # Our own fit uses this track's pose (the paper's encoders and imported codes bring their own).
        from magicportrait.tracking.photometric import refine_pose_photometric

        track = refine_pose_photometric(lambda: driving_frames(driving_path, config), track,
                                        show_progress=config.show_progress)
    return track


def align_motion(head_model: HeadModel, source: SourceFace, driving: Track, config: GuideConfig) -> HeadTrack:
    """Structured Face Alignment: the source's identity performing the driving motion, at the source's face; the
    result records which portrait, crop and head model it belongs to (see :func:`check_motion`)."""
    aligned = align_to_source(source.head, head_model.fit(driving), config.alignment)
    return with_provenance(aligned, source)


def with_provenance(head: HeadTrack, source: SourceFace) -> HeadTrack:
    provenance = {"image_digest": source.image_digest, "crop_matrix": np.asarray(source.crop_matrix).tolist(),
                  "head_model": source.head.model, "size": source.size}
    return replace(head, extras={**head.extras, "source": provenance})


def load_motion(path: str | Path, source: SourceFace, config: GuideConfig) -> HeadTrack:
    """A saved aligned head track (``aligned_head.npz`` of an earlier guide / animate run, possibly edited),
    checked to belong to this portrait, face crop and head model; ``--max-frames`` applies to it too."""
    motion = HeadTrack.load(path)
    check_motion(motion, source, path)
    if config.max_frames is not None:
        motion = motion.select(slice(0, config.max_frames))
    return motion


def check_motion(motion: HeadTrack, source: SourceFace, path: str | Path) -> None:
    """Raise InputError unless ``motion`` was made for ``source`` (same pixels, crop, head model and identity)."""
    saved = motion.extras.get("source")
    if not isinstance(saved, dict):
        raise InputError(f"{path} does not say which portrait it belongs to (it was not written by guide or "
                         "animate); re-run guide on the portrait and the driving video.")
    if saved.get("image_digest") != source.image_digest:
        raise InputError(f"{path} was made for another portrait (its pixels differ from this --source); use the "
                         "portrait it was made with, or re-run guide.")
    if motion.model != source.head.model or saved.get("head_model") != source.head.model:
        raise InputError(f"{path} holds {motion.model!r} head parameters but this run uses the {source.head.model!r} "
                         "head model; pass the same --flame setting as the run that saved it.")
    matrix = np.asarray(saved.get("crop_matrix", np.zeros((2, 3))), np.float64)
    scale_change = np.abs(matrix[:, :2] - source.crop_matrix[:, :2]).max() / np.abs(source.crop_matrix[:, :2]).max()
    shift = np.abs(matrix[:, 2] - source.crop_matrix[:, 2]).max()
    if saved.get("size") != source.size or scale_change > CROP_SCALE_TOLERANCE or shift > CROP_TOLERANCE_PX:
        raise InputError(f"{path} was made for another face crop of this portrait (another --face, --size or "
                         "--framing); pass the same options as the run that saved it.")
    if motion.identity.shape != source.head.identity.shape or not np.allclose(motion.identity, source.head.identity,
                                                                           rtol=1e-4, atol=1e-4):
        raise InputError(f"{path} has another identity shape than the portrait's fitted head; pass the same head "
                         "model options as the run that saved it.")


def driving_crops(driving_path: str | Path | None, track: Track | None, config: GuideConfig,
                  num_frames: int) -> Iterator[np.ndarray]:
    """The driving video's face crops (the previews' driving panel); black frames without a video or track."""
    size = config.size
    if driving_path is None or track is None:
        for _ in range(num_frames):
            yield np.zeros((size, size, 3), np.uint8)
        return
    for index, frame in enumerate(islice(driving_frames(driving_path, config), num_frames)):
        yield crop_face(frame, track.boxes[min(index, track.num_frames - 1)], size)


@dataclass(frozen=True)
class Motion:
    """What the driving side gives a run: the aligned head per frame, the driving track (None when a saved motion
    is reused without one) and the frame rate."""

    aligned: HeadTrack
    driving_track: Track | None
    fps: float
    codes: dict = field(default_factory=dict)  # "source" / "driving" FlameCodes of the paper's tracker or files


def prepare_inputs(config: GuideConfig, head_model: HeadModel, image: np.ndarray, source_name: str,
                   driving_path: str | Path | None, motion_path: str | Path | None = None,
                   default_framing: str = "ours", cache: RunCache | None = None) -> tuple[SourceFace, Motion]:
    """The source portrait (``image``, loaded from ``source_name``) prepared, and the driving motion aligned to it
    (or the saved motion, checked). An unset ``--framing`` is the saved motion's, else ``default_framing``.
    ``cache``: a long-lived worker's tracker, encoders and prepared portraits, reused instead of made again."""
    if driving_path is None and motion_path is None:
        raise InputError("Give a driving video (--driving) or a saved motion (--motion aligned_head.npz).")
    if config.framing is None:
        config = replace(config, framing=saved_framing(motion_path) or default_framing)
    paper = paper_tracker.load_paper_tracker(config, head_model, cache)
    with nullcontext(cache.tracker(config.tracker)) if cache else FaceTracker(config.tracker) as tracker:
        if cache is None or paper is not None:  # codes belong to the run that encoded them: not cached
            source = prepare_source(image, tracker, head_model, config, source_name, paper)
        else:
            source = cache.source(image_digest(image), config,
                                  lambda: prepare_source(image, tracker, head_model, config, source_name))
        if motion_path is None:
            driving_track = track_driving(driving_path, tracker, config)
    if motion_path is not None:
        aligned = edit_motion(load_motion(motion_path, source, config), source.head, config.edit, head_model,
                              config.alignment.reference_frame)
        driving_track = _saved_driving_track(motion_path, aligned) if driving_path is not None else None
        return source, Motion(aligned, driving_track, aligned.fps)
    # the tracker has already warned about frames without a face
    if paper is not None:
        aligned = paper.align(source, driving_path, driving_track)
    else:
        aligned = align_motion(head_model, source, driving_track, config)
    aligned = edit_motion(aligned, source.head, config.edit, head_model, config.alignment.reference_frame)
    aligned = replace(aligned, extras={**aligned.extras, "framing": config.framing})
    return source, Motion(aligned, driving_track, driving_track.fps, {} if paper is None else paper.codes)


def saved_framing(motion_path: str | Path | None) -> str | None:
    """The framing a saved motion was made with (a draft reused for the final render keeps its crop)."""
    if motion_path is None or not Path(motion_path).is_file():
        return None
    return HeadTrack.load(motion_path).extras.get("framing")


def _saved_driving_track(motion_path: str | Path, aligned: HeadTrack) -> Track | None:
    """The driving track saved beside a motion file (for the previews' driving panel), if it fits."""
    path = Path(motion_path).with_name("track.npz")
    if not path.is_file():
        return None
    track = Track.load(path)
    return track.select(slice(0, aligned.num_frames)) if track.num_frames >= aligned.num_frames else None


def save_inputs(stage: Path, source: SourceFace, motion: Motion) -> dict[str, Path]:
    """The source crop and the boundary files of a run (tracks, aligned head, source face, appearance)."""
    from magicportrait.io.image import save_image

    files = {"source": save_image(stage / "source.png", source.crop),
             "source_track": source.track.save(stage / "source_track.npz"),
             "source_face": source.save(stage / "source_face.npz"),
             "aligned_head": motion.aligned.save(stage / "aligned_head.npz")}
    if motion.driving_track is not None:
        files["track"] = motion.driving_track.save(stage / "track.npz")
    if source.appearance is not None:
        files["appearance"] = source.appearance.save(stage / "appearance.npz")
    for side, codes in motion.codes.items():
        files[f"{side}_codes"] = codes.save(stage / f"{side}_codes.npz")
    return files


def audio_source(driving_path: str | Path | None, config: GuideConfig) -> str | Path | None:
    from magicportrait.io.video import probe_video

    if driving_path is None or not config.keep_audio:
        return None
    return driving_path if probe_video(driving_path).has_audio else None
