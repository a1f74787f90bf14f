"""The interface every head model implements (the open MediaPipe geometry and FLAME), and the cameras that pose
and project their vertices."""

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
    face_only: bool = False  # the mesh is the face alone (its rim is the face's outline), not a whole head

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

    def mouth_loop(self) -> np.ndarray:
        """Vertex indices around the mouth opening (inner lips) in order, starting at a mouth corner."""
        raise NotImplementedError(f"{type(self).__name__} does not say where its mouth opening is.")

    def template_vertices(self) -> np.ndarray:
        """`(V, 3)` the model's mean head at rest in the model frame (its lips apart)."""
        raise NotImplementedError(f"{type(self).__name__} has no mean head.")

    def mirror_vertices(self) -> np.ndarray:
        """`(V,)` each vertex's left/right mirror partner, -1 where it has none."""
        raise NotImplementedError(f"{type(self).__name__} does not say which vertices mirror each other.")

    def posed_vertices(self, head: HeadTrack) -> np.ndarray:
        """`(T, V, 3)` float32 vertices in image space (see :func:`project_to_image` for the camera)."""
        vertices = self.shape_vertices(head.identity, head.expression, head.joint_rotations)
        return project_to_image(vertices, head)


def project_to_image(vertices: np.ndarray, head: HeadTrack) -> np.ndarray:
    """`(T, V, 3)` model-frame vertices -> image space with ``head``'s pose and camera.

    Orthographic (default): ``scale * R v + translation``. Perspective: camera-space points
    ``P = R v + translation`` are projected to ``f * P_xy / P_z + centre``; the image-space z is
    ``f * P_z / translation_z`` (pixels at the head's depth), which keeps the depth order and makes the
    screen-space mesh a local weak-perspective copy of the head, so the renderer's normals stay right.
    """
    if head.camera == "orthographic":
        return pose_vertices(vertices, head.rotation, head.scale, head.translation)
    if head.camera != "perspective":
        raise ValueError(f"Unknown camera {head.camera!r}; expected 'orthographic' or 'perspective'.")
    camera_points = pose_vertices(vertices, head.rotation, np.ones(head.num_frames), head.translation)
    return perspective_image_points(camera_points, float(head.focal_px), head.image_size,
                                    np.asarray(head.translation)[:, 2])


def perspective_image_points(camera_points: np.ndarray, focal_px: float, image_size: tuple[int, int],
                             reference_depth: np.ndarray) -> np.ndarray:
    """`(T, N, 3)` camera-space points -> image space (x, y pixels about the image centre; z scaled to pixels)."""
    height, width = image_size
    depth = camera_points[..., 2:3]
    if np.any(depth <= 0):
        raise ValueError("A point is at or behind the perspective camera; the head track is corrupt.")
    xy = focal_px * camera_points[..., :2] / depth + np.array([width / 2.0, height / 2.0])
    z = focal_px * depth / np.asarray(reference_depth, np.float64)[:, None, None]
    return np.concatenate([xy, z], axis=-1).astype(np.float32)


def focal_length_px(fov_degrees: float, image_size: tuple[int, int]) -> float:
    """Focal length in pixels of a camera whose field of view across the image's longer side is ``fov_degrees``."""
    if not 0.0 < fov_degrees < 180.0:
        raise ValueError(f"fov_degrees must be in (0, 180), got {fov_degrees}.")
    return 0.5 * max(image_size) / np.tan(np.deg2rad(fov_degrees) / 2.0)


def pose_vertices(vertices: np.ndarray, rotation: np.ndarray, scale: np.ndarray,
                  translation: np.ndarray) -> np.ndarray:
    """Apply per-frame similarity transforms: `(T, V, 3)` model-frame vertices -> image space."""
    rotation_matrix = axis_angle_to_matrix(rotation)
    posed = np.einsum("tij,tvj->tvi", rotation_matrix, vertices) * np.asarray(scale)[:, None, None]
    return (posed + np.asarray(translation)[:, None, :]).astype(np.float32)
