"""How the diffusion networks run: precision, feed-forward chunking, offloading, compiling, VAE tiling, and the
memory a generation needs (checked before it starts, so that a run that cannot fit says so instead of failing with
an out-of-memory traceback halfway).

These change neither the weights nor the sampling: each gives the plain path's output within float tolerance
(tests/models/test_runtime.py), except ``--dtype`` (lower precision) and VAE tiling (tiles are decoded apart and
blended at their overlaps).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from magicportrait.errors import InputError

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GIB = 2 ** 30
CPU_FEED_FORWARD_ROWS = 4096
"""Rows (tokens x frames) of a feed-forward layer computed at once on the CPU by default: the GEGLU's 8x-wide
intermediate of a whole UNet window is the largest tensor of a step (0.35 -> 0.14 GiB at 256x256, half width)."""


def resolve_dtype(name: str, device: str | torch.device) -> torch.dtype:
    """``auto``: fp16 on CUDA (bf16 replaces it if it overflows, see :func:`overflow_fallback`), fp32 elsewhere."""
    if name != "auto":
        return DTYPES[name]
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def overflow_fallback(device: str | torch.device) -> torch.dtype:
    """What an fp16 run that overflowed is repeated in: bf16 where the device computes it natively, else fp32."""
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


# --- feed-forward chunking -----------------------------------------------------------------------------------------


def set_feed_forward_chunk(model: nn.Module, rows: int) -> None:
    """Compute every diffusers ``FeedForward`` of ``model`` ``rows`` rows at a time (0: all at once), its GEGLU
    fused when no gradient is recorded.

    A feed-forward acts on each token alone, so this is exact up to float rounding, and bounds its intermediate
    (8x the width under GEGLU) to ``rows`` rows."""
    from diffusers.models.attention import FeedForward

    for module in model.modules():
        if isinstance(module, FeedForward):
            module.chunk_rows = rows
            if "forward" not in vars(module):
                module.forward = functools.partial(_row_chunked_forward, module)


def _row_chunked_forward(module: nn.Module, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    whole = _fused_geglu_forward if _fusable(module, hidden_states) else type(module).forward
    rows = getattr(module, "chunk_rows", 0)
    if not rows or hidden_states.numel() // hidden_states.shape[-1] <= rows:
        return whole(module, hidden_states, *args, **kwargs)
    flat = hidden_states.reshape(-1, hidden_states.shape[-1])
    output = torch.cat([whole(module, part, *args, **kwargs) for part in flat.split(rows)])
    return output.reshape(*hidden_states.shape[:-1], output.shape[-1])


def _fusable(module: nn.Module, hidden_states: torch.Tensor) -> bool:
    from diffusers.models.activations import GEGLU

    recording = torch.is_grad_enabled() and (hidden_states.requires_grad or any(
        parameter.requires_grad for parameter in module.parameters()))
    return isinstance(module.net[0], GEGLU) and not recording


def _fused_geglu_forward(module: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """diffusers' GEGLU feed-forward with its value and gate halves projected apart (each contiguous) and the GELU
    and the product done in place: the same numbers with two fewer passes over its widest tensor."""
    projection = module.net[0].proj
    width = projection.out_features // 2
    bias = (None, None) if projection.bias is None else (projection.bias[:width], projection.bias[width:])
    gate = torch._C._nn.gelu_(F.linear(hidden_states, projection.weight[width:], bias[1]))
    hidden_states = F.linear(hidden_states, projection.weight[:width], bias[0]).mul_(gate)
    for layer in module.net[1:]:
        hidden_states = layer(hidden_states)
    return hidden_states


# --- offloading, compiling, tiling ---------------------------------------------------------------------------------


@contextlib.contextmanager
def on_device(modules: Sequence[nn.Module], device: torch.device, offload: bool) -> Iterator[None]:
    """With ``offload``, move ``modules`` to ``device`` for the block and back to the CPU after it (``--offload``:
    the reference UNet and the VAE are used once per video and at the end; the GPU holds them only then)."""
    if offload:
        for module in modules:
            module.to(device)
    try:
        yield
    finally:
        if offload:
            for module in modules:
                module.to("cpu")
            if device.type == "cuda":
                torch.cuda.empty_cache()


COMPILE_BACKEND = "inductor"


def set_compiled(model: nn.Module, compiled: bool) -> None:
    """``torch.compile`` the module in place (its parameters and state-dict keys unchanged), or undo it."""
    if not compiled:
        model._compiled_call_impl = None
    elif getattr(model, "_compiled_call_impl", None) is None:
        model.compile(backend=COMPILE_BACKEND)


def set_vae_tiling(vae: nn.Module, tile: int) -> None:
    """Decode in overlapping ``tile``-pixel tiles blended at their seams (diffusers' tiled decode; 0: whole frames).
    The encoder side (the one reference image) stays untiled."""
    if not tile:
        vae.disable_tiling()
        return
    vae.enable_tiling()
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.tile_sample_min_size = tile
    vae.tile_latent_min_size = tile // factor
    vae.tile_overlap_factor = 0.25


# --- memory --------------------------------------------------------------------------------------------------------

MADV_DONTNEED = 4  # Linux
PAGE = 4096


def release_mapped_pages(module: nn.Module) -> int:
    """Drop the resident pages of ``module``'s tensors that are memory-mapped, read-only in use, from a checkpoint file
    (Linux): the reference UNet runs once per video, so its weights need not stay in RAM for the denoising loop.

    Only private file mappings the process never wrote are released (``madvise(MADV_DONTNEED)``): their next touch
    reads the file's bytes again, from the page cache. Tensors in anonymous memory (loaded into RAM, cast, on a GPU)
    are left alone. Returns the bytes released."""
    if not sys.platform.startswith("linux"):
        return 0
    mappings = _private_file_mappings()
    spans = set()
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.device.type != "cpu" or tensor.untyped_storage().nbytes() == 0:
            continue
        start = tensor.untyped_storage().data_ptr()
        end = start + tensor.untyped_storage().nbytes()
        spans.update(span for span in mappings if span[0] <= start and end <= span[1])
    libc = ctypes.CDLL(None, use_errno=True)
    released = 0
    for start, end in spans:
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_DONTNEED) == 0:
            released += end - start
    return released


def _private_file_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's private mappings of checkpoint files with no page written (no anonymous
    copy-on-write page: ``/proc/self/smaps``), i.e. those whose pages can be dropped and read again unchanged."""
    spans, current = [], None
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/smaps").read_text().splitlines():
            fields = line.split(maxsplit=5)
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header: address perms offset dev inode [path]
                private = fields[1][3] == "p" and len(fields) == 6 and fields[5].endswith(CHECKPOINT_SUFFIXES)
                current = tuple(int(part, 16) for part in fields[0].split("-")) if private else None
            elif current is not None and fields[0] == "Anonymous:":
                if fields[1] == "0":
                    spans.append(current)
                current = None
    return spans


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a generation needs on its device beyond what is there now."""

    weights: int
    latents: int
    guidance_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.latents + self.guidance_cache + self.activations

    def describe(self) -> str:
        parts = {"weights": self.weights, "latents": self.latents, "guidance cache": self.guidance_cache,
                 "activations": self.activations}
        return ", ".join(f"{name} {size / GIB:.2f}" for name, size in parts.items() if size) + " GiB"


ACTIVATION_FACTOR = {True: 10, False: 24}
"""Peak activation bytes of a UNet window per ``batch x tokens x width x itemsize`` of its first level, with and
without feed-forward chunking (measured on the SD-1.5 layout at half width, 256x256, fp32, CPU: 0.14 and 0.35 GiB)."""


def module_bytes(module: nn.Module, device: torch.device | None = None, dtype: torch.dtype | None = None) -> int:
    """Bytes of ``module``'s parameters and buffers once cast to ``dtype`` (floating ones), counting only those not
    already on ``device`` when it is given."""
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if device is not None and tensor.device == device:
            continue
        itemsize = dtype.itemsize if dtype is not None and tensor.is_floating_point() else tensor.element_size()
        total += tensor.numel() * itemsize
    return total


def available_bytes(device: torch.device) -> int | None:
    """Free memory of the device (CUDA: the driver's view; CPU: MemAvailable), or None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        with contextlib.suppress(OSError, StopIteration, ValueError):
            lines = Path("/proc/meminfo").read_text().splitlines()
            return int(next(line for line in lines if line.startswith("MemAvailable:")).split()[1]) * 1024
    return None


def check_fits(estimate: MemoryEstimate, device: torch.device) -> None:
    """Refuse a generation that cannot fit, before it starts (with what to change)."""
    free = available_bytes(device)
    if free is None or estimate.total <= free:
        logger.info("Memory estimate on %s: %s (%.2f GiB free).", device, estimate.describe(),
                    (free or 0) / GIB)
        return
    where = "GPU" if device.type == "cuda" else "RAM"
    raise InputError(f"This generation needs about {estimate.total / GIB:.1f} GiB more {where} memory "
                     f"({estimate.describe()}), and {free / GIB:.1f} GiB are free. Use --low-vram (offloading, "
                     "fp16, smaller chunks), a smaller --size, fewer --context-frames, or close other programs.")


def out_of_memory_error(device: torch.device) -> InputError:
    where = "GPU" if device.type == "cuda" else "RAM"
    return InputError(f"Out of {where} memory while generating. Use --low-vram (offloading, fp16, smaller chunks), "
                      "a smaller --size or fewer --context-frames.")


def estimate_generation(pipeline, config, num_frames: int, height: int, width: int) -> MemoryEstimate:
    """The memory a :class:`~magicportrait.models.generation.GenerationPipeline` run needs on ``config.device``
    beyond what is there now (weights not yet there, latents, feature cache, the largest activation)."""
    device, dtype = torch.device(config.device), config.torch_dtype
    resident = [pipeline.denoising_unet, *pipeline.guidance_encoders.values()]
    if not config.offload:
        resident += [pipeline.reference_unet, pipeline.vae]
    # On the CPU the weights are in RAM already; on a GPU, those not there yet, at the run's precision.
    weights = 0 if device.type == "cpu" else sum(module_bytes(module, device, dtype) for module in resident)
    factor = pipeline.vae_scale_factor
    latent = (height // factor) * (width // factor)
    batch = (2 if config.do_classifier_free_guidance else 1) * min(config.context_frames, num_frames)
    width0 = _config_value(pipeline.denoising_unet, "block_out_channels", [0])[0]
    unet = ACTIVATION_FACTOR[config.feed_forward_rows > 0] * batch * latent * width0 * dtype.itemsize
    tile = config.vae_tile or max(height, width)
    decode = (8 * min(config.decode_chunk, num_frames) * min(tile, height) * min(tile, width)
              * _config_value(pipeline.vae, "block_out_channels", [0])[0] * 4)
    conv_out = getattr(next(iter(pipeline.guidance_encoders.values())), "conv_out", None)
    channels = conv_out.out_channels if conv_out is not None else 0
    features = min(num_frames * channels * latent * dtype.itemsize, config.guidance_cache_bytes)
    # The fp32 latents, the blended velocity and the scheduler's new latents: three (1, 4, F, h, w) tensors.
    return MemoryEstimate(weights=int(weights), latents=4 * 4 * num_frames * latent * 3,
                          guidance_cache=int(features), activations=int(max(unet, decode)))


def _config_value(model: nn.Module, name: str, default):
    config = getattr(model, "config", None)
    return config.get(name, default) if config is not None else default
