"""The interface every head model implements (the open MediaPipe geometry now, FLAME later)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from magicportrait.geometry.rotations import axis_angle_to_matrix
from magicportrait.types import HeadTrack, Track


class HeadModel(ABC):
    """A parametric head: identity shape + expression (+ joint rotations) -> vertices in the model frame.

    The model frame is x toward the subject's left (image right in a frontal view), y down, z into the head.
    Posing to image space (rigid rotation, scale, translation) is shared by all models: :meth:`posed_vertices`.
    """

    name: str
    faces: np.ndarray  # (F, 3) int64, wound so cross(v1 - v0, v2 - v0) points out of the head

    @property
    @abstractmethod
    def num_vertices(self) -> int: ...

    @abstractmethod
    def fit(self, track: Track) -> HeadTrack:
        """Fit per-frame pose, scale, translation and expression, with one identity for the whole track."""

    @abstractmethod
    def shape_vertices(self, identity: np.ndarray, expression: np.ndarray,
                       joint_rotations: np.ndarray | None = None) -> np.ndarray:
        """`(T, V, 3)` vertices in the model frame for identity `(S,)` and expression `(T, E)`."""

    @abstractmethod
    def landmarks(self, vertices: np.ndarray) -> np.ndarray:
        """`(T, 478, 3)` MediaPipe-landmark positions on `(T, V, 3)` vertices (any frame)."""

    def posed_vertices(self, head: HeadTrack) -> np.ndarray:
        """`(T, V, 3)` float32 vertices in image space: ``scale * R v + translation``."""
        vertices = self.shape_vertices(head.identity, head.expression, head.joint_rotations)
        return pose_vertices(vertices, head.rotation, head.scale, head.translation)


def pose_vertices(vertices: np.ndarray, rotation: np.ndarray, scale: np.ndarray,
                  translation: np.ndarray) -> np.ndarray:
    """Apply per-frame similarity transforms: `(T, V, 3)` model-frame vertices -> image space."""
    rotation_matrix = axis_angle_to_matrix(rotation)
    posed = np.einsum("tij,tvj->tvi", rotation_matrix, vertices) * np.asarray(scale)[:, None, None]
    return (posed + np.asarray(translation)[:, None, :]).astype(np.float32)
