"""Pure geometry functions (rotations, similarity fits) shared by head models, alignment and rendering."""

from magicportrait.geometry.procrustes import weighted_similarity_procrustes
from magicportrait.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler_degrees,
    rotation_angle_degrees,
)

__all__ = [
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "matrix_to_euler_degrees",
    "rotation_angle_degrees",
    "weighted_similarity_procrustes",
]
