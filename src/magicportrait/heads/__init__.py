"""Head models behind one interface (:class:`HeadModel`): the open MediaPipe geometry and FLAME.

FLAME (:mod:`magicportrait.heads.flame_head`) imports lazily: it needs the user's FLAME file.
"""

from magicportrait.heads.base import HeadModel, focal_length_px, pose_vertices, project_to_image
from magicportrait.heads.mediapipe_mesh import MediaPipeHeadModel

__all__ = ["HeadModel", "MediaPipeHeadModel", "focal_length_px", "pose_vertices", "project_to_image"]
