"""Structured face alignment on FLAME codes (:class:`~magicportrait.types.FlameCodes`), as the official
MagicPortrait preprocessing does it, with our options on top.

Official (absolute pose): every driving frame keeps the portrait's shape, camera, crop, texture and light and takes
the driving frame's global rotation, expression and jaw; the head is posed about FLAME's root joint and projected
through the portrait's crop, so it stays where the portrait's head is. Ours on top, each optional: the driving
codes smoothed over time, and the expression taken relative to the reference frame or scaled (see
:class:`~magicportrait.alignment.AlignmentConfig`). The relative pose mode works on head tracks
(:func:`~magicportrait.alignment.align_to_source`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from magicportrait.alignment.structured import AlignmentConfig
from magicportrait.tracking.smoothing import smooth, smooth_rotations
from magicportrait.types import FlameCodes


def transfer_codes(source: FlameCodes, driving: FlameCodes) -> FlameCodes:
    """The official transfer: the portrait's (frame 0) shape, camera, crop, texture and light with each driving
    frame's global rotation, expression, jaw and eyelids."""
    count = driving.num_frames
    kept = {name: _repeat(getattr(source, name), count) for name in ("shape", "cam", "crop_matrix", "tex", "light")}
    return FlameCodes(**kept, expression=driving.expression, global_pose=driving.global_pose, jaw=driving.jaw,
                      eyelids=driving.eyelids, image_size=source.image_size, crop_size=source.crop_size,
                      source=driving.source)


def _repeat(value: np.ndarray | None, count: int) -> np.ndarray | None:
    return None if value is None else np.repeat(value[:1], count, axis=0)


def align_codes(source: FlameCodes, driving: FlameCodes, config: AlignmentConfig, fps: float = 0.0) -> FlameCodes:
    """:func:`transfer_codes` of the driving codes smoothed and with the expression options applied."""
    config = config.resolved(official=True)
    driving = smooth_codes(driving, config.smoothing, config.smoothing_method, fps)
    scale, ref = config.expression_scale, config.reference_frame
    if not 0 <= ref < driving.num_frames:
        from magicportrait.config import flag
        from magicportrait.errors import InputError

        raise InputError(f"{flag('reference_frame')} {ref} is outside the driving video (frames 0.."
                         f"{driving.num_frames - 1}).")
    if config.expression_mode == "relative":
        expression = source.expression[:1] + (driving.expression - driving.expression[ref]) * scale
        jaw = source.jaw[:1] + (driving.jaw - driving.jaw[ref]) * scale
    else:
        expression, jaw = driving.expression * scale, driving.jaw * scale
    return transfer_codes(source, replace(driving, expression=expression, jaw=jaw))


def smooth_codes(codes: FlameCodes, strength: float, method: str = "savgol", fps: float = 0.0) -> FlameCodes:
    """The motion codes (global rotation, expression, jaw, eyelids) smoothed over time (0: unchanged)."""
    if strength <= 0 or method == "none" or codes.num_frames < 3:
        return codes
    fps = fps or 25.0

    def values(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else smooth(array, method=method, strength=strength, fps=fps)

    def rotations(array: np.ndarray) -> np.ndarray:
        return smooth_rotations(array, method=method, strength=strength, fps=fps)

    return replace(codes, global_pose=rotations(codes.global_pose), jaw=rotations(codes.jaw),
                   expression=values(codes.expression), eyelids=values(codes.eyelids))
