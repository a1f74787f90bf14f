"""End-to-end pipelines built from the stages: ``guide`` (portrait + driving video -> guidance maps)."""

from magicportrait.pipelines.guide import GuideConfig, GuidePipeline, GuideResult

__all__ = ["GuideConfig", "GuidePipeline", "GuideResult"]
