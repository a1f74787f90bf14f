"""How the diffusion networks run (issue 15, section 3): each option gives the plain path's output within tolerance
on the CPU, the precision fallbacks, the memory estimate and the refusal before a run that cannot fit."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from magicportrait.errors import InputError
from magicportrait.models import runtime
from magicportrait.models.generation import GenerationConfig, GenerationPipeline

FRAMES, SIZE = 6, 64


def rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).norm() / expected.double().norm())


@pytest.fixture(scope="module")
def pipe(release) -> GenerationPipeline:
    from magicportrait.models.release import load_release, resolve_release_paths

    return GenerationPipeline(**load_release(resolve_release_paths(release)))


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(3)
    reference = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    guidance = {name: rng.integers(0, 256, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
                for name in ("depth", "normal", "render")}
    return reference, guidance


def config(**options) -> GenerationConfig:
    return GenerationConfig(**{"steps": 2, "context_frames": 4, "show_progress": False, **options})


@pytest.fixture(scope="module")
def plain(pipe, inputs) -> torch.Tensor:
    return pipe.generate_latents(*inputs, config(feed_forward_chunk=0, guidance_cache_mb=0))


def test_auto_dtype_is_fp32_on_cpu_and_fp16_on_cuda() -> None:
    assert GenerationConfig().dtype == "auto" and GenerationConfig().torch_dtype == torch.float32
    assert runtime.resolve_dtype("auto", "cuda") == torch.float16
    assert runtime.resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert runtime.overflow_fallback("cpu") == torch.float32


def test_defaults_equal_the_plain_path(pipe, inputs, plain) -> None:
    """The default feed-forward chunks (4096 rows on the CPU) and guidance cache change no number beyond rounding."""
    default = pipe.generate_latents(*inputs, config())
    assert rel_l2(default, plain) < 1e-5
    chunked = pipe.generate_latents(*inputs, config(feed_forward_chunk=7))  # 7 rows: every layer is split
    # Rounding only (a feed-forward alone agrees to 3e-7), which the random tiny UNet amplifies over the loop; a
    # chunking that mixed rows would be off by O(1).
    assert rel_l2(chunked, plain) < 5e-3


def test_offload_moves_the_reference_unet_and_vae_only_while_used(pipe, inputs, plain, monkeypatch) -> None:
    moves = []
    for name in ("reference_unet", "vae"):
        module = getattr(pipe, name)
        original = module.to

        def recording_to(*args, _name=name, _original=original, **kwargs):
            moves.append((_name, str(args[0] if args else kwargs.get("device"))))
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "to", recording_to)
    latents = pipe.generate_latents(*inputs, config(offload=True, feed_forward_chunk=0))
    assert rel_l2(latents, plain) < 1e-6
    # Placed on the CPU, brought to the device for the reference image and the reference pass, then back.
    assert ("vae", "cpu") in moves[:2] and ("reference_unet", "cpu") in moves[:2]
    assert moves[2:] == [("vae", "cpu"), ("vae", "cpu"), ("reference_unet", "cpu"), ("reference_unet", "cpu")]
    video = np.concatenate(list(pipe.iter_video(latents, 2, config(offload=True))))
    np.testing.assert_array_equal(video, np.concatenate(list(pipe.iter_video(latents, 2))))


def test_vae_tiles_blend_to_the_whole_frame_decode(pipe) -> None:
    latents = torch.randn(1, 4, 2, 24, 24, generator=torch.Generator().manual_seed(0))
    whole = torch.cat(list(pipe.decode_latents(latents, 2)))
    tiled = torch.cat(list(pipe.decode_latents(latents, 2, config(vae_tile=64))))
    assert tiled.shape == whole.shape == (2, 3, 192, 192)
    difference = float((tiled - whole).abs().mean())
    other = torch.cat(list(pipe.decode_latents(torch.roll(latents, 5, dims=-1), 2)))
    # Tiles are normalised apart (a random VAE's group norms see other statistics) and blended: close to the whole
    # decode, far closer than another video is.
    assert 0 < difference < 0.05 and difference < 0.25 * float((other - whole).abs().mean())
    assert not pipe.vae.use_tiling or pipe.vae.tile_sample_min_size == 64


def test_compile_gives_the_plain_output(pipe, inputs, plain, caplog, monkeypatch) -> None:
    # Dynamo's graph capture as --compile does it; the aot_eager backend skips inductor's C++ build (about two
    # minutes for this UNet on 2 cores), which the GPU check measures.
    monkeypatch.setattr(runtime, "COMPILE_BACKEND", "aot_eager")
    with caplog.at_level(logging.INFO, logger="magicportrait.models.generation"):
        latents = pipe.generate_latents(*inputs, config(compile=True, feed_forward_chunk=0, guidance_cache_mb=0))
    assert pipe.denoising_unet._compiled_call_impl is not None
    assert rel_l2(latents, plain) < 1e-4  # rounding (traced ops fused differently), amplified by the random UNet
    assert "warm-up" in caplog.text
    pipe.generate_latents(*inputs, config(steps=1))
    assert pipe.denoising_unet._compiled_call_impl is None  # undone without --compile


def test_fp16_overflow_falls_back(release, inputs, monkeypatch, caplog) -> None:
    """An ``auto`` run whose fp16 UNet overflows is generated again in the fallback dtype (fp32 on the CPU)."""
    from magicportrait.models.release import load_release, resolve_release_paths

    pipe = GenerationPipeline(**load_release(resolve_release_paths(release)))  # its weights go through fp16
    monkeypatch.setattr(runtime, "resolve_dtype", lambda name, device: torch.float16)
    calls = []

    def overflow(module, args, output):
        calls.append(output.dtype)
        return output.masked_fill(torch.zeros_like(output, dtype=torch.bool).index_fill(2, torch.tensor([0]), True),
                                  float("inf")) if output.dtype == torch.float16 else output

    handle = pipe.denoising_unet.register_forward_hook(overflow)
    with caplog.at_level(logging.WARNING):
        latents = pipe.generate_latents(*inputs, config(feed_forward_chunk=0))
    handle.remove()
    assert "fp16 overflowed" in caplog.text and calls[0] == torch.float16 and calls[-1] == torch.float32
    assert calls.count(torch.float16) == 2  # the first step's two windows, then the whole run again in fp32
    monkeypatch.undo()
    again = pipe.generate_latents(*inputs, config(feed_forward_chunk=0, dtype="fp32"))
    torch.testing.assert_close(latents, again, rtol=1e-6, atol=1e-6)


def test_vae_falls_back_to_fp32_on_non_finite_values(release, caplog) -> None:
    from magicportrait.models.release import load_release, resolve_release_paths

    pipe = GenerationPipeline(**load_release(resolve_release_paths(release)))  # its VAE goes through bf16
    latents = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = torch.cat(list(pipe.decode_latents(latents, 2)))
    pipe.vae.to(torch.bfloat16)

    def poison(module, args, output):
        return output * float("nan") if output.dtype == torch.bfloat16 else output

    handle = pipe.vae.decoder.register_forward_hook(poison)
    try:
        with caplog.at_level(logging.WARNING):
            decoded = torch.cat(list(pipe.decode_latents(latents, 2)))
    finally:
        handle.remove()
    assert "running it in fp32" in caplog.text and pipe.vae.dtype == torch.float32
    assert torch.isfinite(decoded).all() and float((decoded - expected).abs().max()) < 0.05


def test_low_vram_preset_and_option_checks() -> None:
    preset = GenerationConfig(low_vram=True)
    assert (preset.offload, preset.vae_tile, preset.decode_chunk, preset.guidance_cache_mb) == (True, 256, 1, 0)
    assert preset.guidance_chunk == 4 and preset.feed_forward_rows == runtime.CPU_FEED_FORWARD_ROWS
    assert GenerationConfig(low_vram=True, vae_tile=128).vae_tile == 128
    assert GenerationConfig(device="cpu").feed_forward_rows == runtime.CPU_FEED_FORWARD_ROWS
    assert GenerationConfig(feed_forward_chunk=0).feed_forward_rows == 0
    for bad in ({"vae_tile": 30}, {"vae_tile": 100}, {"guidance_cache_mb": -1}, {"feed_forward_chunk": -5},
                {"dtype": "fp8"}):
        with pytest.raises(InputError):
            GenerationConfig(**bad)


def test_low_vram_gives_the_plain_output(pipe, inputs, plain) -> None:
    latents = pipe.generate_latents(*inputs, config(low_vram=True))
    assert rel_l2(latents, plain) < 5e-3  # feed-forward chunks: rounding, amplified by the random tiny UNet
    video = np.concatenate(list(pipe.iter_video(latents, 1, config(low_vram=True, vae_tile=64))))
    assert video.shape == (FRAMES, SIZE, SIZE, 3)  # 64-pixel frames: one tile each, as a whole-frame decode
    difference = np.abs(video.astype(int) - np.concatenate(list(pipe.iter_video(latents, 4))))
    assert difference.max() <= 1 and difference.mean() < 0.01  # decoded one frame at a time: rounding


def test_memory_estimate_and_refusal(pipe, inputs, monkeypatch) -> None:
    short = pipe.estimate_memory(config(), 24, 256, 256)
    long = pipe.estimate_memory(config(), 300, 256, 256)
    assert long.activations == short.activations and long.latents == 300 / 24 * short.latents
    features = 32 * 32 * 32 * 4  # the tiny encoders' 32 channels at 256 / 8, fp32
    assert short.guidance_cache == 24 * features
    capped = pipe.estimate_memory(config(guidance_cache_mb=features * 10 / 2 ** 20), 300, 256, 256)
    assert capped.guidance_cache == 10 * features  # flat in the video length beyond the budget
    assert short.weights == 0  # on the CPU the weights are in RAM already
    tiled = pipe.estimate_memory(config(vae_tile=64, decode_chunk=1), 24, 256, 256)
    assert tiled.activations < short.activations  # the VAE decode's activations set the peak of the default
    whole = pipe.estimate_memory(config(vae_tile=64, decode_chunk=1, feed_forward_chunk=0), 24, 256, 256)
    assert tiled.activations < whole.activations  # then the UNet's, smaller with feed-forward chunks
    monkeypatch.setattr(runtime, "available_bytes", lambda device: 1000)
    with pytest.raises(InputError, match="needs about .* GiB more RAM.*--low-vram"):
        pipe.generate_latents(*inputs, config())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page release is Linux-only (a no-op elsewhere)")
def test_reference_unet_pages_released_and_read_again_unchanged(pipe) -> None:
    """The loader memory-maps the reference UNet; releasing its pages drops them from RAM, and the next pass reads the
    same weights again. Weights in ordinary memory are never touched."""
    reference = pipe.reference_unet
    before = {name: tensor.clone() for name, tensor in reference.state_dict().items()}
    released = runtime.release_mapped_pages(reference)
    assert released >= 0.9 * runtime.module_bytes(reference)  # all of it (the tiny model's pages, whole)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # read back from the file, bit for bit
    ordinary = torch.nn.Linear(64, 64)
    weight = ordinary.weight.detach().clone()
    assert runtime.release_mapped_pages(ordinary) == 0 and torch.equal(ordinary.weight, weight)
    assert runtime.release_mapped_pages(pipe.denoising_unet) == 0  # read into RAM, not mapped
