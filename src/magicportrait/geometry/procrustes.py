"""Weighted similarity Procrustes (Umeyama 1991), batched over frames."""

from __future__ import annotations

import numpy as np


def weighted_similarity_procrustes(
    source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find scale ``s``, rotation ``R`` and translation ``t`` minimising ``sum_i w_i |s R x_i + t - y_i|^2``.

    Args:
        source: `(N, 3)` or `(T, N, 3)` points ``x`` (e.g. a canonical shape).
        target: `(T, N, 3)` or `(N, 3)` points ``y`` (e.g. tracked landmarks).
        weights: `(N,)` non-negative point weights; uniform when None.

    Returns:
        scale `(T,)`, rotation `(T, 3, 3)` (proper, det +1), translation `(T, 3)`.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    source, target = np.broadcast_arrays(source if source.ndim == 3 else source[None],
                                         target if target.ndim == 3 else target[None])
    num_points = source.shape[1]
    weights = np.ones(num_points) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != (num_points,) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"weights must be ({num_points},) non-negative with a positive sum, got {weights.shape}.")
    w = weights / weights.sum()

    source_mean = np.einsum("n,tnc->tc", w, source)
    target_mean = np.einsum("n,tnc->tc", w, target)
    source_centered = source - source_mean[:, None]
    target_centered = target - target_mean[:, None]
    # Cross-covariance Sigma[t] = sum_n w_n y_n x_n^T; its SVD gives the optimal rotation.
    covariance = np.einsum("n,tni,tnj->tij", w, target_centered, source_centered)
    u, singular_values, vt = np.linalg.svd(covariance)
    # Reflection guard: flip the smallest singular direction when det(U V^T) < 0.
    sign = np.sign(np.linalg.det(u @ vt))
    sign[sign == 0] = 1.0
    correction = np.ones((len(sign), 3))
    correction[:, 2] = sign
    rotation = u @ (correction[:, :, None] * vt)
    source_variance = np.einsum("n,tnc->t", w, source_centered**2)
    scale = (singular_values * correction).sum(-1) / np.maximum(source_variance, 1e-12)
    translation = target_mean - scale[:, None] * np.einsum("tij,tj->ti", rotation, source_mean)
    return scale, rotation, translation
