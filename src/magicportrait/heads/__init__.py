"""Head models behind one interface (:class:`HeadModel`): the open MediaPipe geometry, FLAME (later)."""

from magicportrait.heads.base import HeadModel, pose_vertices
from magicportrait.heads.mediapipe_mesh import MediaPipeHeadModel

__all__ = ["HeadModel", "MediaPipeHeadModel", "pose_vertices"]
