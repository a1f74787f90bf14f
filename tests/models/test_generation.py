"""The sampling pipeline: context windows, the DDIM / CFG loop, and the official pipeline's compatibility vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from torch import nn

from magicportrait.errors import InputError
from magicportrait.models import official_vectors
from magicportrait.models.context import context_windows
from magicportrait.models.generation import GenerationConfig, GenerationPipeline, GuidanceVideos, make_scheduler
from shared_paths import VECTORS

needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason="official-tiny vectors not available")
TINY_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "norm_num_groups": 32,
            "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}


def rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return float((actual.double() - expected).norm() / expected.norm())


# --- context windows -----------------------------------------------------------------------------------------------


@needs_vectors
def test_closed_loop_windows_match_official() -> None:
    official = json.loads((VECTORS / "windows.json").read_text())
    windows = context_windows(14, 12, 1, "closed_loop")
    assert [list(window.frames) for window in windows] == official["windows_used_per_step"][0]
    visits = torch.zeros(14)
    for window in windows:
        visits[list(window.frames)] += 1
    assert visits.tolist() == official["frame_visit_count"]


def test_closed_loop_windows_wrap_around() -> None:
    windows = context_windows(100)
    assert len(windows) == 10
    assert windows[-1].frames == (99, *range(11))
    assert [list(w.frames) for w in context_windows(24)] == [list(range(12)), list(range(11, 23)),
                                                            [22, 23, *range(10)]]
    assert [w.frames for w in context_windows(12)] == [tuple(range(12))]
    assert [w.frames for w in context_windows(5)] == [tuple(range(5))]


@pytest.mark.parametrize("mode", ["closed_loop", "open_loop"])
@pytest.mark.parametrize("num_frames", [1, 11, 12, 13, 14, 21, 30, 100, 137])
def test_window_weights_sum_to_one_per_frame(mode: str, num_frames: int) -> None:
    windows = context_windows(num_frames, 12, mode=mode)
    total = torch.zeros(num_frames)
    for window in windows:
        assert len(window.frames) == min(12, num_frames) == len(set(window.frames))
        assert (window.weights > 0).all()
        total.index_add_(0, torch.tensor(window.frames), window.weights)
    torch.testing.assert_close(total, torch.ones(num_frames), rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_frames", [13, 21, 30, 100, 137])
@pytest.mark.parametrize("overlap", [0, 4, 6])
def test_open_loop_windows_do_not_wrap_and_cross_fade(num_frames: int, overlap: int) -> None:
    windows = context_windows(num_frames, 12, overlap, "open_loop")
    for window in windows:
        assert list(window.frames) == list(range(window.frames[0], window.frames[0] + 12))  # no wrap-around
    assert windows[0].frames[0] == 0 and windows[-1].frames[-1] == num_frames - 1
    visits = torch.zeros(num_frames)
    for window in windows:
        visits[list(window.frames)] += 1
    for previous, following in zip(windows[:-1], windows[1:], strict=True):
        shared = previous.frames[-1] + 1 - following.frames[0]
        assert shared >= overlap
        if shared > 0 and (visits[following.frames[0]:previous.frames[-1] + 1] == 2).all():
            fade_out, fade_in = previous.weights[-shared:], following.weights[:shared]  # a linear cross-fade
            assert (fade_out.diff() < 0).all() and (fade_in.diff() > 0).all()
            torch.testing.assert_close(fade_out + fade_in, torch.ones(shared))
    assert windows[0].weights[0] == 1 and windows[-1].weights[-1] == 1


def test_open_loop_default_overlap_is_four() -> None:
    windows = context_windows(20, 12, mode="open_loop")
    assert [w.frames[0] for w in windows] == [0, 8]


def test_context_window_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="overlap"):
        context_windows(30, 12, 12)
    with pytest.raises(ValueError, match="mode"):
        context_windows(30, 12, mode="spiral")
    with pytest.raises(InputError, match="--context-overlap"):
        GenerationConfig(context_overlap=12)


# --- the loop with stand-in networks ----------------------------------------------------------------------------


class StubUNet(nn.Module):
    """v = a function of the inputs, the timestep, and which CFG half the row is in (row 0 = unconditional)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, sample, timestep, encoder_hidden_states, guidance_features=None):
        output = self.scale * sample + 0.1 * guidance_features[:, :4] + float(timestep) / 1000
        output = output + encoder_hidden_states.mean() + torch.linspace(0, 1, sample.shape[2]).view(1, 1, -1, 1, 1)
        if sample.shape[0] == 2:
            output = output + torch.tensor([0.0, 0.3]).view(2, 1, 1, 1, 1)  # the "reference" lifts the second half
        return output


class StubEncoder(nn.Module):
    def forward(self, guidance, frame_chunk=None):
        pooled = nn.functional.avg_pool3d(guidance, (1, 8, 8))  # (B, 3, F, h, w)
        return torch.cat([pooled, pooled[:, :1]], dim=1)


class StubFusion:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, reference_latents, encoder_hidden_states) -> None:
        self.calls.append(f"write{tuple(reference_latents.shape)}")

    def clear(self) -> None:
        self.calls.append("clear")

    def detach(self) -> None:
        self.calls.append("detach")


def stub_pipeline(monkeypatch) -> tuple[GenerationPipeline, StubFusion]:
    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY_VAE)
    fusion = StubFusion()
    encoders = {"depth": StubEncoder(), "normal": StubEncoder()}
    pipe = GenerationPipeline(vae, nn.Identity(), StubUNet(), encoders, torch.randn(1, 77, 8))

    def make_fusion(config, dtype):
        fusion.uncond_first_half = config.do_classifier_free_guidance
        return fusion

    monkeypatch.setattr(pipe, "_reference_fusion", make_fusion)
    return pipe, fusion


def random_inputs(num_frames: int, height: int = 16, width: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    guidance = {name: rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
                for name in ("depth", "normal")}
    return reference, guidance


@torch.no_grad()
def manual_ddim(pipe: GenerationPipeline, guidance: dict, config: GenerationConfig) -> torch.Tensor:
    """The official loop written out: windows averaged, CFG, and DDIM with alpha_prev at t - 1000 // steps."""
    num_frames, height, width = guidance["depth"].shape[:3]
    latents = torch.randn((1, 4, num_frames, height // 8, width // 8), generator=torch.Generator().manual_seed(42))
    maps = [torch.from_numpy(video).float().div(255).permute(3, 0, 1, 2)[None] for video in guidance.values()]
    features = sum(StubEncoder()(video) for video in maps)
    alphas = make_scheduler().alphas_cumprod
    timesteps = [999 - round(i * 1000 / config.steps) for i in range(config.steps)]
    windows = [list(w.frames) for w in context_windows(num_frames, config.context_frames, config.context_overlap)]
    for t in timesteps:
        total, count = torch.zeros(2, *latents.shape[1:]), torch.zeros(1, 1, num_frames, 1, 1)
        for frames in windows:
            total[:, :, frames] += pipe.denoising_unet(latents[:, :, frames].repeat(2, 1, 1, 1, 1), t,
                                                       pipe.text_embeddings.repeat(2, 1, 1),
                                                       features[:, :, frames].repeat(2, 1, 1, 1, 1))
            count[:, :, frames] += 1
        uncond, cond = (total / count).chunk(2)
        v = uncond + config.guidance_scale * (cond - uncond)
        alpha, prev = alphas[t], t - 1000 // config.steps
        alpha_prev = alphas[prev] if prev >= 0 else torch.tensor(1.0)
        x0 = alpha.sqrt() * latents - (1 - alpha).sqrt() * v
        eps = alpha.sqrt() * v + (1 - alpha).sqrt() * latents
        latents = alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * eps
    return latents


@pytest.mark.parametrize("steps", [3, 4])
def test_loop_matches_written_out_ddim_cfg(monkeypatch, steps: int) -> None:
    pipe, fusion = stub_pipeline(monkeypatch)
    reference, guidance = random_inputs(14)
    config = GenerationConfig(steps=steps, context_frames=6, show_progress=False, guidance_chunk=5)
    seen = []
    latents = pipe.generate_latents(reference, guidance, config,
                                    callback_on_window=lambda s, w, window, out: seen.append((s, window.frames)))
    expected = manual_ddim(pipe, guidance, config)
    assert rel_l2(latents, expected) < 1e-6
    assert fusion.calls == ["write(2, 4, 2, 3)", "clear", "detach"] and fusion.uncond_first_half
    assert seen[:3] == [(0, tuple(range(6))), (0, tuple(range(5, 11))), (0, (10, 11, 12, 13, 0, 1))]
    assert len(seen) == 3 * steps


def test_guidance_loader_and_cache_give_the_same_latents(monkeypatch) -> None:
    pipe, _ = stub_pipeline(monkeypatch)
    reference, guidance = random_inputs(9)
    uncached = GenerationConfig(steps=2, context_frames=4, show_progress=False, guidance_cache_mb=0)
    from_arrays = pipe.generate_latents(reference, guidance, uncached)
    reads = []

    def loader_for(video):
        def load(start, stop):
            reads.append((start, stop))
            return video[start:stop]
        return load

    loaders = {name: loader_for(video) for name, video in guidance.items()}
    from_loaders = pipe.generate_latents(reference, loaders, uncached, num_frames=9)
    torch.testing.assert_close(from_loaders, from_arrays, rtol=0, atol=0)
    assert max(stop - start for start, stop in reads) <= 4  # never the whole video at once
    windows = context_windows(9, 4)
    assert sum(stop - start for start, stop in reads) == 2 * 2 * sum(len(w.frames) for w in windows) + 1  # + probe
    # The default keeps every frame's features (in the network dtype: the same numbers), each frame read once.
    reads.clear()
    from_cache = pipe.generate_latents(reference, loaders, GenerationConfig(steps=2, context_frames=4,
                                                                              show_progress=False), num_frames=9)
    torch.testing.assert_close(from_cache, from_arrays, rtol=1e-6, atol=1e-6)
    assert sum(stop - start for start, stop in reads) == 2 * 9 + 1  # each frame once per map (+ the size probe)
    # A budget of two frames' features (4 channels x 2 x 3 x fp32 = 96 bytes each): the rest is read again.
    reads.clear()
    budget = GenerationConfig(steps=2, context_frames=4, show_progress=False, guidance_cache_mb=200 / 2 ** 20)
    torch.testing.assert_close(pipe.generate_latents(reference, loaders, budget, num_frames=9), from_arrays,
                               rtol=1e-6, atol=1e-6)
    # Windows (0-3), (3-6), (6, 7, 8, 0); frames 0 and 1 kept: step 1 reads 12 - 1 frames, step 2 12 - 3, per map.
    assert [w.frames for w in windows] == [(0, 1, 2, 3), (3, 4, 5, 6), (6, 7, 8, 0)]
    assert sum(stop - start for start, stop in reads) == 2 * (11 + 9) + 1


def test_no_cfg_runs_batch_one(monkeypatch) -> None:
    pipe, fusion = stub_pipeline(monkeypatch)
    reference, guidance = random_inputs(5)
    batches = []
    config = GenerationConfig(steps=2, guidance_scale=1.0, show_progress=False)
    pipe.generate_latents(reference, guidance, config,
                          callback_on_window=lambda s, w, window, out: batches.append(out.shape[0]))
    assert batches == [1, 1] and fusion.calls[0] == "write(1, 4, 2, 3)" and not fusion.uncond_first_half


def test_same_seed_same_video_and_open_loop(monkeypatch) -> None:
    pipe, _ = stub_pipeline(monkeypatch)
    reference, guidance = random_inputs(11)
    config = GenerationConfig(steps=2, context_frames=4, context_mode="open_loop", context_overlap=2,
                              show_progress=False, decode_chunk=3)
    first, second = pipe(reference, guidance, config), pipe(reference, guidance, config)
    assert first.shape == (11, 16, 24, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    other_seed = pipe(reference, guidance, GenerationConfig(steps=2, context_frames=4, seed=7, show_progress=False))
    assert not np.array_equal(first, other_seed)


def test_bad_guidance_is_refused(monkeypatch) -> None:
    pipe, _ = stub_pipeline(monkeypatch)
    reference, guidance = random_inputs(5)
    config = GenerationConfig(steps=1, show_progress=False)
    with pytest.raises(InputError, match="same number of frames"):
        pipe(reference, {**guidance, "normal": guidance["normal"][:4]}, config)
    with pytest.raises(InputError, match="missing"):
        pipe(reference, {"depth": guidance["depth"]}, config)
    with pytest.raises(InputError, match="multiples of 8"):
        pipe(reference, {name: video[:, :12] for name, video in guidance.items()}, config)
    with pytest.raises(InputError, match="uint8"):
        pipe(reference, {name: video.astype(np.float32) for name, video in guidance.items()}, config)
    with pytest.raises(InputError, match="num_frames"):
        GuidanceVideos({"depth": lambda start, stop: guidance["depth"][start:stop]})


# --- the official pipeline's compatibility vectors (README section 4(d)) ------------------------------------------


def load_official_pipeline() -> dict:
    torch.set_num_threads(1)
    return official_vectors.load_official_pipeline(VECTORS)


@pytest.fixture(scope="module")
def official_pipeline() -> dict:
    if not VECTORS.is_dir():
        pytest.skip("official-tiny vectors not available")
    return load_official_pipeline()


@pytest.fixture(scope="module")
def official_run(official_pipeline: dict) -> dict:
    """The vectors' pipeline call (128x64, 14 frames, 3 steps, CFG 3.5, eta 0, seed 42), every intermediate kept."""
    return official_vectors.run_official_call(official_pipeline)


# torch.randn's uniform draws are exact, but its Box-Muller log / cos run in the CPU's SIMD kernels
# (ATEN_CPU_CAPABILITY=default vs avx2 here: up to 1.5e-6 apart, 3 float32 ulps at |z| = 4); a wrong seed, generator
# or shape moves the draws by O(1).
NOISE_ATOL = 1e-5
# The scheduler's float32 cumprod over 1000 steps and the zero-terminal-SNR sqrt / rescale: the stored table is within
# 4.2e-7 of the float64 schedule, another CPU's kernels moved it by 3e-7; the next timestep's value differs by > 1.4e-6
# everywhere below t = 990 (scaled_linear betas or no rescale: by > 1e-3).
ALPHAS_CUMPROD_ATOL = 1e-6


@needs_vectors
def test_inputs_are_prepared_as_official(official_pipeline: dict) -> None:
    pipe, inputs = official_pipeline["pipe"], official_pipeline["inputs"]
    noise = pipe.prepare_latents(14, 64, 128, seed=42)
    torch.testing.assert_close(noise, inputs["noise_latents"], rtol=0, atol=NOISE_ATOL)
    # Exact: u8 / 255, * 2 and - 1 are single IEEE-754 operations, correctly rounded on every CPU.
    pixels = torch.from_numpy(official_pipeline["reference_image"]).float() / 255.0
    assert torch.equal((pixels * 2.0 - 1.0).permute(2, 0, 1)[None], inputs["ref_image"])
    for name, video in official_pipeline["guidance"].items():
        assert torch.equal(torch.from_numpy(video).float().div(255.0).permute(3, 0, 1, 2)[None],
                           inputs[f"guidance_{name}"])
    pipe.scheduler.set_timesteps(3)
    expected = official_pipeline["expected"]
    assert torch.equal(pipe.scheduler.timesteps, expected["scheduler_timesteps"])  # integers
    alphas_cumprod = pipe.scheduler.alphas_cumprod
    torch.testing.assert_close(alphas_cumprod, expected["scheduler_alphas_cumprod"], rtol=0, atol=ALPHAS_CUMPROD_ATOL)
    assert alphas_cumprod[-1] == 0  # zero terminal SNR, exactly: the rescale subtracts the last sqrt from itself


TOLERANCES = official_vectors.TOLERANCES


@needs_vectors
@pytest.mark.parametrize("key", [f"step{s}_window{w}_unet_out" for s in range(3) for w in range(2)]
                         + [f"step{s}_{name}" for s in range(3) for name in ("v_cfg", "latents_out")]
                         + ["final_latents", "video"])
def test_matches_official_pipeline(official_run: dict, official_pipeline: dict, key: str) -> None:
    expected = official_pipeline["expected"][key]
    actual = official_run[key]
    assert actual.shape == expected.shape
    tolerance = next(value for suffix, value in TOLERANCES.items() if key.endswith(suffix))
    if key == "step0_window0_unet_out":
        tolerance = 3e-5  # tight enough to require the official fp16 rounding of the reference banks
    assert rel_l2(actual, expected) < tolerance


@needs_vectors
def test_uint8_video_is_the_rounded_official_video(official_run: dict, official_pipeline: dict) -> None:
    frames = np.concatenate(list(official_pipeline["pipe"].iter_video(official_run["final_latents"], chunk=5)))
    expected = (official_pipeline["expected"]["video"][0].permute(1, 2, 3, 0) * 255).round().numpy()
    assert frames.shape == (14, 64, 128, 3) and frames.dtype == np.uint8
    difference = np.abs(frames.astype(np.float64) - expected)
    assert difference.max() <= 1 and difference.mean() < 0.01


@needs_vectors
def test_official_models_same_seed_same_video_and_variants(official_pipeline: dict) -> None:
    pipe, reference = official_pipeline["pipe"], official_pipeline["reference_image"]
    guidance = {name: video[:7] for name, video in official_pipeline["guidance"].items()}
    config = GenerationConfig(steps=1, context_frames=4, context_mode="open_loop", context_overlap=2,
                              show_progress=False)
    first, second = pipe(reference, guidance, config), pipe(reference, guidance, config)
    assert first.shape == (7, 64, 128, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    config = GenerationConfig(steps=1, context_frames=4, reference_fusion="add", show_progress=False)
    added = pipe(reference, guidance, config)
    concatenated = pipe(reference, guidance, GenerationConfig(steps=1, context_frames=4, show_progress=False))
    assert np.abs(added.astype(int) - concatenated).mean() > 0.5  # the fusion mode matters
    assert np.abs(first.astype(int) - concatenated).mean() > 0.5  # so do the windows


@needs_vectors
def test_bf16_networks_with_fp32_latents(official_pipeline: dict) -> None:
    own = load_official_pipeline()  # casting the shared fp32 models down and back would lose precision
    dtypes = []
    latents = own["pipe"].generate_latents(
        own["reference_image"], own["guidance"], GenerationConfig(steps=3, dtype="bf16", show_progress=False),
        callback_on_step_end=lambda step, timestep, tensors: dtypes.append(tensors["latents"].dtype))
    assert own["pipe"].denoising_unet.dtype == torch.bfloat16 and dtypes == [torch.float32] * 3
    assert rel_l2(latents, official_pipeline["expected"]["final_latents"]) < 0.15  # measured: 0.05


def test_official_window_sum_without_cfg(monkeypatch) -> None:
    """Without CFG the official pipeline sums overlapping windows (frames in two windows get twice the velocity);
    ours averages unless --official-window-sum."""
    pipe, _ = stub_pipeline(monkeypatch)
    reference, guidance = random_inputs(10)
    results = {}
    for summed in (False, True):
        outputs, velocities = [], []
        config = GenerationConfig(steps=1, guidance_scale=1.0, context_frames=4, show_progress=False,
                                  official_window_sum=summed)
        pipe.generate_latents(reference, guidance, config,
                              callback_on_window=lambda s, w, window, out, kept=outputs: kept.append(
                                  (window.frames, out)),
                              callback_on_step_end=lambda s, t, tensors, kept=velocities: kept.append(
                                  tensors["velocity"]))
        total, count = torch.zeros_like(velocities[0]), torch.zeros(10)
        for frames, out in outputs:
            total[:, :, list(frames)] += out
            count[list(frames)] += 1
        assert count.max() == 2  # some frames are in two windows
        expected = total if summed else total / count.view(1, 1, -1, 1, 1)
        torch.testing.assert_close(velocities[0], expected, rtol=1e-6, atol=1e-6)
        results[summed] = velocities[0]
    shared = (count == 2).nonzero().flatten().tolist()
    assert not torch.allclose(results[True][:, :, shared], results[False][:, :, shared])


def test_noise_device(monkeypatch) -> None:
    from magicportrait.errors import InputError
    from magicportrait.models.generation import _noise_device

    assert _noise_device(GenerationConfig()) == "cpu"  # auto: the latents' device
    assert _noise_device(GenerationConfig(noise_device="cpu")) == "cpu"
    pipe, _ = stub_pipeline(monkeypatch)
    first = pipe.prepare_latents(3, 16, 24, seed=7, device="cpu")
    torch.testing.assert_close(first, torch.randn(first.shape, generator=torch.Generator().manual_seed(7)))
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="--noise-device cuda needs a CUDA GPU"):
            GenerationConfig(noise_device="cuda")
