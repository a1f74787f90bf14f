"""Rotation conversions on batched numpy arrays of shape ``(..., 3)`` / ``(..., 3, 3)``.

Rotations act on column vectors in image space (x right, y down, z into the scene).
"""

from __future__ import annotations

import numpy as np


def _check_last_dims(array: np.ndarray, dims: tuple[int, ...], name: str) -> None:
    if array.shape[array.ndim - len(dims):] != dims:
        raise ValueError(f"Invalid {name} shape {array.shape}: expected (..., {', '.join(map(str, dims))}).")


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: `(..., 3)` rotation vectors (radians) -> `(..., 3, 3)` matrices."""
    axis_angle = np.asarray(axis_angle, dtype=np.float64)
    _check_last_dims(axis_angle, (3,), "axis-angle")
    angle = np.linalg.norm(axis_angle, axis=-1, keepdims=True)
    # Small angles: the axis is ill-defined but sin(a)/a -> 1 and (1-cos a)/a^2 -> 1/2 (Taylor terms below).
    small = angle < 1e-8
    safe_angle = np.where(small, 1.0, angle)
    sin_term = np.where(small, 1.0 - angle**2 / 6.0, np.sin(angle) / safe_angle)[..., None]
    cos_term = np.where(small, 0.5 - angle**2 / 24.0, (1.0 - np.cos(angle)) / safe_angle**2)[..., None]
    x, y, z = np.moveaxis(axis_angle, -1, 0)
    zeros = np.zeros_like(x)
    skew = np.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], axis=-1).reshape(*axis_angle.shape[:-1], 3, 3)
    return np.eye(3) + sin_term * skew + cos_term * (skew @ skew)


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """`(..., 3, 3)` rotation matrices -> `(..., 3)` rotation vectors with angle in [0, pi]."""
    matrix = np.asarray(matrix, dtype=np.float64)
    _check_last_dims(matrix, (3, 3), "rotation matrix")
    # Via unit quaternions: stable for every angle, including pi where the trace formula breaks down.
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def matrix_to_quaternion(matrix: np.ndarray) -> np.ndarray:
    """`(..., 3, 3)` -> `(..., 4)` unit quaternions (w, x, y, z) with w >= 0."""
    m = np.asarray(matrix, dtype=np.float64)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate solutions; take the best-conditioned (largest denominator) one per matrix.
    candidates = np.stack([
        np.stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                  m[..., 1, 0] - m[..., 0, 1]], -1),
        np.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0],
                  m[..., 0, 2] + m[..., 2, 0]], -1),
        np.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22,
                  m[..., 1, 2] + m[..., 2, 1]], -1),
        np.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                  1 - m00 - m11 + m22], -1),
    ], axis=-2)
    best = np.argmax(np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22,
                               1 - m00 - m11 + m22], -1), axis=-1)
    quaternion = np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    quaternion /= np.linalg.norm(quaternion, axis=-1, keepdims=True)
    return np.where(quaternion[..., :1] < 0, -quaternion, quaternion)


def quaternion_to_axis_angle(quaternion: np.ndarray) -> np.ndarray:
    """`(..., 4)` unit quaternions (w, x, y, z) -> `(..., 3)` rotation vectors."""
    q = np.asarray(quaternion, dtype=np.float64)
    q = np.where(q[..., :1] < 0, -q, q)
    sin_half = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., :1])
    small = sin_half < 1e-8
    scale = np.where(small, 2.0, angle / np.where(small, 1.0, sin_half))
    return q[..., 1:] * scale


def matrix_to_euler_degrees(matrix: np.ndarray) -> np.ndarray:
    """`(..., 3, 3)` -> `(..., 3)` (yaw, pitch, roll) in degrees, for reporting.

    ``R = R_y(yaw) @ R_x(pitch) @ R_z(roll)`` in image space: yaw turns about the vertical (y, down) axis,
    pitch about the horizontal x axis, roll in the image plane about z.
    """
    m = np.asarray(matrix, dtype=np.float64)
    pitch = np.arcsin(np.clip(-m[..., 1, 2], -1.0, 1.0))
    yaw = np.arctan2(m[..., 0, 2], m[..., 2, 2])
    roll = np.arctan2(m[..., 1, 0], m[..., 1, 1])
    return np.degrees(np.stack([yaw, pitch, roll], axis=-1))


def euler_degrees_to_matrix(yaw_pitch_roll: np.ndarray) -> np.ndarray:
    """Inverse of :func:`matrix_to_euler_degrees`: `(..., 3)` degrees -> `(..., 3, 3)`."""
    yaw, pitch, roll = np.moveaxis(np.radians(np.asarray(yaw_pitch_roll, dtype=np.float64)), -1, 0)
    axes = np.eye(3)
    rot_y = axis_angle_to_matrix(yaw[..., None] * axes[1])
    rot_x = axis_angle_to_matrix(pitch[..., None] * axes[0])
    rot_z = axis_angle_to_matrix(roll[..., None] * axes[2])
    return rot_y @ rot_x @ rot_z


def rotation_angle_degrees(matrix_a: np.ndarray, matrix_b: np.ndarray) -> np.ndarray:
    """Geodesic angle in degrees between two batches of rotation matrices."""
    relative = np.swapaxes(np.asarray(matrix_a), -1, -2) @ np.asarray(matrix_b)
    cosine = (np.trace(relative, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
