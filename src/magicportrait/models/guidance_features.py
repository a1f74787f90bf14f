"""The guidance videos a generation reads, and their encoded features.

The maps are read per context window (from arrays or from a loader callable), so a long video need not be in memory.
Their features are kept for the next denoising step while they fit a memory budget (``--guidance-cache-mb``): the
official pipeline encodes every frame once and holds them all, which grows with the video; re-encoding every window
at every step (a budget of 0) is flat but slower. With a budget, the first frames' features up to the budget are
kept and the rest re-encoded, so memory stays flat in the video length beyond it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from magicportrait.errors import InputError

if TYPE_CHECKING:
    from magicportrait.models.guidance_encoder import GuidanceEncoder

FrameLoader = Callable[[int, int], np.ndarray]
"""``loader(start, stop)`` -> uint8 frames ``start..stop-1`` of shape ``(stop - start, H, W, 3)``."""
GuidanceSource = np.ndarray | torch.Tensor | Sequence[np.ndarray] | FrameLoader
MIB = 2 ** 20


class GuidanceVideos:
    """Random access to the guidance videos (one per map type), frames read only when a window needs them.

    Args:
        sources: map name -> uint8 frames `(F, H, W, 3)` (array, tensor or list of frames), or a loader
            ``loader(start, stop)`` returning frames ``start..stop-1`` (so a long video need not be in memory).
        num_frames: the video length; required when every source is a loader.
    """

    def __init__(self, sources: Mapping[str, GuidanceSource], num_frames: int | None = None) -> None:
        if not sources:
            raise InputError("No guidance videos given.")
        self.sources = dict(sources)
        lengths = {name: len(source) for name, source in self.sources.items() if not callable(source)}
        if num_frames is None and not lengths:
            raise InputError("num_frames is needed when the guidance videos are given as loaders.")
        self.num_frames = int(num_frames if num_frames is not None else next(iter(lengths.values())))
        wrong = {name: length for name, length in lengths.items() if length != self.num_frames}
        if wrong or self.num_frames < 1:
            raise InputError(f"Every guidance video needs the same number of frames ({self.num_frames}); got {wrong}.")
        self.height: int | None = None
        self.width: int | None = None
        self.height, self.width = self.read(next(iter(self.sources)), [0]).shape[1:3]
        if self.height % 8 or self.width % 8:
            raise InputError(f"Guidance frames are {self.width}x{self.height}; both sides must be multiples of 8.")

    def read(self, name: str, frames: Sequence[int]) -> np.ndarray:
        """uint8 frames `(len(frames), H, W, 3)` of map `name`, in the order given (contiguous runs read at once)."""
        parts = [self._read_run(name, start, stop) for start, stop in _contiguous_runs(frames)]
        video = np.concatenate(parts)
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise InputError(f"Guidance '{name}' must be uint8 RGB frames (F, H, W, 3), got {video.dtype} "
                             f"{video.shape}.")
        if self.height is not None and video.shape[1:3] != (self.height, self.width):
            raise InputError(f"Guidance '{name}' frames are {video.shape[2]}x{video.shape[1]}, expected "
                             f"{self.width}x{self.height} (all maps and frames must have one size).")
        return video

    def _read_run(self, name: str, start: int, stop: int) -> np.ndarray:
        source = self.sources[name]
        frames = source(start, stop) if callable(source) else source[start:stop]
        if isinstance(frames, torch.Tensor):
            frames = frames.cpu().numpy()
        frames = np.stack(frames) if isinstance(frames, list | tuple) else np.asarray(frames)
        if len(frames) != stop - start:
            raise InputError(f"Guidance '{name}' returned {len(frames)} frames for frames {start}..{stop - 1}.")
        return frames


def _contiguous_runs(frames: Sequence[int]) -> list[tuple[int, int]]:
    """[11, 12, 13, 0, 1, 2] -> [(11, 14), (0, 3)]: half-open ranges of consecutive indices, in order."""
    runs: list[tuple[int, int]] = []
    for frame in frames:
        if runs and runs[-1][1] == frame:
            runs[-1] = (runs[-1][0], frame + 1)
        else:
            runs.append((frame, frame + 1))
    return runs


class GuidanceFeatures:
    """Guidance features of any set of frames: each map through its encoder, the three summed (as the official
    pipeline does), computed on demand; kept (on the device, in the network dtype, so exactly as computed) for as
    many frames as ``cache_bytes`` holds."""

    def __init__(self, encoders: Mapping[str, GuidanceEncoder], videos: GuidanceVideos, chunk: int,
                 device: torch.device, dtype: torch.dtype, cache_bytes: int = 0) -> None:
        missing = sorted(set(encoders) - set(videos.sources))
        extra = sorted(set(videos.sources) - set(encoders))
        if missing or extra:
            raise InputError(f"The guidance maps must match the encoders {sorted(encoders)}: missing {missing}, "
                             f"unexpected {extra}.")
        self.encoders, self.videos, self.chunk = encoders, videos, chunk
        self.device, self.dtype = device, dtype
        self.cache: dict[int, torch.Tensor] = {}
        self.cache_bytes = cache_bytes

    def __call__(self, frames: Sequence[int]) -> torch.Tensor:
        """Features `(1, E, len(frames), H/8, W/8)` in the network dtype."""
        todo = [frame for frame in dict.fromkeys(frames) if frame not in self.cache]
        fresh = dict(zip(todo, self._encode(todo)[0].unbind(1), strict=True)) if todo else {}
        for frame, feature in fresh.items():
            if (len(self.cache) + 1) * feature.numel() * feature.element_size() <= self.cache_bytes:
                self.cache[frame] = feature.clone()  # a view would keep the whole window's tensor alive
        return torch.stack([self.cache[frame] if frame in self.cache else fresh[frame] for frame in frames],
                           dim=1).unsqueeze(0)

    def _encode(self, frames: Sequence[int]) -> torch.Tensor:
        features = []
        for name, encoder in self.encoders.items():
            maps = torch.from_numpy(self.videos.read(name, frames)).to(self.device)
            maps = (maps.float() / 255.0).permute(3, 0, 1, 2).unsqueeze(0)  # (1, 3, F, H, W) in [0, 1]
            features.append(encoder(maps.to(self.dtype), frame_chunk=self.chunk))
        return torch.stack(features).sum(0)  # stack-then-sum, as the official pipeline adds them
