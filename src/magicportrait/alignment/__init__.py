"""Structured face alignment: source identity + driving expression and pose."""

from magicportrait.alignment.structured import AlignmentConfig, align_to_source, limit_rotation, smooth_head_track

__all__ = ["AlignmentConfig", "align_to_source", "limit_rotation", "smooth_head_track"]
