"""Retargeting a still portrait (image -> image): its eyelid opening, lip opening and head turn set by hand, drawn
by the geometric generator and pasted back into the picture (LivePortrait's retargeting; the UI's sliders tab).

The portrait is tracked and fitted once (:meth:`RetargetPipeline.prepare`); each :meth:`~RetargetPipeline.render`
after that only edits one head and draws one frame, well under a second on 2 cores.

Python::

    pipeline = RetargetPipeline()
    result = pipeline.run("portrait.jpg", "out/", RetargetConfig(eye_opening=0.1, lip_opening=0.3, yaw=10))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from magicportrait.alignment.editing import ExpressionBasis, retarget_head
from magicportrait.config import MOTION_EDIT, check_range, option
from magicportrait.heads import HeadModel, head_model_from_config
from magicportrait.io.image import load_image, save_image
from magicportrait.io.output import output_folder
from magicportrait.pipelines import stages
from magicportrait.pipelines.animate import AnimateConfig
from magicportrait.types import SourceFace

MAX_EYE_OPENING, MAX_LIP_OPENING, MAX_TURN = 0.6, 0.8, 30.0


@dataclass
class RetargetConfig:
    """What to change on the still portrait (``magicportrait retarget`` flags; the UI's sliders)."""

    cli_group: ClassVar[str] = MOTION_EDIT
    ui_ranges: ClassVar[dict[str, tuple[float, float]]] = {  # the UI's sliders
        "eye_opening": (0.0, MAX_EYE_OPENING), "lip_opening": (0.0, MAX_LIP_OPENING),
        **dict.fromkeys(("yaw", "pitch", "roll"), (-MAX_TURN, MAX_TURN))}

    eye_opening: float | None = option(None, "Eyelid opening to set, as a fraction of the eye's width (about 0.3 "
                                             "open, 0 closed; default: the portrait's own).")
    lip_opening: float | None = option(None, "Gap between the lips to set, as a fraction of the mouth's width (0 "
                                             "closed, about 0.5 wide open; default: the portrait's own).")
    yaw: float = option(0.0, "Turn the head left (-) or right (+) by this many degrees.")
    pitch: float = option(0.0, "Nod the head up (-) or down (+) by this many degrees.")
    roll: float = option(0.0, "Tilt the head by this many degrees in the picture plane.")

    def __post_init__(self) -> None:
        check_range(self, "eye_opening", 0, MAX_EYE_OPENING)
        check_range(self, "lip_opening", 0, MAX_LIP_OPENING)
        for name in ("yaw", "pitch", "roll"):
            check_range(self, name, -MAX_TURN, MAX_TURN)


@dataclass
class RetargetResult:
    output_dir: Path
    image: np.ndarray  # the full picture, pasted back
    crop: np.ndarray  # the face crop
    files: dict[str, Path]


class RetargetPipeline:
    """Still-portrait retargeting with the geometric generator (see the module docstring)."""

    def __init__(self, config: AnimateConfig | None = None, head_model: HeadModel | None = None) -> None:
        self.config = config or AnimateConfig(backend="geometric")
        self.head_model = head_model or head_model_from_config(self.config.guide.head)
        self.source: SourceFace | None = None
        self._generator = self._paste = self._frame = self._basis = None

    def prepare(self, image: np.ndarray, source_name: str = "") -> SourceFace:
        """Track and fit the portrait's face (the slow part, once per portrait)."""
        from magicportrait.compositing import PasteBack
        from magicportrait.pipelines.geometric import GeometricGenerator
        from magicportrait.pipelines.outputs import output_frame
        from magicportrait.tracking import FaceTracker

        config = self.config
        with FaceTracker(config.guide.tracker) as tracker:
            self.source = stages.prepare_source(image, tracker, self.head_model, config.guide, source_name)
        self._generator = GeometricGenerator(self.head_model, self.source, config.geometric,
                                             device=config.guide.device)
        self._basis = ExpressionBasis(self.head_model, self.source.head.identity,
                                      self.source.head.expression.shape[1])
        self._frame, matrix = output_frame(image, self.source.crop_matrix, config.max_output_size)
        self._paste = PasteBack(self._frame.shape[:2], matrix, self.source.size, mode="changed")
        return self.source

    def render(self, retarget: RetargetConfig) -> tuple[np.ndarray, np.ndarray]:
        """The retargeted portrait: (full picture, face crop), uint8. Needs :meth:`prepare` first."""
        if self.source is None:
            raise RuntimeError("RetargetPipeline.render needs prepare(image) first.")
        head = self.retargeted_head(retarget)
        crop = self._generator.render(head)[0]
        return self._paste.paste(self._frame, crop, self.source.crop), crop

    def openings(self) -> tuple[float, float]:
        """The prepared portrait's own eyelid and lip opening (fractions of the eye's / mouth's width)."""
        from magicportrait.heads.regions import eye_opening, lip_opening

        head = self.source.head
        landmarks = self.head_model.landmarks(self.head_model.shape_vertices(
            head.identity, head.expression[:1], head.joint_rotations[:1]))[0]
        return float(eye_opening(landmarks)), float(lip_opening(landmarks))

    def retargeted_head(self, retarget: RetargetConfig):
        """The portrait's head with ``retarget`` applied (one frame; saved as a motion file by :meth:`run`)."""
        head = retarget_head(self.source.head, self.head_model, retarget.eye_opening, retarget.lip_opening,
                             (retarget.yaw, retarget.pitch, retarget.roll), self._basis)
        return stages.with_provenance(head, self.source)

    def run(self, source_path: str | Path, output_dir: str | Path, retarget: RetargetConfig) -> RetargetResult:
        """Retarget the portrait file ``source_path`` into ``output_dir``: ``result.png`` (the whole picture),
        ``result_crop.png`` and ``aligned_head.npz`` (the edited head, usable as ``animate --motion``)."""
        with output_folder(output_dir) as out:
            self.prepare(load_image(source_path), str(source_path))
            image, crop = self.render(retarget)
            with out.stage() as stage:
                files = {"result": save_image(stage / "result.png", image),
                         "result_crop": save_image(stage / "result_crop.png", crop),
                         "source": save_image(stage / "source.png", self.source.crop),
                         "source_face": self.source.save(stage / "source_face.npz"),
                         "aligned_head": self.retargeted_head(retarget).save(stage / "aligned_head.npz")}
        files = {name: Path(output_dir) / path.name for name, path in files.items()}
        return RetargetResult(Path(output_dir), image, crop, files)
