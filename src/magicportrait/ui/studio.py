"""What the web UI does, without Gradio: find the faces of a portrait, make the geometric draft of a motion, render
the same aligned motion with the diffusion model, export the guidance maps, retarget a still portrait.

Every run writes into a folder of its own under the studio's work folder (the only place the UI writes, removed
when the server stops); the oldest runs are removed beyond :data:`MAX_RUNS`.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from magicportrait.errors import InputError
from magicportrait.pipelines.animate import AnimateConfig
from magicportrait.pipelines.evaluate import VIDEO_SUFFIXES
from magicportrait.types import GUIDANCE_NAMES
from magicportrait.ui.forms import PATH_ASSETS, FormField, PathPolicy, build_config, form_fields

MAX_RUNS = 20  # run folders kept; older ones are removed
AUTO_FACE = "most prominent"

# The page's panels: which options each shows (the help, defaults and checks are the configs').
MOTION_FIELDS = ("edit_yaw", "edit_pitch", "edit_roll", "edit_translation", "edit_jaw", "edit_lips", "edit_brows",
                 "edit_eyes", "edit_neutralize", "edit_relative", "edit_frames", "edit_ramp", "pose_mode",
                 "expression_mode", "expression_scale", "smoothing")
ADVANCED_FIELDS = ("max_frames", "size", "steps", "guidance_scale", "seed", "context_frames", "context_overlap",
                   "dtype", "device", "weights", "sd15", "vae", "motion_module", "flame", "flame_texture")


@dataclass(frozen=True)
class RunOutput:
    """A finished run: its folder and the files the page shows or offers."""

    folder: Path
    result: Path
    result_crop: Path | None
    grid: Path | None
    motion: Path  # aligned_head.npz
    backend: str
    num_frames: int
    fps: float

    @property
    def summary(self) -> str:
        return (f"{self.backend} generator: {self.num_frames} frames at {self.fps:g} fps "
                f"({self.folder.name}).")


class Studio:
    """The UI's actions on a work folder (see the module docstring)."""

    def __init__(self, root: str | Path, paths: PathPolicy) -> None:
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.runs.mkdir(parents=True, exist_ok=True)
        self.paths = paths
        self.motion_fields = form_fields(AnimateConfig, MOTION_FIELDS)
        self.advanced_fields = form_fields(AnimateConfig, ADVANCED_FIELDS)
        self._retarget: dict[tuple, object] = {}
        self._lock = threading.Lock()

    # -- inputs -------------------------------------------------------------------------------------------------
    def example(self) -> tuple[str, str]:
        """The bundled example's portrait and driving video (written once)."""
        from magicportrait.pipelines.example import write_example

        folder = self.root / "example"
        source, driving = folder / "source.png", folder / "driving.mp4"
        if not (source.is_file() and driving.is_file()):
            write_example(folder)
        return str(source), str(driving)

    def faces(self, image_path: str | None) -> tuple[np.ndarray, list[str]]:
        """The portrait with its faces boxed and numbered, and the face choices (numbers as text)."""
        from magicportrait.io.image import load_image
        from magicportrait.pipelines.faces import draw_faces, find_portrait_faces

        image = load_image(_needed(image_path, "a portrait"))
        found = find_portrait_faces(image)
        if not found:
            raise InputError("No face found in the portrait; try another picture, or type the face's box "
                             "(x,y,width,height).")
        return draw_faces(image, found), [AUTO_FACE, *(str(face.number) for face in found)]

    # -- runs ---------------------------------------------------------------------------------------------------
    def config(self, face: str | None, face_box: str | None, motion_values, advanced_values,
               backend: str) -> AnimateConfig:
        """The run's AnimateConfig from the page's values (server-side paths through the path policy)."""
        advanced = [self._path_value(field, value) for field, value in zip(self.advanced_fields, advanced_values,
                                                                           strict=True)]
        config = build_config(AnimateConfig, [*self.motion_fields, *self.advanced_fields],
                              [*motion_values, *advanced])
        guide = replace(config.guide, face=_face_number(face), face_box=(face_box or "").strip() or None)
        return replace(config, backend=backend, guide=guide)

    def _path_value(self, field: FormField, value):
        return self.paths.check(field.name, value) if field.name in PATH_ASSETS else value

    def draft(self, image_path: str | None, driving_path: str | None, motion_path: str | None,
              config: AnimateConfig) -> RunOutput:
        """The geometric generator on the portrait and the driving video (or a saved motion)."""
        from magicportrait.pipelines.animate import GeometricPipeline

        source = _needed(image_path, "a portrait")
        if not driving_path and not motion_path:
            raise InputError("Give a driving video, a saved motion (aligned_head.npz), or use the example.")
        _check_suffix(driving_path, VIDEO_SUFFIXES, "The driving video")
        _check_suffix(motion_path, (".npz",), "The saved motion")
        folder = self._new_run("draft")
        result = GeometricPipeline(replace(config, backend="geometric")).run(source, driving_path or None, folder,
                                                                              motion=motion_path or None)
        return _output(result)

    def render(self, image_path: str | None, draft: RunOutput | None, driving_path: str | None,
               config: AnimateConfig) -> RunOutput:
        """The diffusion generator on the draft's aligned motion (never re-tracked)."""
        from magicportrait.pipelines.animate import MagicPortraitPipeline

        if draft is None:
            raise InputError("Make the draft first: the diffusion render reuses its motion.")
        config = replace(config, backend="diffusion")
        if config.weights_path() is None:
            raise InputError("No diffusion weights are configured: start the UI with --weights DIR (or set "
                             "$MAGICPORTRAIT_WEIGHTS), or type the folder under Advanced on a local server.")
        pipeline = MagicPortraitPipeline.from_pretrained(config=config)
        result = pipeline.run(_needed(image_path, "a portrait"), driving_path or None, self._new_run("render"),
                              motion=draft.motion)
        return _output(result)

    def guidance(self, image_path: str | None, draft: RunOutput | None, config: AnimateConfig) -> Path:
        """The depth / normal / render maps of the draft's motion, as a zip of PNG folders."""
        from magicportrait.pipelines.guide import GuidePipeline

        if draft is None:
            raise InputError("Make the draft first: the guidance maps are those of its motion.")
        folder = self._new_run("guidance")
        guide = replace(config.guide, write_frames=True, write_preview=False)
        GuidePipeline(guide).run(_needed(image_path, "a portrait"), None, folder, motion=draft.motion)
        archive = folder / "guidance.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for name in GUIDANCE_NAMES:
                for png in sorted((folder / name).glob("*.png")):
                    zipped.write(png, f"{name}/{png.name}")
        return archive

    def retarget(self, image_path: str | None, face: str | None, face_box: str | None, values) -> np.ndarray:
        """The still portrait retargeted (the sliders tab); the portrait is prepared once per face choice."""
        from magicportrait.pipelines.retarget import RetargetConfig

        retarget = build_config(RetargetConfig, form_fields(RetargetConfig), values)
        return self._retarget_pipeline(image_path, face, face_box).render(retarget)[0]

    def openings(self, image_path: str | None, face: str | None, face_box: str | None) -> tuple[float, float]:
        """The portrait's own eyelid and lip opening (where the retarget sliders start)."""
        return self._retarget_pipeline(image_path, face, face_box).openings()

    def _retarget_pipeline(self, image_path: str | None, face: str | None, face_box: str | None):
        from magicportrait.io.image import load_image
        from magicportrait.pipelines.retarget import RetargetPipeline

        source = _needed(image_path, "a portrait")
        key = (source, face, face_box)
        with self._lock:
            pipeline = self._retarget.get(key)
            if pipeline is None:
                config = self.config(face, face_box, [f.default for f in self.motion_fields],
                                     [f.default for f in self.advanced_fields], "geometric")
                pipeline = RetargetPipeline(config)
                pipeline.prepare(load_image(source), source)
                self._retarget = {key: pipeline}  # one portrait at a time
        return pipeline

    def _new_run(self, kind: str) -> Path:
        """A fresh run folder (the oldest beyond MAX_RUNS are removed)."""
        existing = sorted(self.runs.iterdir(), key=lambda path: path.stat().st_mtime)
        for old in existing[:max(0, len(existing) - MAX_RUNS + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        return self.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:6]}"


def _check_suffix(path: str | None, suffixes, what: str) -> None:
    """Refuse an upload of the wrong kind (the page's file filter is only a hint to the browser)."""
    if path and Path(path).suffix.lower() not in suffixes:
        raise InputError(f"{what} must be a {' / '.join(sorted(suffixes))} file, got {Path(path).name}.")


def _needed(path: str | None, what: str) -> str:
    if not path:
        raise InputError(f"Give {what} first.")
    return str(path)


def _face_number(face: str | None) -> int | None:
    if face in (None, "", AUTO_FACE):
        return None
    try:
        return int(face)
    except ValueError:
        raise InputError(f"Face must be a number from the faces picture, got {face!r}.") from None


def _output(result) -> RunOutput:
    files = result.files
    return RunOutput(result.output_dir, files["result"], files.get("result_crop"), files.get("grid"),
                     files.get("aligned_head") or result.output_dir / "guidance" / "aligned_head.npz",
                     result.backend, result.num_frames, result.fps)
