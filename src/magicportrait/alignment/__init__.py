"""Structured face alignment: source identity + driving expression and pose; and edits of the aligned motion."""

from magicportrait.alignment.editing import MotionEdit, edit_motion
from magicportrait.alignment.structured import AlignmentConfig, align_to_source, limit_rotation, smooth_head_track

__all__ = ["AlignmentConfig", "MotionEdit", "align_to_source", "edit_motion", "limit_rotation", "smooth_head_track"]
