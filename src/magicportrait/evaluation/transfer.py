"""Motion transfer: does the result move *when and as* the driving video moves?

APD and AED compare values frame by frame, so a frozen result (the portrait repeated) is only as wrong as the
driving motion is large, and a result that follows the motion faithfully but from another resting pose is
penalised for the offset. Motion transfer compares the shape of the motion instead: the Pearson correlation over
time of each channel of the result with the same channel of the driving video,

- **yaw, pitch, roll**: the head rotation in degrees (the fitted head model's pose, see
  :func:`~magicportrait.evaluation.motion.pose_degrees`);
- **mouth**: the inner-lip gap (three upper/lower inner-lip landmark pairs, in 3D) divided by the distance between
  the outer eye corners (3D too, so a head turn does not change it).

Correlation ignores offset and gain: 1 = the result moves exactly in step with the driving video, 0 = unrelated;
a result channel that does not move (a frozen video), or moves less than a tenth as much as the driving video
(:data:`STILL_RATIO`, standard deviations), counts 0, not NaN. Channels that the driving video barely
moves (standard deviation below :data:`MIN_DRIVING_STD`) are left out of the mean, so tracker noise does not
decide the score; if the driving video moves no channel at all the mean is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from magicportrait.evaluation.motion import pose_degrees
from magicportrait.types import HeadTrack

__all__ = ["CHANNELS", "MIN_DRIVING_STD", "MotionTransfer", "motion_signals", "motion_transfer",
           "mouth_opening", "pearson"]

CHANNELS = ("yaw", "pitch", "roll", "mouth")
# A driving channel that moves less than this (standard deviation) is not motion to transfer: 1 degree of head
# rotation; 0.02 eye-corner distances of inner-lip gap (a closed mouth's tracker noise is ~0.005, speech ~0.05-0.2).
MIN_DRIVING_STD = {"yaw": 1.0, "pitch": 1.0, "roll": 1.0, "mouth": 0.02}
# A result channel moving less than this fraction of the driving channel (standard deviation) is still: 0. The
# tracker and head fit wobble by ~0.1-0.4 degrees on a frozen video, a few percent of a real head motion, and that
# noise can correlate with anything.
STILL_RATIO = 0.1
INNER_LIP_PAIRS = ((13, 14), (82, 87), (312, 317))  # upper, lower inner-lip landmarks (MediaPipe Face Mesh)
EYE_CORNERS = (33, 263)  # outer eye corners


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """`(T,)` inner-lip gap / outer-eye-corner distance of `(T, 478, 3)` landmarks (x, y, z in pixels)."""
    points = np.asarray(landmarks, np.float64)
    upper = points[:, [a for a, _ in INNER_LIP_PAIRS]]
    lower = points[:, [b for _, b in INNER_LIP_PAIRS]]
    gap = np.linalg.norm(upper - lower, axis=-1).mean(axis=1)
    eyes = np.linalg.norm(points[:, EYE_CORNERS[0]] - points[:, EYE_CORNERS[1]], axis=-1)
    return gap / np.maximum(eyes, 1e-6)


def motion_signals(head: HeadTrack, landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """The channels of :data:`CHANNELS` over time: head rotation (degrees) from ``head``, mouth from ``landmarks``
    (the `(T, 478, 3)` landmarks the head was fitted to)."""
    rotation = pose_degrees(head)
    return {"yaw": rotation[:, 0], "pitch": rotation[:, 1], "roll": rotation[:, 2],
            "mouth": mouth_opening(landmarks)}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two series (the shorter length); 0 when either is constant."""
    count = min(len(a), len(b))
    a = np.asarray(a[:count], np.float64) - np.mean(a[:count])
    b = np.asarray(b[:count], np.float64) - np.mean(b[:count])
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 1e-12 else 0.0


@dataclass
class MotionTransfer:
    """Per-channel correlations of a result's motion with the driving video's."""

    correlation: dict[str, float]  # every channel, NaN where the driving video does not move it
    driving_std: dict[str, float]
    result_std: dict[str, float]

    @property
    def used(self) -> tuple[str, ...]:
        """The channels the driving video moves (those in :attr:`mean`)."""
        return tuple(name for name, value in self.correlation.items() if np.isfinite(value))

    @property
    def mean(self) -> float:
        """Mean correlation over :attr:`used` channels; NaN if there are none."""
        values = [self.correlation[name] for name in self.used]
        return float(np.mean(values)) if values else float("nan")


def motion_transfer(result: dict[str, np.ndarray], driving: dict[str, np.ndarray],
                    min_driving_std: dict[str, float] | None = None) -> MotionTransfer:
    """Correlate each channel of ``result`` with ``driving`` (both from :func:`motion_signals`; the shorter
    length is used)."""
    thresholds = {**MIN_DRIVING_STD, **(min_driving_std or {})}
    count = min(min(len(v) for v in result.values()), min(len(v) for v in driving.values()))
    correlation, driving_std, result_std = {}, {}, {}
    for name in CHANNELS:
        ours, theirs = np.asarray(result[name][:count], float), np.asarray(driving[name][:count], float)
        driving_std[name], result_std[name] = float(np.std(theirs)), float(np.std(ours))
        if driving_std[name] < thresholds[name]:
            correlation[name] = float("nan")
        elif result_std[name] < STILL_RATIO * driving_std[name]:
            correlation[name] = 0.0  # the result does not move: whatever its noise correlates with, no transfer
        else:
            correlation[name] = pearson(ours, theirs)
    return MotionTransfer(correlation, driving_std, result_std)
