"""End-to-end pipelines built from the stages.

- ``guide``: portrait + driving video -> depth / normal / render guidance maps (:class:`GuidePipeline`);
- ``stages``: the stage calls guide and animate share (source preparation, driving tracking, alignment, saved
  motion);
- :class:`GenerationPipeline` (from :mod:`magicportrait.models.generation`): reference + guidance maps -> video with
  the diffusion generator;
- ``geometric``: reference + aligned head -> video without learned weights, in real time (:class:`GeometricGenerator`);
- ``animate``: the whole main job with either generator (:func:`load_pipeline`, :class:`MagicPortraitPipeline`,
  :class:`GeometricPipeline`), results pasted back into the source frame.

Names are imported on first use, so ``import magicportrait.pipelines`` does not load diffusers.
"""

from __future__ import annotations

from magicportrait._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "GuideConfig": "guide", "GuidePipeline": "guide", "GuideResult": "guide",
    "GenerationConfig": "magicportrait.models.generation", "GenerationPipeline": "magicportrait.models.generation",
    "AnimateConfig": "animate", "AnimateResult": "animate", "MagicPortraitPipeline": "animate",
    "GeometricPipeline": "animate", "load_pipeline": "animate",
    "GeometricConfig": "geometric", "GeometricGenerator": "geometric",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
