"""The diffusion generator (issue 4): seconds per output frame, peak memory, and each optimisation's effect.

    python benchmarks/bench_generation.py                       # CPU, fp32 (about 30 minutes on 2 cores)
    python benchmarks/bench_generation.py --device cuda --dtype fp16 --frames 300
    python benchmarks/bench_generation.py --quick               # tiny models, a smoke check (seconds)

Two parts, every measurement in a fresh subprocess so that its peak memory (VmHWM, and on a GPU
``torch.cuda.max_memory_allocated``) is its own:

1. Full size: the SD-1.5-size denoising UNet (with the official AnimateDiff-v2 motion modules), reference UNet, three
   guidance encoders and SD VAE, random weights, 512x512, classifier-free guidance 3.5. It times the reference pass,
   each measured denoising step and the decode, and reports seconds per output frame for 20 steps as
   ``(setup + reference + 20 steps + decode) / frames``; steps past the measured ones are extrapolated from the
   measured steps after the first (the first includes one-time warm-up and is counted once).
2. Ratios, on a reduced-width model with the same structure, several context windows, a few steps: each optimisation
   against a benchmark-only variant without it, measured in the same run (loop time = everything from the call to the
   final latents: portrait encoding, reference pass, denoising steps; the decode is timed apart; each variant runs
   three times, in rounds of alternating order, and its fastest run counts; peak memory is the median of its runs):

   - the reference UNet once per video (the product) vs once per window per step;
   - classifier-free guidance as one batch-2 UNet call vs two batch-1 calls (unconditional without the reference,
     conditional with it);
   - PyTorch SDPA attention (diffusers' ``AttnProcessor2_0``, the default) vs diffusers' classic ``AttnProcessor``,
     on every attention of both UNets and the guidance encoders, the reference fusion's included;
   - guidance features kept between steps within a budget (the default) vs every frame's features encoded up front
     and held (the official pipeline's approach), and vs re-encoded at every step (``--guidance-cache-mb 0``);
   - feed-forward layers in chunks of rows (the CPU default) vs whole;
   - peak memory for 4x as many frames as the others (memory flat in video length).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from magicportrait.models.release import SD15_UNET_CONFIG

ROOT = Path(__file__).resolve().parents[1]
CHILD_MARKER = "BENCH_GENERATION_RESULT "
TOTAL_STEPS = 20
GUIDANCE_SCALE = 3.5
CONTEXT_FRAMES = 12
GUIDANCE_MAPS = ("depth", "normal", "render")

SD15_VAE_CONFIG: dict = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "norm_num_groups": 32, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "sample_size": 512,
}
"""The SD-1.5 VAE (sd-vae-ft-mse) layout."""

REDUCED_WIDTHS = [64, 128, 256, 256]
REDUCED_UNET_CONFIG: dict = {**SD15_UNET_CONFIG, "block_out_channels": REDUCED_WIDTHS, "cross_attention_dim": 64}
"""SD 1.5's structure (blocks, layers, heads, motion modules) at a fifth of its widths, for the ratios."""
REDUCED_VAE_CONFIG: dict = {**SD15_VAE_CONFIG, "block_out_channels": [32, 64, 128, 128], "layers_per_block": 1}


def model_specs() -> dict[str, dict]:
    """Per model size: UNet config, VAE config, guidance-encoder arguments, text-embedding width."""
    from magicportrait.models.release import OFFICIAL_GUIDANCE_ENCODER
    from magicportrait.models.tiny import TINY_GUIDANCE_ENCODER, TINY_TEXT_WIDTH, TINY_UNET_CONFIG, TINY_VAE_CONFIG

    official_encoder = {**OFFICIAL_GUIDANCE_ENCODER, "block_out_channels": list(OFFICIAL_GUIDANCE_ENCODER[
        "block_out_channels"])}
    return {
        "sd15": {"unet": SD15_UNET_CONFIG, "vae": SD15_VAE_CONFIG, "encoder": official_encoder, "text_width": 768},
        "reduced": {"unet": REDUCED_UNET_CONFIG, "vae": REDUCED_VAE_CONFIG,
                    "encoder": {**official_encoder, "guidance_embedding_channels": REDUCED_WIDTHS[0]},
                    "text_width": REDUCED_UNET_CONFIG["cross_attention_dim"]},
        "tiny": {"unet": TINY_UNET_CONFIG, "vae": TINY_VAE_CONFIG, "encoder": TINY_GUIDANCE_ENCODER,
                 "text_width": TINY_TEXT_WIDTH},
    }


# --- benchmark-only variants of the pipeline -------------------------------------------------------------------------


def pipeline_classes() -> dict[str, type]:
    """Variant name -> pipeline class. Built lazily so that importing this module does not import diffusers."""
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    from magicportrait.models.generation import GenerationPipeline

    class ReferencePerWindow(GenerationPipeline):
        """Runs the reference UNet before every window of every step instead of once per video."""

        def _reference_fusion(self, config, dtype):
            fusion = super()._reference_fusion(config, dtype)
            write = fusion.write
            self._reference_inputs = None

            def remember(latents: torch.Tensor, text: torch.Tensor) -> None:
                self._reference_inputs = (latents, text)  # written before each UNet call instead

            fusion.write = remember
            self._write_reference = write
            return fusion

        def generate_latents(self, *args, **kwargs):
            def before_unet(module: torch.nn.Module, inputs: tuple) -> None:
                self._write_reference(*self._reference_inputs)

            handle = self.denoising_unet.register_forward_pre_hook(before_unet)
            try:
                return super().generate_latents(*args, **kwargs)
            finally:
                handle.remove()

    class TwoPassGuidance(GenerationPipeline):
        """Classifier-free guidance as two batch-1 UNet calls per window: unconditional (no reference), then
        conditional (with it), instead of one batch-2 call."""

        def _reference_fusion(self, config, dtype):
            fusion = super()._reference_fusion(config, dtype)
            fusion.uncond_first_half = False  # each call is a single half
            self._fusion = fusion
            return fusion

        def _predict_velocity(self, latents, timestep, windows, features, text, config, step_index, callback,
                              progress):
            if not config.do_classifier_free_guidance:
                return super()._predict_velocity(latents, timestep, windows, features, text, config, step_index,
                                                 callback, progress)
            readers = self._fusion.readers
            banks = {path: reader.bank for path, reader in readers.items()}
            blended = torch.zeros((2, *latents.shape[1:]), device=latents.device, dtype=torch.float32)
            try:
                for window_index, window in enumerate(windows):
                    frames = list(window.frames)
                    sample = latents[:, :, frames].to(config.torch_dtype)
                    guidance = features(frames)
                    outputs = []
                    for conditional in (False, True):
                        for path, reader in readers.items():  # the batch-2 banks' conditional half, or none
                            reader.bank = banks[path][1:] if conditional else None
                        outputs.append(self.denoising_unet(sample, timestep, encoder_hidden_states=text[:1],
                                                           guidance_features=guidance).float())
                    output = torch.cat(outputs)
                    if callback is not None:
                        callback(step_index, window_index, window, output)
                    blended[:, :, frames] += output * window.weights.to(latents.device).view(1, 1, -1, 1, 1)
                    progress.update()
            finally:
                for path, reader in readers.items():
                    reader.bank = banks[path]
            unconditional, conditional = blended.chunk(2)
            return unconditional + config.guidance_scale * (conditional - unconditional)

    class ClassicAttention(GenerationPipeline):
        """diffusers' classic ``AttnProcessor`` (explicit score matrix) instead of SDPA, everywhere."""

        replaced = 0

        def to(self, device, dtype, offload=False):
            super().to(device, dtype, offload)
            for network in (self.reference_unet, self.denoising_unet, *self.guidance_encoders.values()):
                for module in network.modules():
                    if isinstance(module, Attention) and isinstance(module.processor, AttnProcessor2_0):
                        module.set_processor(AttnProcessor())
                        ClassicAttention.replaced += 1
            return self

        def _reference_fusion(self, config, dtype):
            fusion = super()._reference_fusion(config, dtype)
            # The fusion's writer / reader processors compute their attention with an inner AttnProcessor2_0.
            for processor in (*fusion.writers.values(), *fusion.readers.values()):
                processor.attention = AttnProcessor()
                ClassicAttention.replaced += 1
            return fusion

    class ChannelsLast(GenerationPipeline):
        """The denoising UNet's weights in channels-last memory format (NHWC convolution kernels)."""

        def to(self, device, dtype, offload=False):
            super().to(device, dtype, offload)
            self.denoising_unet.to(memory_format=torch.channels_last)
            return self

    classes = {"default": GenerationPipeline, "reference_per_window": ReferencePerWindow,
               "two_pass_cfg": TwoPassGuidance, "classic_attention": ClassicAttention, "channels_last": ChannelsLast}
    return {variant: classes.get(variant, GenerationPipeline) for variant in VARIANTS}


VARIANTS = ("default", "reference_per_window", "two_pass_cfg", "classic_attention", "channels_last",
            "upfront_guidance", "no_guidance_cache", "whole_feed_forward", "vae_tile", "offload", "compiled",
            "sdpa_math", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn")
VARIANT_OPTIONS: dict[str, dict] = {
    "no_guidance_cache": {"guidance_cache_mb": 0}, "whole_feed_forward": {"feed_forward_chunk": 0},
    "vae_tile": {"vae_tile": 256}, "offload": {"offload": True}, "compiled": {"compile": True},
}
"""GenerationConfig options of the variants that are product options (the others are benchmark-only code)."""
SDPA_BACKENDS = {"sdpa_math": "MATH", "sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION",
                 "sdpa_cudnn": "CUDNN_ATTENTION"}


def sdpa_backend(variant: str) -> contextlib.AbstractContextManager:
    """Within the block, PyTorch's SDPA uses only the variant's backend (the default lets PyTorch choose)."""
    if variant not in SDPA_BACKENDS:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[variant])])


HELD_GUIDANCE: dict[str, int] = {}


@contextlib.contextmanager
def upfront_guidance_features() -> Iterator[None]:
    """Within the block the pipeline encodes every frame's guidance maps before the denoising loop (each map read
    whole, as the official pipeline reads it, and encoded in chunks of ``guidance_chunk`` frames) and holds the
    summed features on the device for the whole loop."""
    from magicportrait.models import generation

    class UpfrontGuidanceFeatures(generation.GuidanceFeatures):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.held = self._encode(range(self.videos.num_frames))
            HELD_GUIDANCE["bytes"] = self.held.numel() * self.held.element_size()

        def __call__(self, frames):
            return self.held[:, :, list(frames)]

    original = generation.GuidanceFeatures
    generation.GuidanceFeatures = UpfrontGuidanceFeatures
    try:
        yield
    finally:
        generation.GuidanceFeatures = original


# --- one measurement (runs in a subprocess) --------------------------------------------------------------------------


def build_pipeline(model: str, variant: str, seed: int = 0, device: str = "cpu"):
    from diffusers import AutoencoderKL

    from magicportrait.models.guidance_encoder import GuidanceEncoder
    from magicportrait.models.reference_unet import ReferenceUNet2DConditionModel
    from magicportrait.models.release import OFFICIAL_MOTION_MODULE_KWARGS
    from magicportrait.models.unet_3d import UNet3DConditionModel

    spec = model_specs()[model]
    torch.manual_seed(seed)  # default initialisation, drawn reproducibly
    with torch.device(device):  # initialised where they run (an SD-size UNet's init on a CPU takes long)
        denoising = UNet3DConditionModel.from_unet2d_config(dict(spec["unet"]),
                                                            motion_module_kwargs=dict(OFFICIAL_MOTION_MODULE_KWARGS))
        reference = ReferenceUNet2DConditionModel.from_unet2d_config(dict(spec["unet"]))
        encoders = {name: GuidanceEncoder(**spec["encoder"]) for name in GUIDANCE_MAPS}
        vae = AutoencoderKL(**spec["vae"])
        text = torch.randn(1, 77, spec["text_width"])
    for network in (denoising, reference, vae, *encoders.values()):
        network.eval().requires_grad_(False)
    return pipeline_classes()[variant](vae, reference, denoising, encoders, text)


def synthetic_loader(size: int, seed: int):
    """``loader(start, stop)``: deterministic uint8 guidance frames made on demand (nothing held per frame)."""
    base = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)

    def loader(start: int, stop: int) -> np.ndarray:
        return np.stack([np.roll(base, 3 * index, axis=1) for index in range(start, stop)])

    return loader


def peak_rss_mib() -> float:
    """VmHWM: the peak resident size of this process."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024.0


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """perf_counter that first waits for the GPU, so that times cover the queued work."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


class CallTimer:
    """Counts a module's forward calls and sums their seconds (forward pre-hook + hook)."""

    def __init__(self, modules: list[torch.nn.Module], clock: Clock) -> None:
        self.clock, self.calls, self.seconds, self.first_start = clock, 0, 0.0, None
        self._start = 0.0
        self.handles = []
        for module in modules:
            self.handles.append(module.register_forward_pre_hook(self._before))
            self.handles.append(module.register_forward_hook(self._after))

    def _before(self, module: torch.nn.Module, inputs: tuple) -> None:
        self._start = self.clock()
        if self.first_start is None:
            self.first_start = self._start

    def _after(self, module: torch.nn.Module, inputs: tuple, output: object) -> None:
        self.calls += 1
        self.seconds += self.clock() - self._start

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def measure(spec: dict) -> dict:
    """One generation run as ``spec`` describes it; returns its times and peak memory."""
    from magicportrait.models.context import context_windows
    from magicportrait.models.generation import GenerationConfig

    torch.set_num_threads(spec["threads"])
    HELD_GUIDANCE.clear()
    device = torch.device(spec["device"])
    clock = Clock(device)
    start = clock()
    pipeline = build_pipeline(spec["model"], spec["variant"], device=spec["device"])
    config = GenerationConfig(steps=spec["steps"], guidance_scale=GUIDANCE_SCALE, context_frames=CONTEXT_FRAMES,
                              dtype=spec["dtype"], device=spec["device"], show_progress=False,
                              **VARIANT_OPTIONS.get(spec["variant"], {}))
    pipeline.to(device, config.torch_dtype, config.offload)
    build_seconds = clock() - start
    if clock.cuda:
        torch.cuda.reset_peak_memory_stats()
    reference_timer = CallTimer([pipeline.reference_unet], clock)
    guidance_timer = CallTimer(list(pipeline.guidance_encoders.values()), clock)
    unet_timer = CallTimer([pipeline.denoising_unet], clock)
    size, num_frames = spec["size"], spec["frames"]
    guidance = {name: synthetic_loader(size, index) for index, name in enumerate(pipeline.guidance_encoders)}
    portrait = np.random.default_rng(7).integers(0, 256, (size, size, 3), dtype=np.uint8)
    step_ends: list[float] = []
    upfront = upfront_guidance_features() if spec["variant"] == "upfront_guidance" else contextlib.nullcontext()
    with upfront, sdpa_backend(spec["variant"]):
        cpu_start = process_cpu_seconds()
        loop_start = clock()
        latents = pipeline.generate_latents(portrait, guidance, config, num_frames=num_frames,
                                            callback_on_step_end=lambda *_: step_ends.append(clock()))
        loop_end = clock()
        loop_cpu = process_cpu_seconds() - cpu_start
    for timer in (reference_timer, guidance_timer, unet_timer):
        timer.remove()
    decoded = 0
    for frames in pipeline.iter_video(latents, config.decode_chunk, config):  # streamed, as to a video writer
        decoded += len(frames)
    decode_seconds = clock() - loop_end
    reference_end = reference_timer.first_start + reference_timer.seconds if reference_timer.calls == 1 else None
    step_starts = [reference_end if reference_end is not None else loop_start, *step_ends[:-1]]
    result = {
        **spec,
        "windows": len(context_windows(num_frames, CONTEXT_FRAMES)),
        "build_seconds": build_seconds,
        "setup_seconds": (reference_timer.first_start or loop_start) - loop_start,
        "reference_seconds": reference_timer.seconds,
        "reference_calls": reference_timer.calls,
        "step_seconds": [end - begin for begin, end in zip(step_starts, step_ends, strict=True)],
        "guidance_seconds": guidance_timer.seconds,
        "guidance_calls": guidance_timer.calls,
        "unet_seconds": unet_timer.seconds,
        "unet_calls": unet_timer.calls,
        "loop_seconds": loop_end - loop_start,
        # CPU seconds per wall second per thread during the loop: well below 1 on a CPU run means it was starved.
        "loop_cpu_utilisation": loop_cpu / ((loop_end - loop_start) * spec["threads"]),
        "decode_seconds": decode_seconds,
        "decoded_frames": decoded,
        "finite": bool(torch.isfinite(latents).all()),
        "parameters_millions": {
            "denoising_unet": sum(p.numel() for p in pipeline.denoising_unet.parameters()) / 1e6,
            "reference_unet": sum(p.numel() for p in pipeline.reference_unet.parameters()) / 1e6,
            "guidance_encoders": sum(p.numel() for e in pipeline.guidance_encoders.values()
                                     for p in e.parameters()) / 1e6,
            "vae": sum(p.numel() for p in pipeline.vae.parameters()) / 1e6,
        },
        "peak_rss_mib": peak_rss_mib(),
    }
    if spec["variant"] == "classic_attention":
        result["classic_processors"] = type(pipeline).replaced
    if "bytes" in HELD_GUIDANCE:
        result["held_guidance_mib"] = HELD_GUIDANCE["bytes"] / 2**20
    if clock.cuda:
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["peak_gpu_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return result


def run_child(spec: dict, isolated: bool = True) -> dict:
    """``measure(spec)`` in a fresh subprocess (its own peak RSS), or in this process when not ``isolated``."""
    if not isolated:
        return {**measure(spec), "peak_rss_isolated": False}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{spec}: {result.stderr[-3000:]}")
    line = next(line for line in result.stdout.splitlines()[::-1] if line.startswith(CHILD_MARKER))
    return {**json.loads(line[len(CHILD_MARKER):]), "peak_rss_isolated": True}


# --- the two parts ---------------------------------------------------------------------------------------------------


def seconds_per_frame(child: dict, total_steps: int = TOTAL_STEPS) -> dict:
    """Per-video seconds for ``total_steps`` steps from the measured ones; the first measured step (warm-up) counts
    once, the others give the per-step time of the remaining steps."""
    steps = child["step_seconds"]
    per_step = float(np.mean(steps[1:])) if len(steps) > 1 else steps[0]
    measured = min(len(steps), total_steps)
    step_total = sum(steps[:measured]) + (total_steps - measured) * per_step
    total = child["setup_seconds"] + child["reference_seconds"] + step_total + child["decode_seconds"]
    frames = child["frames"]
    return {"steps": total_steps, "measured_steps": len(steps), "extrapolated": len(steps) < total_steps,
            "seconds_per_step": per_step, "first_step_seconds": steps[0],
            "guidance_seconds_per_step": child["guidance_seconds"] / max(len(steps), 1),
            "decode_seconds_per_frame": child["decode_seconds"] / frames,
            "video_seconds": total, "seconds_per_frame": total / frames, "frames_per_second": frames / total}


def peak_of(child: dict) -> float:
    """The peak memory a run is judged by: the GPU's when it ran on one, else the process's RSS."""
    return child.get("peak_gpu_mib", child["peak_rss_mib"])


def full_size(device: str, dtype: str, frames: int, steps: int, threads: int, quick: bool) -> dict:
    model = "tiny" if quick else "sd15"
    spec = {"model": model, "variant": "default", "device": device, "dtype": dtype, "size": 64 if quick else 512,
            "frames": frames, "steps": steps, "threads": threads}
    child = run_child(spec, isolated=not quick)
    return {**child, **seconds_per_frame(child)}


def repeated(base: dict, variants: tuple[str, ...], repeats: int, isolated: bool) -> dict[str, dict]:
    """Each variant ``repeats`` times, in rounds of alternating order (so that drift of the machine's speed hits
    every variant alike); keeps each variant's fastest run, with the median peak memory of its runs."""
    samples: dict[str, list[dict]] = {variant: [] for variant in variants}
    for round_index in range(repeats):
        for variant in variants if round_index % 2 == 0 else variants[::-1]:
            samples[variant].append(run_child({**base, "variant": variant}, isolated=isolated))
    runs = {}
    for variant, results in samples.items():
        fastest = dict(min(results, key=lambda result: result["loop_seconds"]))
        fastest["loop_seconds_repeats"] = [result["loop_seconds"] for result in results]
        for key in ("peak_rss_mib", "peak_gpu_mib"):
            if key in fastest:
                fastest[f"{key}_repeats"] = [result[key] for result in results]
                fastest[key] = float(np.median(fastest[f"{key}_repeats"]))
        runs[variant] = fastest
    return runs


def ratios(device: str, dtype: str, frames: int, steps: int, threads: int, quick: bool) -> dict:
    """Each optimisation against its benchmark-only baseline, on the reduced model (tiny with ``quick``)."""
    size = 64 if quick else (512 if device == "cuda" else 256)
    model = "tiny" if quick else "reduced"
    base = {"model": model, "device": device, "dtype": dtype, "size": size, "frames": frames, "steps": steps,
            "threads": threads}
    variants = ("default", "reference_per_window", "two_pass_cfg", "classic_attention", "upfront_guidance",
                "no_guidance_cache", "whole_feed_forward")
    repeats = 1 if quick else 3
    runs = repeated(base, variants, repeats, isolated=not quick)
    long = repeated({**base, "frames": 4 * frames}, ("default", "upfront_guidance"), 1 if quick else 2,
                    isolated=not quick)
    ours = runs["default"]

    def time_ratio(baseline: str) -> float:
        return runs[baseline]["loop_seconds"] / ours["loop_seconds"]

    def memory_ratio(baseline: str) -> float:
        return peak_of(runs[baseline]) / peak_of(ours)

    return {
        "model": model, "widths": list(model_specs()[model]["unet"]["block_out_channels"]), "repeats": repeats,
        "size": size, "frames": frames, "long_frames": 4 * frames, "steps": steps,
        "windows": ours["windows"], "long_windows": long["default"]["windows"],
        "runs": runs, "long_runs": long,
        "reference_once_speedup": time_ratio("reference_per_window"),
        "batched_cfg_speedup": time_ratio("two_pass_cfg"),
        "sdpa_speedup": time_ratio("classic_attention"),
        "sdpa_memory_ratio": memory_ratio("classic_attention"),
        "chunked_guidance_time_ratio": time_ratio("upfront_guidance"),
        "chunked_guidance_memory_ratio": memory_ratio("upfront_guidance"),
        "guidance_cache_speedup": time_ratio("no_guidance_cache"),
        "guidance_cache_memory_ratio": memory_ratio("no_guidance_cache"),
        "feed_forward_chunk_speedup": time_ratio("whole_feed_forward"),
        "feed_forward_chunk_memory_ratio": memory_ratio("whole_feed_forward"),
        "flatness_default": peak_of(long["default"]) / peak_of(ours),
        "flatness_upfront": peak_of(long["upfront_guidance"]) / peak_of(runs["upfront_guidance"]),
    }


def section(device: str, dtype: str, frames: int | None, quick: bool) -> dict:
    threads = torch.get_num_threads()
    if frames is None:
        frames = 3 if device == "cpu" or quick else 300
    result = {"device": device, "dtype": dtype, "threads": threads,
              "full_size": full_size(device, dtype, frames, 2, threads, quick),
              "ratios": ratios(device, dtype, 24, 2, threads, quick)}
    if not quick:  # the official pipeline's held guidance features at full size, 512x512 (arithmetic)
        width, latent = SD15_UNET_CONFIG["block_out_channels"][0], 512 // 8
        result["upfront_guidance_mib_per_frame_full_size"] = width * latent * latent * 4 / 2**20
    return result


def run(quick: bool = False, device: str | None = None, dtype: str | None = None, frames: int | None = None) -> dict:
    """The benchmark. ``device=None``: the CPU in fp32, and a CUDA GPU in fp16 too when there is one."""
    if device is not None:
        return {device: section(device, dtype or ("fp32" if device == "cpu" else "fp16"), frames, quick)}
    results = {"cpu": section("cpu", dtype or "fp32", frames, quick)}
    if torch.cuda.is_available():
        results["cuda"] = section("cuda", "fp16", None, quick)
    else:
        results["cuda"] = {"skipped": "no CUDA GPU on this machine"}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny models, in this process (a smoke check).")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="Default: the CPU, and a CUDA GPU (fp16) too when there is one.")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                        help="Network precision (default fp32 on the CPU, fp16 on a GPU).")
    parser.add_argument("--frames", type=int, default=None,
                        help="Frames of the full-size run (default 3 on the CPU, 300 on a GPU).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child is not None:
        print(CHILD_MARKER + json.dumps(measure(json.loads(arguments.child))), flush=True)
        return
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    print(json.dumps(run(arguments.quick, arguments.device, arguments.dtype, arguments.frames), indent=2,
                     default=float))


if __name__ == "__main__":
    main()
