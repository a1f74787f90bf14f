"""Temporal smoothing of per-frame signals stored as ``(T, ...)`` arrays (time first).

Used for crop boxes here and for head pose / expression parameters in later stages. Every function is pure: it
returns a new float array and leaves its input untouched.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.signal import savgol_filter
from scipy.spatial.transform import Rotation

SmoothingMethod = Literal["savgol", "one_euro", "none"]

# strength -> filter parameters (see `smooth`).
SAVGOL_MAX_HALF_WINDOW_S = 0.5  # strength 1 -> a 1 s Savitzky-Golay window
ONE_EURO_CUTOFF_AT_FULL_HZ = 0.5  # strength 1 -> 0.5 Hz One-Euro minimum cutoff


def _as_float(x: np.ndarray) -> np.ndarray:
    """A float copy of ``x`` (float arrays keep their precision, others become float64)."""
    x = np.asarray(x)
    return x.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64, copy=True)


def savgol_smooth(x: np.ndarray, window: int, order: int = 2) -> np.ndarray:
    """Zero-phase Savitzky-Golay smoothing along axis 0.

    Each output sample is a least-squares polynomial of degree ``order`` fitted to the ``window`` samples centred
    on it, so polynomials up to ``order`` pass through unchanged. At the ends the polynomial fitted to the first
    (last) full window is evaluated, which avoids the bias of padding. An even ``window`` is rounded up to odd;
    a window longer than the sequence is shrunk to fit; when the window cannot exceed ``order`` (e.g. T=1) the
    fit is exact and ``x`` is returned unchanged.
    """
    out = _as_float(x)
    num_frames = out.shape[0]
    window = int(window) | 1  # savgol needs an odd window
    if window > num_frames:
        window = num_frames if num_frames % 2 else num_frames - 1
    if window <= order + 1:  # a degree-`order` polynomial through <= order+1 samples interpolates them exactly
        return out
    return savgol_filter(out, window, order, axis=0, mode="interp").astype(out.dtype, copy=False)


def _one_euro_alpha(cutoff: np.ndarray | float, fps: float) -> np.ndarray | float:
    """Smoothing factor of a first-order low-pass with the given cutoff (Hz) sampled at ``fps``."""
    tau = 1.0 / (2.0 * np.pi * cutoff)
    return 1.0 / (1.0 + tau * fps)


def one_euro_filter(x: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.0,
                    d_cutoff: float = 1.0) -> np.ndarray:
    """Causal One-Euro filter (Casiez et al., CHI 2012), applied independently to every element of ``x[t]``.

    A first-order low-pass whose cutoff rises with the filtered speed: ``cutoff = min_cutoff + beta * |dx/dt|``,
    so slow motion is smoothed strongly (little jitter) and fast motion weakly (little lag). ``beta`` is in
    1/(units of x); with ``beta=0`` it is a fixed exponential moving average. The first sample passes unchanged.
    """
    if fps <= 0:
        raise ValueError(f"one_euro_filter needs a positive fps, got {fps}.")
    out = _as_float(x)
    if out.shape[0] < 2:
        return out
    d_alpha = _one_euro_alpha(d_cutoff, fps)
    prev = out[0].astype(np.float64)
    d_prev = np.zeros_like(prev)
    for t in range(1, out.shape[0]):
        d_prev = d_prev + d_alpha * ((out[t] - prev) * fps - d_prev)
        alpha = _one_euro_alpha(min_cutoff + beta * np.abs(d_prev), fps)
        prev = prev + alpha * (out[t] - prev)
        out[t] = prev
    return out


def smooth(x: np.ndarray, method: SmoothingMethod = "savgol", strength: float = 0.5, fps: float = 30.0,
           beta: float = 0.0) -> np.ndarray:
    """Smooth ``x`` (``(T, ...)``) over time with a strength in [0, 1]; 0 returns ``x`` unchanged.

    The mapping is monotonic (more strength, more smoothing) and defined in seconds, so it behaves the same at
    any frame rate:

    * ``"savgol"`` (zero-phase, offline): order 2, window ``2 * round(strength * 0.5 s * fps) + 1`` frames, i.e.
      up to 1 s at strength 1 (15 frames at 30 fps for strength 0.5). Windows of <= 3 frames change nothing.
    * ``"one_euro"`` (causal, online): ``min_cutoff = 0.5 Hz / strength**2`` (0.5 Hz at strength 1, 2 Hz at
      0.5, 8 Hz at 0.25) with the given ``beta``.
    * ``"none"``: identity.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"Smoothing strength must be in [0, 1], got {strength}.")
    if method not in ("savgol", "one_euro", "none"):
        raise ValueError(f"Unknown smoothing method {method!r}; use 'savgol', 'one_euro' or 'none'.")
    if method == "none" or strength == 0.0 or np.shape(x)[0] < 2:
        return _as_float(x)
    if fps <= 0:
        raise ValueError(f"Smoothing a sequence needs a positive fps, got {fps}.")
    if method == "savgol":
        half_window = round(strength * SAVGOL_MAX_HALF_WINDOW_S * fps)
        return savgol_smooth(x, 2 * half_window + 1, order=2)
    return one_euro_filter(x, fps, min_cutoff=ONE_EURO_CUTOFF_AT_FULL_HZ / strength**2, beta=beta)


def continuous_quaternions(quaternions: np.ndarray) -> np.ndarray:
    """Flip quaternion signs along axis 0 so consecutive ones have a non-negative dot product.

    ``q`` and ``-q`` are the same rotation; picking the sign nearest to the previous frame removes the jumps
    that an arbitrary sign choice introduces, so the components become smooth functions of time.
    ``quaternions``: ``(T, ..., 4)``.
    """
    q = np.array(quaternions, dtype=np.float64)
    for t in range(1, q.shape[0]):
        flip = np.sum(q[t] * q[t - 1], axis=-1) < 0
        q[t][flip] *= -1.0
    return q


def smooth_rotations(axis_angle: np.ndarray, method: SmoothingMethod = "savgol", strength: float = 0.5,
                     fps: float = 30.0) -> np.ndarray:
    """Smooth rotations given as axis-angle vectors ``(T, ..., 3)`` (radians) over time.

    Axis-angle components jump where the angle crosses pi (the same rotation flips to the opposite axis), so
    they are never filtered directly: the rotations become sign-continuous unit quaternions, whose components are
    smoothed with :func:`smooth` and renormalised. Output angles are in [0, pi] (scipy's canonical form).
    """
    axis_angle = np.asarray(axis_angle)
    rotvecs = axis_angle.astype(np.float64)
    if rotvecs.shape[-1] != 3:
        raise ValueError(f"Expected axis-angle vectors of shape (T, ..., 3), got {rotvecs.shape}.")
    lead_shape = rotvecs.shape[:-1]
    quats = Rotation.from_rotvec(rotvecs.reshape(-1, 3)).as_quat().reshape(*lead_shape, 4)
    quats = smooth(continuous_quaternions(quats), method, strength, fps)
    quats /= np.linalg.norm(quats, axis=-1, keepdims=True)
    smoothed = Rotation.from_quat(quats.reshape(-1, 4)).as_rotvec().reshape(rotvecs.shape)
    return smoothed.astype(axis_angle.dtype if np.issubdtype(axis_angle.dtype, np.floating) else np.float64)
