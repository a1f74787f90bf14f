"""Context windows: how a long video's latent frames are cut into the short clips the motion modules see.

The denoising UNet's temporal attention was trained on short clips, so every denoising step runs it on windows of
``context_frames`` frames and blends the windows' predictions back into one prediction per frame.

Two modes:

- ``"closed_loop"`` (the official release): AnimateDiff's *uniform* schedule at step index 0 with stride 1.
  Windows start at ``0, c - o, 2 (c - o), ...`` (``c`` = context frames, ``o`` = overlap) while the start is inside
  the video, and each takes ``c`` consecutive frames *modulo* the video length, so the last window wraps around to
  the first frames (e.g. 14 frames, c=12, o=1: ``[0..11]`` and ``[11, 12, 13, 0, ..., 8]``). Frames seen by several
  windows get the plain average of their predictions.
- ``"open_loop"``: no wrap-around (a video's end is not glued to its start). Windows are spread evenly from the
  first frame to the last, adjacent ones sharing at least ``o`` frames; each window's weight ramps linearly over
  the frames it shares with its neighbours, so the seams are cross-faded instead of averaged.

In both modes a window's weights are normalised so that, for every frame, the weights over all windows sum to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

ContextMode = Literal["closed_loop", "open_loop"]
CONTEXT_MODES = ("closed_loop", "open_loop")
DEFAULT_OVERLAP = {"closed_loop": 1, "open_loop": 4}


@dataclass(frozen=True)
class ContextWindow:
    """One window of frames and each frame's blend weight.

    Attributes:
        frames: indices of the window's frames in the video, in the order the UNet sees them.
        weights: `torch.Tensor` of shape `(len(frames),)`, float32: the weight of this window's prediction for each
            of its frames; summed over all windows, every frame's weights add up to 1.
    """

    frames: tuple[int, ...]
    weights: torch.Tensor


def context_windows(num_frames: int, context_frames: int = 12, overlap: int | None = None,
                    mode: ContextMode = "closed_loop") -> list[ContextWindow]:
    """The context windows covering `num_frames` frames, with their blend weights.

    Args:
        num_frames: frames in the video (latent frames), at least 1.
        context_frames: frames per window (the official release: 12). A video this short or shorter is one window.
        overlap: frames shared by adjacent windows; default 1 for ``"closed_loop"`` (official), 4 for
            ``"open_loop"``. Must be smaller than `context_frames`.
        mode: ``"closed_loop"`` (official, wrap-around, averaged) or ``"open_loop"`` (no wrap, cross-faded).
    """
    overlap = _check_arguments(num_frames, context_frames, overlap, mode)
    if num_frames <= context_frames:
        frame_lists = [tuple(range(num_frames))]
    elif mode == "closed_loop":
        frame_lists = _closed_loop_frames(num_frames, context_frames, overlap)
    else:
        frame_lists = _open_loop_frames(num_frames, context_frames, overlap)
    raw_weights = _raw_weights(frame_lists, mode)
    return _normalised(frame_lists, raw_weights, num_frames)


def _check_arguments(num_frames: int, context_frames: int, overlap: int | None, mode: str) -> int:
    if mode not in CONTEXT_MODES:
        raise ValueError(f"context mode must be one of {CONTEXT_MODES}, got {mode!r}.")
    if num_frames < 1 or context_frames < 1:
        raise ValueError(f"num_frames ({num_frames}) and context_frames ({context_frames}) must be at least 1.")
    overlap = DEFAULT_OVERLAP[mode] if overlap is None else overlap
    if not 0 <= overlap < context_frames:
        raise ValueError(f"context overlap must be in 0..{context_frames - 1}, got {overlap}.")
    return overlap


def _closed_loop_frames(num_frames: int, context_frames: int, overlap: int) -> list[tuple[int, ...]]:
    """AnimateDiff's uniform schedule at step 0, stride 1: starts every c - o frames, indices wrap modulo F."""
    starts = range(0, num_frames, context_frames - overlap)
    return [tuple((start + i) % num_frames for i in range(context_frames)) for start in starts]


def _open_loop_frames(num_frames: int, context_frames: int, overlap: int) -> list[tuple[int, ...]]:
    """The fewest windows that share >= `overlap` frames, spread evenly; the last one ends on the last frame."""
    num_windows = math.ceil((num_frames - overlap) / (context_frames - overlap))
    last_start = num_frames - context_frames
    starts = [round(index * last_start / (num_windows - 1)) for index in range(num_windows)]
    return [tuple(range(start, start + context_frames)) for start in starts]


def _raw_weights(frame_lists: list[tuple[int, ...]], mode: str) -> list[torch.Tensor]:
    """Uniform for closed loop. For open loop a trapezoid per window: it rises over the frames shared with the
    previous window and falls over those shared with the next, so two windows cross-fade linearly across their
    whole overlap (the weights of the pair sum to 1 there before normalising)."""
    if mode == "closed_loop":
        return [torch.ones(len(frames)) for frames in frame_lists]
    starts = [frames[0] for frames in frame_lists]
    ends = [frames[-1] + 1 for frames in frame_lists]
    ramp_in = [0] + [max(end - start, 0) for end, start in zip(ends[:-1], starts[1:], strict=True)]
    ramp_out = ramp_in[1:] + [0]
    return [_trapezoid(len(frames), rise, fall)
            for frames, rise, fall in zip(frame_lists, ramp_in, ramp_out, strict=True)]


def _trapezoid(length: int, rise: int, fall: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32)
    rising = (position + 1) / (rise + 1)
    falling = (length - position) / (fall + 1)
    return torch.minimum(torch.minimum(rising, falling), torch.ones(length))


def _normalised(frame_lists: list[tuple[int, ...]], raw_weights: list[torch.Tensor],
                num_frames: int) -> list[ContextWindow]:
    """Divide each window's weights by the per-frame total over all windows (frames seen once get weight 1)."""
    total = torch.zeros(num_frames)
    for frames, weights in zip(frame_lists, raw_weights, strict=True):
        total.index_add_(0, torch.tensor(frames), weights)
    return [ContextWindow(frames, weights / total[list(frames)])
            for frames, weights in zip(frame_lists, raw_weights, strict=True)]
