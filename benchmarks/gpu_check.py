"""One prepared GPU check (issue 15): correctness, speed and memory of the diffusion path on a CUDA GPU, the renderer
and the geometric generator there, training steps at SD size, and the UNet's achieved TFLOP/s.

    python benchmarks/gpu_check.py                              # on a CUDA GPU: under 8 minutes on an H100
    python benchmarks/gpu_check.py --vectors PATH/official-tiny # with the official test vectors
    python benchmarks/gpu_check.py --device cpu --quick         # the CI-sized form (tiny models, seconds)

It uses the machine's own torch (never installs one). A GPU machine without network gets the project's other
dependencies as wheels downloaded beforehand: ``scripts/gpu_wheels.sh`` (see the README, "GPU check"). Its
diffusion and rendering parts do not need MediaPipe; the geometric generator's part is skipped without it.

Parts (each is recorded even when another fails; a part that would run past the time budget is skipped):
1. ``correctness``: the official-tiny vectors run on the device in fp32 (the CPU tests' tolerances), and the rel-L2
   of fp16 and bf16 against fp32 on the same call.
2. ``speed``: SD-1.5 size, random weights, 512x512, CFG 3.5: seconds per output frame for 48 frames and 20 steps
   (measured steps extrapolated, as ``bench_generation.py`` does) in fp16 and bf16; peak GPU memory
   (``max_memory_allocated`` and the driver's view) for 48 and 300 frames.
3. ``ratios``: each optimisation against its baseline in the same process, SD size, 24 frames, 2 steps: the
   reference UNet once, CFG batching, guidance caching, feed-forward chunks, SDPA backends, channels-last,
   ``--compile`` (warm-up apart), ``--offload``, VAE tiling.
4. ``flops``: the denoising UNet's FLOPs for one window (torch's FLOP counter) and the achieved TFLOP/s against the
   GPU's measured dense fp16 matmul peak.
5. ``rendering``: the guidance renderer on a FLAME-size mesh (frames/s); the geometric generator on the bundled
   example (frames/s; needs MediaPipe).
6. ``training``: stage 1 and stage 2 steps at SD size, batch 1, fp16 autocast, gradient checkpointing (s/step, peak).

Writes ``outputs/gpu-check/gpu_check.json`` (and ``$OUT/gpu_check.json`` when ``$OUT`` is set) and, on a GPU, the
GPU section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_generation as generation_bench  # noqa: E402 - benchmarks/ is not a package

ROOT = Path(__file__).resolve().parents[1]
MARKS = ("<!-- gpu-check: start -->", "<!-- gpu-check: end -->")
DEFAULT_VECTORS = ROOT.parent / "shared" / "vectors" / "official-tiny"
BUDGET_SECONDS = 450.0
MODEL_NAMES = {"sd15": "SD-1.5 size", "tiny": "tiny models", "reduced": "SD-1.5 layout at a fifth of its widths"}
PEAK_TFLOPS_NOTE = "dense fp16 matmul measured here (8192^3, best of 5)"


# --- the parts ---------------------------------------------------------------------------------------------------


def environment(device: str) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": device,
            "cuda": torch.version.cuda, "threads": torch.get_num_threads()}
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        info.update(gpu=properties.name, capability=f"{properties.major}.{properties.minor}",
                    memory_gib=properties.total_memory / 2**30, bf16=torch.cuda.is_bf16_supported())
    return info


def correctness(device: str, vectors: Path | None) -> dict:
    """The official vectors on ``device`` in fp32 (per-intermediate rel-L2 and pass/fail), fp16 / bf16 vs fp32."""
    from magicportrait.models import official_vectors

    if vectors is None or not vectors.is_dir():
        return {"skipped": f"official-tiny vectors not found ({vectors}); pass --vectors"}
    runs = {}
    for dtype in ("fp32", "fp16", "bf16"):  # fresh models each: casting down and back up would round the weights
        official = official_vectors.load_official_pipeline(vectors)
        runs[dtype] = official_vectors.run_official_call(official, device, dtype)
    report = official_vectors.compare(runs["fp32"], official["expected"])
    return {"fp32_vs_official": report, "fp32_passed": all(entry["passed"] for entry in report.values()),
            "rel_l2_vs_fp32": {dtype: {key: official_vectors.rel_l2(runs[dtype][key], runs["fp32"][key])
                                       for key in ("final_latents", "video")} for dtype in ("fp16", "bf16")}}


def speed(device: str, quick: bool) -> dict:
    """Seconds per frame (fp16, bf16) and the peak memory for 48 and 300 frames (``full_size`` children)."""
    frames, long_frames, steps = (4, 8, 2) if quick else (48, 300, 3)
    dtypes = ("fp32",) if device == "cpu" else ("fp16", "bf16")
    result = {}
    for dtype in dtypes:
        child = generation_bench.full_size(device, dtype, frames, steps, torch.get_num_threads(), quick)
        result[dtype] = _speed_summary(child)
    long = generation_bench.full_size(device, dtypes[0], long_frames, 1, torch.get_num_threads(), quick)
    result["long"] = _speed_summary(long)
    return result


def _speed_summary(child: dict) -> dict:
    keys = ("model", "size", "steps", "frames", "dtype", "seconds_per_frame", "seconds_per_step", "first_step_seconds",
            "decode_seconds_per_frame", "peak_gpu_mib", "peak_gpu_reserved_mib", "peak_rss_mib", "finite",
            "extrapolated", "measured_steps")
    return {key: child[key] for key in keys if key in child}


def ratios(device: str, quick: bool, deadline: float) -> dict:
    """Each variant once, in this process (GPU peaks are reset per run), SD size on a GPU; tiny with ``quick``."""
    model = "tiny" if quick else "sd15"
    base = {"model": model, "device": device, "dtype": "fp32" if device == "cpu" else "fp16",
            "size": 64 if quick else 512, "frames": 8 if quick else 24, "steps": 2, "threads": torch.get_num_threads()}
    order = [variant for variant in generation_bench.VARIANTS if device == "cuda" or variant not in
             ("sdpa_efficient", "sdpa_cudnn", "offload")]
    if device == "cpu":
        order.remove("compiled")  # inductor's C++ build takes minutes on a CPU; the tests cover --compile
    runs: dict[str, dict] = {}
    for variant in order:
        if time.monotonic() > deadline:
            runs[variant] = {"skipped": "time budget"}
            continue
        try:
            runs[variant] = generation_bench.run_child({**base, "variant": variant}, isolated=False)
        except Exception as error:  # a backend this GPU lacks (e.g. cuDNN attention) must not stop the others
            runs[variant] = {"error": f"{type(error).__name__}: {error}"[:500]}
    default = runs["default"]
    summary = {}
    for variant, run in runs.items():
        if "loop_seconds" in run:
            summary[variant] = {"loop_seconds": run["loop_seconds"], "decode_seconds": run["decode_seconds"],
                                "time_vs_default": run["loop_seconds"] / default["loop_seconds"],
                                "peak_mib": generation_bench.peak_of(run),
                                "memory_vs_default": generation_bench.peak_of(run) / generation_bench.peak_of(default)}
            if variant == "compiled":
                summary[variant]["first_step_seconds"] = run["step_seconds"][0]
                summary[variant]["later_step_seconds"] = run["step_seconds"][1:]
        else:
            summary[variant] = run
    return {"configuration": base, "variants": summary}


def unet_window_flops(model: str, size: int, frames: int, cfg: bool = True) -> int:
    """FLOPs of one denoising-UNet call on a window, counted by torch's FLOP counter on the meta device (shapes only,
    no memory) with attention computed by SDPA's math backend (its matmuls are counted on every device)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    pipeline = generation_bench.build_pipeline(model, "default", device="meta")
    unet = pipeline.denoising_unet
    batch, latent = (2 if cfg else 1), size // 8
    with torch.device("meta"):
        sample = torch.randn(batch, 4, frames, latent, latent)
        features = torch.randn(batch, unet.config.block_out_channels[0], frames, latent, latent)
        timestep = torch.tensor(999)
    text = pipeline.text_embeddings.expand(batch, -1, -1)
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        unet(sample, timestep, encoder_hidden_states=text, guidance_features=features)
    return int(counter.get_total_flops())


def matmul_peak_tflops(device: str, dtype: torch.dtype = torch.float16, size: int = 8192) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        began = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - began)
    return 2 * size**3 / best / 1e12


def flops(device: str, quick: bool) -> dict:
    model, size, frames = ("tiny", 64, 4) if quick else ("sd15", 512, 12)
    count = unet_window_flops(model, size, frames)
    result = {"model": model, "size": size, "window_frames": frames, "cfg_batch": 2, "unet_window_tflop": count / 1e12}
    if device != "cuda":
        return result
    pipeline = generation_bench.build_pipeline(model, "default", device=device).to(device, torch.float16)
    unet, latent = pipeline.denoising_unet, size // 8
    sample = torch.randn(2, 4, frames, latent, latent, device=device, dtype=torch.float16)
    features = torch.randn(2, unet.config.block_out_channels[0], frames, latent, latent, device=device,
                           dtype=torch.float16)
    text = pipeline.text_embeddings.to(device, torch.float16).expand(2, -1, -1)
    timings = []
    with torch.no_grad():
        for _ in range(4):
            torch.cuda.synchronize()
            began = time.perf_counter()
            unet(sample, torch.tensor(999, device=device), encoder_hidden_states=text, guidance_features=features)
            torch.cuda.synchronize()
            timings.append(time.perf_counter() - began)
    seconds = min(timings[1:])
    achieved = count / seconds / 1e12
    peak = matmul_peak_tflops(device)
    return {**result, "unet_window_seconds": seconds, "achieved_tflops": achieved, "peak_tflops": peak,
            "peak_note": PEAK_TFLOPS_NOTE, "fraction_of_peak": achieved / peak}


def rendering(device: str, quick: bool) -> dict:
    """The guidance renderer on a FLAME-size mesh, and the geometric generator when MediaPipe is installed."""
    import bench_rendering

    from magicportrait.rendering import GuidanceRenderer

    size, frames = (128, 8) if quick else (512, 120)
    vertices, faces = bench_rendering.ellipsoid_mesh(size)
    animated = torch.as_tensor(bench_rendering.animate(vertices, frames, size), dtype=torch.float32)
    renderer = GuidanceRenderer(torch.as_tensor(faces), (size, size), device=device)
    seconds = bench_rendering._time_fast(renderer, animated, batch=8)
    result = {"renderer": {"size": size, "frames": frames, "frames_per_second": frames / seconds}}
    try:
        import mediapipe  # noqa: F401 - the geometric generator tracks the portrait
    except ImportError:
        result["geometric"] = {"skipped": "MediaPipe not installed (the diffusion and rendering parts do not need it)"}
        return result
    result["geometric"] = geometric_on(device, quick)
    return result


def geometric_on(device: str, quick: bool) -> dict:
    import tempfile

    import bench_geometric

    from magicportrait.pipelines.geometric import GeometricGenerator

    with tempfile.TemporaryDirectory() as folder:
        from magicportrait.pipelines.example import example_portrait

        pipeline, driving = bench_geometric.track_example(Path(folder), 12 if quick else 120)
        prepared = bench_geometric.prepare(pipeline, example_portrait(), driving)
        generator = GeometricGenerator(pipeline.head_model, prepared.source, pipeline.config.geometric, device=device)
        parts = bench_geometric.chunks(prepared)
        began = time.perf_counter()
        bench_geometric.render_all(generator, parts)
        seconds = time.perf_counter() - began
    return {"frames": prepared.aligned.num_frames, "frames_per_second": prepared.aligned.num_frames / seconds}


def training(device: str, quick: bool) -> dict:
    """Stage 1 and stage 2 steps (SD size, batch 1, fp16 autocast, gradient checkpointing) on random weights."""
    return {f"stage{stage}": training_steps(stage, device, quick) for stage in (1, 2)}


def training_steps(stage: int, device: str, quick: bool, steps: int = 3) -> dict:
    """The official training forward (``MagicPortraitNet``) with the stage's trainable set, AdamW, gradient
    checkpointing; latents and maps random (the frozen VAE's encoding is not part of the step's cost here)."""
    from magicportrait.models.guidance_encoder import GuidanceEncoder
    from magicportrait.models.reference_unet import ReferenceUNet2DConditionModel
    from magicportrait.models.release import OFFICIAL_MOTION_MODULE_KWARGS
    from magicportrait.models.unet_3d import UNet3DConditionModel
    from magicportrait.training.trainer import MagicPortraitNet, set_trainable

    spec = generation_bench.model_specs()["tiny" if quick else "sd15"]
    size, frames = (64, 4) if quick else (512, 1 if stage == 1 else 24)
    extra = {"motion_module_kwargs": dict(OFFICIAL_MOTION_MODULE_KWARGS)} if stage == 2 else {"motion_modules": False}
    with torch.device(device):
        denoising = UNet3DConditionModel.from_unet2d_config(dict(spec["unet"]), **extra)
        reference = ReferenceUNet2DConditionModel.from_unet2d_config(dict(spec["unet"]))
        encoders = {name: GuidanceEncoder(**spec["encoder"]) for name in generation_bench.GUIDANCE_MAPS}
        net = MagicPortraitNet(denoising, reference, encoders)
    set_trainable(net, stage)
    denoising.enable_gradient_checkpointing()
    reference.enable_gradient_checkpointing()
    net.train()
    trainable = [parameter for parameter in net.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    cuda = device == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    latent = size // 8
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    timings = []
    for _ in range(steps):
        began = time.perf_counter()
        noisy = torch.randn(1, 4, frames, latent, latent, device=device)
        maps = {name: torch.rand(1, 3, frames, size, size, device=device) for name in generation_bench.GUIDANCE_MAPS}
        text = torch.randn(1, 77, spec["text_width"], device=device)
        with torch.autocast(device_type=device, dtype=torch.float16, enabled=cuda):
            prediction = net(noisy, torch.tensor([500], device=device), torch.randn(1, 4, latent, latent,
                                                                                    device=device), maps, text, True)
            loss = (prediction.float() - noisy).pow(2).mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - began)
    result = {"size": size, "frames": frames, "trainable_millions": sum(p.numel() for p in trainable) / 1e6,
              "seconds_per_step": float(np.median(timings[1:])), "first_step_seconds": timings[0],
              "finite": bool(torch.isfinite(loss))}
    if cuda:
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


# --- running and writing ----------------------------------------------------------------------------------------


def run(device: str, quick: bool, vectors: Path | None, parts: tuple[str, ...]) -> dict:
    started = time.monotonic()
    deadline = started + (60.0 if quick else BUDGET_SECONDS)
    steps: dict[str, Callable[[], dict]] = {
        "correctness": lambda: correctness(device, vectors),
        "flops": lambda: flops(device, quick),
        "speed": lambda: speed(device, quick),
        "rendering": lambda: rendering(device, quick),
        "training": lambda: training(device, quick),
        "ratios": lambda: ratios(device, quick, deadline),
    }
    report: dict = {"environment": environment(device), "quick": quick}
    for name, step in steps.items():
        if name not in parts:
            continue
        if time.monotonic() > deadline and name != "ratios":
            report[name] = {"skipped": "time budget"}
            continue
        began = time.monotonic()
        try:
            report[name] = step()
        except Exception:  # one part's failure is recorded; the others still run
            report[name] = {"error": traceback.format_exc()[-3000:]}
        report[name + "_seconds"] = time.monotonic() - began
        print(f"{name}: {report[name + '_seconds']:.0f} s", flush=True)
    report["total_seconds"] = time.monotonic() - started
    return report


def section(report: dict) -> list[str]:
    """The GPU section of docs/benchmarks.md."""
    env = report["environment"]
    lines = [MARKS[0], "", "## GPU check (issue 15)", "",
             f"`python benchmarks/gpu_check.py` on {env.get('gpu', env['device'])} (torch {env['torch']}, CUDA "
             f"{env['cuda']}); {report['total_seconds']:.0f} s. The whole report: `outputs/gpu-check/gpu_check.json`.",
             ""]
    correct = report.get("correctness", {})
    if "fp32_passed" in correct:
        worst = max(correct["fp32_vs_official"].values(), key=lambda entry: entry["rel_l2"] / entry["tolerance"])
        lines.append(f"- Official vectors on the GPU in fp32: {'all pass' if correct['fp32_passed'] else 'FAIL'} "
                     f"(worst rel-L2 {worst['rel_l2']:.1e} against a tolerance of {worst['tolerance']:.0e}); "
                     + ", ".join(f"{dtype} vs fp32 final latents {values['final_latents']:.1e}"
                                 for dtype, values in correct["rel_l2_vs_fp32"].items()) + ".")
    for dtype, entry in report.get("speed", {}).items():
        if isinstance(entry, dict) and "seconds_per_frame" in entry:
            peak = entry.get("peak_gpu_mib", 0) / 1024
            lines.append(f"- {MODEL_NAMES.get(entry.get('model'), entry.get('model'))}, {entry.get('size')}x"
                         f"{entry.get('size')}, {entry['frames']} frames, 20 steps, CFG 3.5, {entry['dtype']}: "
                         f"{entry['seconds_per_frame']:.2f} s per frame; peak {peak:.1f} GiB allocated, "
                         f"{entry.get('peak_gpu_reserved_mib', 0) / 1024:.1f} GiB reserved"
                         + (" (memory run, 1 step)" if dtype == "long" else "") + ".")
    flop = report.get("flops", {})
    if "achieved_tflops" in flop:
        lines.append(f"- Denoising UNet, one {flop['window_frames']}-frame window with CFG: "
                     f"{flop['unet_window_tflop']:.1f} TFLOP in {flop['unet_window_seconds'] * 1000:.0f} ms = "
                     f"{flop['achieved_tflops']:.0f} TFLOP/s, "
                     f"{flop['fraction_of_peak']:.0%} of {flop['peak_tflops']:.0f} TFLOP/s ({flop['peak_note']}).")
    render = report.get("rendering", {})
    for name in ("renderer", "geometric"):
        if "frames_per_second" in render.get(name, {}):
            lines.append(f"- {name}: {render[name]['frames_per_second']:.0f} frames/s.")
    for stage, entry in report.get("training", {}).items():
        if isinstance(entry, dict) and "seconds_per_step" in entry:
            peak = f", peak {entry['peak_gpu_mib'] / 1024:.1f} GiB" if "peak_gpu_mib" in entry else ""
            lines.append(f"- Training {stage} ({entry['frames']} frames at {entry['size']}x{entry['size']}): "
                         f"{entry['seconds_per_step']:.2f} s/step{peak}.")
    variants = report.get("ratios", {}).get("variants", {})
    if variants:
        base = report["ratios"].get("configuration", {})
        lines += ["", f"| variant ({MODEL_NAMES.get(base.get('model'), base.get('model'))}, {base.get('size')}x"
                  f"{base.get('size')}, {base.get('frames')} frames, {base.get('steps')} steps, {base.get('dtype')}) "
                  "| loop time vs default | peak memory vs default |", "|---|---|---|"]
        for name, entry in variants.items():
            if "time_vs_default" in entry:
                lines.append(f"| {name} | {entry['time_vs_default']:.2f}x | {entry['memory_vs_default']:.2f}x |")
            else:
                lines.append(f"| {name} | {next(iter(entry.values()))} | |")
    failed = [name for name, value in report.items() if isinstance(value, dict) and "error" in value]
    if failed:
        lines += ["", f"Parts that failed (see the JSON): {', '.join(failed)}."]
    return [*lines, "", MARKS[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="Tiny models: the CI-sized form.")
    parser.add_argument("--vectors", type=Path, default=DEFAULT_VECTORS, help="The official-tiny vectors folder.")
    parser.add_argument("--parts", default="correctness,flops,speed,rendering,training,ratios",
                        help="Comma-separated parts to run.")
    parser.add_argument("--output", type=Path, default=ROOT / "outputs" / "gpu-check")
    args = parser.parse_args()
    if args.device == "cpu" and not args.quick:
        print("note: no CUDA GPU; the CPU run is the CI-sized check (use --quick), nothing is written to the docs")
    report = run(args.device, args.quick, args.vectors, tuple(args.parts.split(",")))
    args.output.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, default=str)
    (args.output / "gpu_check.json").write_text(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(text)
    print("\n".join(section(report)))
    if args.device == "cuda" and not args.quick:
        from bench_real_photos import write_docs

        write_docs(ROOT / "docs" / "benchmarks.md", section(report), MARKS)
        print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
