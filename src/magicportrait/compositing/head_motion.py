"""The head's rigid 3D motion as the image sees it, for the 2D warp of everything around the re-rendered face.

A 2D similarity of the face's landmarks moves the whole head as if it were flat at the face's depth. A head turns
about its neck, though: the face, a hand's breadth in front of the ears, slides sideways by up to a third of its
width at 25 degrees of yaw while the hair at the sides of the head hardly moves. Dragging the hair along with the
face shears it where the head's motion fades into the still body (long hair folds into loops, a strand smears).

Here every pixel of the portrait's head gets a depth (:func:`head_depth`): the head mesh's own depth where it is
(the face; all of FLAME's head), relaxing over the hair around it toward the depth of the point between the ears
where the head turns (the face's outline at the cheeks is about as deep). A pixel then moves as that 3D point does:
for an orthographic camera the image position is affine in the source's image position and depth,
``x' = A (x, y, z) + b`` (:class:`DepthMotion`, fitted to the head model's landmarks moved rigidly; nearly so for a
perspective camera at portrait distances). Near the face outline the hair moves with the face, at the sides like
the skull, and the stretch between them spreads over the whole head instead of a thin band.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from magicportrait.compositing.warp import smoothstep
from magicportrait.errors import InputError

__all__ = ["DepthMotion", "head_depth"]

DEPTH_SMOOTHING = 0.02  # the depth field is blurred by this fraction of the image side (no crease at the nose)
DEPTH_REACH = 1.0  # the face's depth relaxes to the pivot's over this many face half-sizes beyond its outline
ITERATIONS = 4  # fixed-point steps of the inverse (it contracts fast where the depth is smooth)


@dataclass(frozen=True)
class DepthMotion:
    """One frame's rigid head motion in image space: a source point at image position ``(x, y)`` and image-space
    depth ``z`` (pixels, smaller = nearer) goes to ``linear @ (x, y, z) + offset``.

    ``depth``: the source's depth per pixel (:func:`head_depth`), looked up wherever a point's depth is needed.
    """

    linear: np.ndarray  # (2, 3)
    offset: np.ndarray  # (2,)
    depth: np.ndarray  # (H, W) float32

    @classmethod
    def fit(cls, source_points: np.ndarray, target_points: np.ndarray, depth: np.ndarray,
            weights: np.ndarray | None = None) -> DepthMotion:
        """Weighted least squares ``target_xy ~ linear @ source_xyz + offset`` from `(N, 3)` source points (image
        space, with depth) and `(N, 2+)` target points (exact for points moved rigidly by an orthographic camera;
        ``weights`` keep what expressions move, the lips and brows, from counting much)."""
        source = np.asarray(source_points, np.float64)
        target = np.asarray(target_points, np.float64)[:, :2]
        if source.ndim != 2 or source.shape[1] != 3 or len(source) < 4 or target.shape != (len(source), 2):
            raise InputError(f"DepthMotion.fit needs (N >= 4, 3) source and (N, 2) target points, got "
                             f"{source.shape} and {target.shape}.")
        root = np.ones(len(source)) if weights is None else np.sqrt(np.clip(np.asarray(weights, np.float64), 0, None))
        centre = (root**2) @ source / max(float(root @ root), 1e-12)
        design = np.column_stack([source - centre, np.ones(len(source))]) * root[:, None]
        solution, *_ = np.linalg.lstsq(design, target * root[:, None], rcond=None)
        linear = solution[:3].T
        return cls(linear, solution[3] - linear @ centre, np.asarray(depth, np.float32))

    def forward(self, points: np.ndarray) -> np.ndarray:
        """`(N, 2)` where `(N, 3)` source points (with their depth) go."""
        return np.asarray(points, np.float64) @ self.linear.T + self.offset

    def depth_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The source depth at continuous image positions (bilinear; clamped at the border)."""
        height, width = self.depth.shape
        col = np.clip(x - 0.5, 0, width - 1)
        row = np.clip(y - 0.5, 0, height - 1)
        c0, r0 = np.minimum(col.astype(int), width - 2), np.minimum(row.astype(int), height - 2)
        fc, fr = col - c0, row - r0
        d = self.depth
        top = d[r0, c0] * (1 - fc) + d[r0, c0 + 1] * fc
        bottom = d[r0 + 1, c0] * (1 - fc) + d[r0 + 1, c0 + 1] * fc
        return top * (1 - fr) + bottom * fr

    def inverse(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The source positions that move to the image positions ``(x, y)``: ``q = A_xy^-1 (p - a_z z(q) - b)``
        by fixed-point steps from the depth at ``p`` itself."""
        (a, b), (c, d) = self.linear[:, :2]
        determinant = a * d - b * c
        if abs(determinant) < 1e-9:
            raise InputError("the head's motion flattens the image (a turn of 90 degrees?); it cannot be inverted.")
        inverse = np.array([[d, -b], [-c, a]]) / determinant
        rest_x, rest_y = x - self.offset[0], y - self.offset[1]
        qx, qy = x, y
        for _ in range(ITERATIONS):
            z = self.depth_at(qx, qy)
            px, py = rest_x - self.linear[0, 2] * z, rest_y - self.linear[1, 2] * z
            qx = inverse[0, 0] * px + inverse[0, 1] * py
            qy = inverse[1, 0] * px + inverse[1, 1] * py
        return qx, qy

    def inverse_points(self, points: np.ndarray) -> np.ndarray:
        """`(N, 2)` source positions of `(N, 2+)` target image points."""
        points = np.asarray(points, np.float64)
        qx, qy = self.inverse(points[:, 0], points[:, 1])
        return np.column_stack([qx, qy])


def head_depth(mesh_depth: np.ndarray, pivot_depth: float, face_half_size: float) -> np.ndarray:
    """float32 `(H, W)` depth of every pixel of the portrait's head, for :class:`DepthMotion`.

    ``mesh_depth``: the head mesh's image-space depth per pixel (the source z-buffer; +inf where the mesh is
    not); ``pivot_depth``: the image-space depth where the head turns (between the ears); ``face_half_size``: px.
    Where the mesh is, its own depth; beyond, its height in front of the pivot carried on (normalised Gaussian
    extrapolation) and fading to the pivot's depth over ``DEPTH_REACH`` face half-sizes (the hair at the sides of
    the head, as deep as the ears, hardly moves when the head turns); all smoothed over ``DEPTH_SMOOTHING`` of the
    side, so the warp has no crease.
    """
    mesh_depth = np.asarray(mesh_depth, np.float32)
    if mesh_depth.ndim != 2 or not np.isfinite(pivot_depth) or not face_half_size > 0:
        raise InputError(f"head_depth needs an (H, W) depth, a finite pivot depth and a face size > 0; got "
                         f"{mesh_depth.shape}, {pivot_depth}, {face_half_size}.")
    height, width = mesh_depth.shape
    known = np.isfinite(mesh_depth)
    if not known.any():
        return np.full((height, width), pivot_depth, np.float32)
    in_front = np.where(known, mesh_depth - np.float32(pivot_depth), 0.0).astype(np.float32)
    weight = known.astype(np.float32)
    sigma = max(1.0, 0.25 * face_half_size)
    spread = cv2.GaussianBlur(in_front * weight, (0, 0), sigma) / np.maximum(
        cv2.GaussianBlur(weight, (0, 0), sigma), 1e-6)
    distance = cv2.distanceTransform((~known).astype(np.uint8), cv2.DIST_L2, 5)
    fade = 1.0 - smoothstep(distance / (DEPTH_REACH * face_half_size))
    relative = np.where(known, in_front, spread * fade)
    relative = cv2.GaussianBlur(relative, (0, 0), max(1.0, DEPTH_SMOOTHING * max(height, width)))
    return relative + np.float32(pivot_depth)
