"""The GPU check's CPU-only parts in CI size (issue 15): the official vectors through the check's correctness part, the
FLOP count against an analytic count, every part of the quick run, and the docs section a GPU report would give."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from shared_paths import PROJECT, VECTORS

sys.path.insert(0, str(PROJECT / "benchmarks"))
gpu_check = pytest.importorskip("gpu_check")


@pytest.mark.skipif(not VECTORS.is_dir(), reason="official-tiny vectors not available")
def test_correctness_part_passes_the_official_vectors_on_cpu() -> None:
    report = gpu_check.correctness("cpu", VECTORS)
    assert report["fp32_passed"], report["fp32_vs_official"]
    assert len(report["fp32_vs_official"]) == 14  # 6 UNet outputs, 3 x (velocity, latents), final latents, video
    for dtype, values in report["rel_l2_vs_fp32"].items():
        # Half precision moves the tiny random models' latents by a few percent (bf16 more), never to zero or NaN.
        assert 1e-5 < values["final_latents"] < 0.3, (dtype, values)


def test_correctness_part_without_vectors_says_so(tmp_path) -> None:
    assert "skipped" in gpu_check.correctness("cpu", tmp_path / "missing")


def analytic_flops(model: nn.Module, run) -> int:
    """2 x multiply-adds of every Linear and Conv2d, counted from their shapes in forward hooks."""
    total = []

    def linear(module, inputs, output):
        total.append(2 * output.numel() * module.in_features)

    def conv(module, inputs, output):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total.append(2 * output.numel() * module.in_channels // module.groups * kernel)

    handles = [module.register_forward_hook(linear if isinstance(module, nn.Linear) else conv)
               for module in model.modules() if isinstance(module, nn.Linear | nn.Conv2d)]
    with torch.no_grad():
        run()
    for handle in handles:
        handle.remove()
    return sum(total)


def test_flop_count_agrees_with_the_layers_shapes() -> None:
    frames, size = 4, 64
    counted = gpu_check.unet_window_flops("tiny", size, frames)
    pipeline = gpu_check.generation_bench.build_pipeline("tiny", "default")
    unet, latent = pipeline.denoising_unet, size // 8
    sample = torch.randn(2, 4, frames, latent, latent)
    features = torch.randn(2, unet.config.block_out_channels[0], frames, latent, latent)
    text = pipeline.text_embeddings.expand(2, -1, -1)
    layers = analytic_flops(unet, lambda: unet(sample, torch.tensor(999), encoder_hidden_states=text,
                                                   guidance_features=features))
    # The counter adds the attention products (QK^T and AV) to the same layers' FLOPs: a few percent at this size.
    assert layers < counted < 1.15 * layers
    doubled = gpu_check.unet_window_flops("tiny", size, 2 * frames)
    assert 1.95 < doubled / counted < 2.1  # linear in the window (the temporal attention's square is small here)


def test_quick_run_of_every_part(tmp_path) -> None:
    report = gpu_check.run("cpu", quick=True, vectors=tmp_path / "none",
                           parts=("correctness", "flops", "speed", "rendering", "training", "ratios"))
    failed = {name: value["error"] for name, value in report.items() if isinstance(value, dict) and "error" in value}
    assert not failed, failed
    assert "Training stage2 (4 frames at 64x64)" in "\n".join(gpu_check.section(report))
    assert report["speed"]["fp32"]["finite"] and report["speed"]["long"]["frames"] == 8
    assert report["rendering"]["renderer"]["frames_per_second"] > 0
    assert all(report["training"][stage]["finite"] for stage in ("stage1", "stage2"))
    variants = report["ratios"]["variants"]
    assert variants["default"]["time_vs_default"] == 1.0
    assert {"no_guidance_cache", "whole_feed_forward", "sdpa_math", "channels_last"} <= set(variants)
    assert all("time_vs_default" in entry for entry in variants.values()), variants


def test_docs_section_of_a_gpu_report() -> None:
    report = {
        "environment": {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.13.0", "cuda": "12.8"},
        "total_seconds": 412.0,
        "correctness": {"fp32_passed": True,
                        "fp32_vs_official": {"final_latents": {"rel_l2": 2e-6, "tolerance": 5e-4, "passed": True}},
                        "rel_l2_vs_fp32": {"fp16": {"final_latents": 0.004, "video": 0.001},
                                           "bf16": {"final_latents": 0.03, "video": 0.01}}},
        "speed": {"fp16": {"model": "sd15", "size": 512, "frames": 48, "dtype": "fp16", "seconds_per_frame": 0.52,
                           "peak_gpu_mib": 9216,
                           "peak_gpu_reserved_mib": 10240},
                  "long": {"frames": 300, "dtype": "fp16", "seconds_per_frame": 0.1, "peak_gpu_mib": 9300}},
        "flops": {"window_frames": 12, "unet_window_tflop": 21.0, "unet_window_seconds": 0.07,
                  "achieved_tflops": 300.0, "peak_tflops": 700.0, "peak_note": "measured", "fraction_of_peak": 0.43},
        "rendering": {"renderer": {"frames_per_second": 900.0}, "geometric": {"skipped": "no MediaPipe"}},
        "training": {"stage1": {"seconds_per_step": 0.4, "peak_gpu_mib": 20480, "frames": 1, "size": 512}},
        "ratios": {"configuration": {"model": "sd15", "size": 512, "frames": 24, "steps": 2, "dtype": "fp16"},
                   "variants": {"default": {"time_vs_default": 1.0, "memory_vs_default": 1.0},
                                "sdpa_cudnn": {"error": "RuntimeError: no kernel"}}},
        "flops_seconds": 3.0,
    }
    text = "\n".join(gpu_check.section(report))
    assert text.startswith(gpu_check.MARKS[0]) and text.endswith(gpu_check.MARKS[1])
    for expected in ("NVIDIA H100", "all pass",
                     "SD-1.5 size, 512x512, 48 frames, 20 steps, CFG 3.5, fp16: 0.52 s per frame",
                     "(SD-1.5 size, 512x512, 24 frames, 2 steps, fp16)", "9.0 GiB allocated", "300 TFLOP/s, 43%",
                     "renderer: 900 frames/s", "stage1 (1 frames at 512x512): 0.40 s/step, peak 20.0 GiB",
                     "| default | 1.00x | 1.00x |", "RuntimeError: no kernel"):
        assert expected in text, expected
