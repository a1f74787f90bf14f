"""End-to-end pipelines built from the stages.

- ``guide``: portrait + driving video -> depth / normal / render guidance maps (:class:`GuidePipeline`);
- ``generation``: reference + guidance maps -> video with the diffusion generator (:class:`GenerationPipeline`);
- ``geometric``: reference + aligned head -> video without learned weights, in real time (:class:`GeometricGenerator`);
- ``animate``: the whole main job with either generator (:func:`load_pipeline`, :class:`MagicPortraitPipeline`,
  :class:`GeometricPipeline`), results pasted back into the source frame.

Names are imported on first use, so ``import magicportrait.pipelines`` does not load diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "GuideConfig": "guide", "GuidePipeline": "guide", "GuideResult": "guide",
    "GenerationConfig": "generation", "GenerationPipeline": "generation",
    "AnimateConfig": "animate", "AnimateResult": "animate", "MagicPortraitPipeline": "animate",
    "GeometricPipeline": "animate", "load_pipeline": "animate",
    "GeometricConfig": "geometric", "GeometricGenerator": "geometric",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
