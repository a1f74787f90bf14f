"""Head models behind one interface (:class:`HeadModel`): the open MediaPipe geometry and FLAME.

:func:`head_model_from_config` picks one from a :class:`HeadModelConfig`. FLAME loads only when configured: it
needs the user's FLAME file.
"""

from magicportrait.heads.base import HeadModel, focal_length_px, pose_vertices, project_to_image
from magicportrait.heads.factory import HeadModelConfig, head_model_from_config
from magicportrait.heads.mediapipe_mesh import MediaPipeHeadModel

__all__ = ["HeadModel", "HeadModelConfig", "MediaPipeHeadModel", "focal_length_px", "head_model_from_config",
           "pose_vertices", "project_to_image"]
