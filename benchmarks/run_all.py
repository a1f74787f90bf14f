"""Run every benchmark of the project and write docs/benchmarks.md.

    python benchmarks/run_all.py            # full run (minutes)
    python benchmarks/run_all.py --quick    # fewer frames, for a smoke check

Each benchmark measures its own in-run baseline and reports a ratio against it, on this machine, now.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def machine_line() -> str:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "uncommitted"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), commit {commit}, {time.strftime('%Y-%m-%d')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Small frame counts (smoke check, not for the docs).")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    import bench_flame_fitting
    import bench_generation
    import bench_guide
    import bench_rendering
    import bench_tracking

    tracking = bench_tracking.run(60 if args.quick else 300)
    rendering = bench_rendering.run(num_frames=20 if args.quick else 120, size=512)
    guide = bench_guide.run((60, 120) if args.quick else (300, 3000))
    flame_fitting = bench_flame_fitting.run(60 if args.quick else 300)
    generation = bench_generation.run(args.quick)
    report = {"machine": machine_line(), "tracking": tracking, "rendering": rendering, "guide": guide,
              "flame_fitting": flame_fitting, "generation": generation}
    print(json.dumps(report, indent=2, default=float))
    if not args.quick:
        write_markdown(Path(args.output), report)
        print(f"wrote {args.output}")


def write_markdown(path: Path, report: dict) -> None:
    tracking, rendering, guide = report["tracking"], report["rendering"], report["guide"]
    counts = sorted(k for k in guide if isinstance(k, int) or str(k).isdigit())
    lines = [
        "# Benchmarks",
        "",
        "Written by `python benchmarks/run_all.py` (do not edit by hand). Each figure comes with a baseline "
        "measured in the same run on the same machine.",
        "",
        f"Machine: {report['machine']}.",
        "",
        "## Foundation: tracking, rendering, `guide` (issue 2)",
        "",
        "| what | measured | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
        f"| tracking, {tracking['num_frames']} frames 512x512 | {tracking['fps']:.0f} frames/s "
        f"(max_faces=1: {tracking['fps_max_faces_1']:.0f}) | MediaPipe static mode per frame: "
        f"{tracking['baseline_static_per_frame_fps']:.0f} frames/s | {tracking['ratio_to_baseline']:.2f}x "
        "| >= 25 frames/s |",
    ]
    for name, row in rendering.items():
        if isinstance(row, dict) and "fps" in row:
            lines.append(f"| rendering depth+normal+render, 512x512, {name} | {row['fps']:.0f} frames/s | "
                         f"one triangle at a time: {row['naive_fps']:.1f} frames/s | {row['speedup']:.0f}x "
                         "| >= 60 frames/s (face mesh) |")
    for count in counts:
        row = guide[count]
        lines.append(f"| `guide` end to end, {count} frames (maps, PNGs, preview) | {row['guide_fps']:.1f} frames/s, "
                     f"peak RSS {row['guide_peak_rss_mib']:.0f} MiB | decode + encode the 4 videos only: "
                     f"{row['io_floor_fps']:.1f} frames/s | {row['ratio_to_io_floor']:.2f}x | — |")
    if "peak_rss_ratio_longest_vs_shortest" in guide:
        lines.append(f"| peak RSS, {counts[-1]} vs {counts[0]} frames | "
                     f"{guide['peak_rss_ratio_longest_vs_shortest']:.3f}x | | | within 1.10x |")
    lines += flame_fitting_lines(report["flame_fitting"])
    if "generation" in report:
        lines += generation_lines(report["generation"])
    keys = ("tracking", "rendering", "guide", "flame_fitting", "generation")
    lines += ["", "Raw figures:", "", "```json",
              json.dumps({k: report[k] for k in keys if k in report}, indent=2, default=float),
              "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def flame_fitting_lines(fit: dict) -> list[str]:
    """The FLAME fitting section (issue 3); its tracks need the FLAME model from ../shared."""
    lines = ["", "## FLAME fitting (issue 3)", ""]
    if "skipped" in fit:
        return lines + [f"Not measured: {fit['skipped']}"]
    if "machine" in fit:
        lines += [f"Measured apart from the sections above: {fit['machine']}.", ""]
    lines += [
        f"Synthetic {fit['num_frames']}-frame tracks at 512x512 from the FLAME model "
        f"({fit['flame_shape_components']} identity, {fit['flame_expression_components']} expression components), "
        f"landmark noise {fit['noise_px']} px.",
        "",
        "| what | measured | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
        f"| fitting speed, noisy track | {fit['noisy_fps']:.0f} frames/s (noiseless {fit['clean_fps']:.0f}) | "
        f"each frame fitted alone: {fit['naive_fps']:.1f} frames/s | {fit['speedup_vs_naive']:.0f}x "
        "| >= 30 frames/s |",
        f"| landmark reprojection error vs. truth | {fit['noisy_reprojection_px']:.2f} px noisy, "
        f"{fit['clean_reprojection_px']:.2f} px noiseless | | | <= 1.5 px |",
        f"| pose jitter, static head | {fit['static_jitter_deg_per_frame']:.3f} deg/frame, "
        f"{fit['static_jitter_smoothed_deg_per_frame']:.3f} after smoothing 0.5 | each frame alone: "
        f"{fit['naive_static_jitter_deg_per_frame']:.3f} deg/frame | {fit['jitter_ratio_naive_vs_batched']:.1f}x "
        "less | — |",
    ]
    if "closed_loop" in fit:
        lines += flame_closed_loop_lines(fit["closed_loop"])
    return lines


def flame_closed_loop_lines(loop: dict) -> list[str]:
    """The FLAME closed loop through the real tracker, on the bundled example."""
    px, ideal = loop["reprojection_px"], loop["rendered_reprojection_px"]
    return [
        "",
        f"Closed loop through the real tracker: the bundled example ({loop['num_frames']} frames; the portrait "
        "re-rendered turning up to 18 degrees yaw, 8 pitch, with a known jaw opening and brow raise), encoded, "
        "tracked with MediaPipe, mapped like the guide maps the portrait into its 512x512 face crop (the face "
        f"{loop['face_width_px']:.0f} px wide, {loop['crop_magnification']:.2f}x the 512x512 example frame) and "
        "fitted. Reprojection is against the tracked landmarks; the baseline column fits the renderer's exact "
        "landmarks instead (no tracker), which leaves the fitter and the model mismatch.",
        "",
        "| what | measured | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
        f"| fitting speed, tracked example | {loop['fps']:.0f} frames/s | | | >= 30 frames/s |",
        f"| landmark reprojection error, 512x512 face crop | {px['all']:.2f} px all 478 "
        f"({px['all'] / loop['crop_magnification']:.2f} px in the 512x512 frame), {px['non_oval']:.2f} non-oval, "
        f"{px['oval']:.2f} oval, {px['iris']:.2f} iris | renderer's landmarks: {ideal['all']:.2f} px all, "
        f"{ideal['non_oval']:.2f} non-oval; the embedding's own spread at this size: "
        f"{loop['embedding_floor_px']:.2f} px | | <= 1.5 px |",
        f"| head rotation vs. known motion, relative to frame 0 | {loop['rotation_error_deg_mean']:.1f} deg mean, "
        f"{loop['rotation_error_deg_max']:.1f} max | renderer's landmarks: "
        f"{loop['rendered_rotation_error_deg_mean']:.1f} deg mean, {loop['rendered_rotation_error_deg_max']:.1f} max "
        "| | — |",
        f"| jaw angle vs. known jaw opening | correlation {loop['jaw_correlation']:.2f} (with the tracked lip gap: "
        f"{loop['jaw_vs_tracked_mouth_gap_correlation']:.2f}); {loop['fitted_jaw_max_deg']:.1f} deg at most for "
        f"the example's {loop['true_jaw_max_deg']:.0f} about its own hinge | | | — |",
        f"| pose jitter, moving head (change of the frame-to-frame rotation) | "
        f"{loop['jitter_deg_per_frame']:.3f} deg/frame, {loop['jitter_smoothed_deg_per_frame']:.3f} after "
        f"smoothing 0.5 | the known motion: {loop['true_jitter_deg_per_frame']:.3f} deg/frame | | — |",
    ]


DEVICE_NAMES = {"cpu": "CPU", "cuda": "GPU"}


def generation_lines(gen: dict) -> list[str]:
    """The diffusion generator section (issue 4): full-size speed and memory, then each optimisation's ratio."""
    lines = ["", "## Diffusion generator (issue 4)", ""]
    if "machine" in gen:
        lines += [f"Measured apart from the sections above: {gen['machine']}.", ""]
    measured = {device: part for device, part in gen.items() if isinstance(part, dict) and "full_size" in part}
    if not measured:
        return lines + ["Not measured."]
    first = next(iter(measured.values()))["full_size"]
    params = first["parameters_millions"]
    size = "Full size" if first["model"] == "sd15" else f"Model {first['model']!r} (not full size)"
    lines += [
        f"Random weights (default initialisation), {first['size']}x{first['size']}, DDIM, classifier-free guidance "
        f"3.5, context windows of 12 frames. {size}: the SD-1.5-layout denoising UNet with the official "
        f"AnimateDiff-v2 motion modules ({params['denoising_unet']:.0f}M parameters), the reference UNet "
        f"({params['reference_unet']:.0f}M), three guidance encoders ({params['guidance_encoders']:.1f}M) and the "
        f"SD VAE ({params['vae']:.0f}M). Seconds per output frame = (portrait encoding + reference pass + "
        f"{first['steps']} steps + decode) / frames"
        + (f"; the steps are extrapolated from {first['measured_steps']} measured ones (the first, with its one-time "
           f"warm-up, counted once; the others give the time of each remaining step)" if first["extrapolated"]
           else "") + ". Building the models is not counted.",
        "",
        "| what | measured | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for device, part in measured.items():
        lines += generation_full_size_rows(DEVICE_NAMES.get(device, device), part)
    for device, part in gen.items():
        if isinstance(part, dict) and "skipped" in part:
            lines.append(f"| full size, {DEVICE_NAMES.get(device, device)} fp16/bf16, 300 frames | not measured in "
                         f"this run: {part['skipped']} (run `python benchmarks/bench_generation.py --device cuda "
                         "--dtype fp16 --frames 300`) | | | >= 3 frames/s, <= 12 GB peak (H100) |")
    for device, part in measured.items():
        lines += generation_ratio_lines(DEVICE_NAMES.get(device, device), part)
    return lines


def generation_full_size_rows(name: str, part: dict) -> list[str]:
    full = part["full_size"]
    windows = "one window" if full["windows"] == 1 else f"{full['windows']} windows"
    memory = f"peak RSS {full['peak_rss_mib'] / 1024:.1f} GiB"
    target_speed, target_memory = "GPU: >= 3 frames/s (H100)", "GPU: <= 12 GB for 300 frames (H100)"
    if "peak_gpu_mib" in full:
        memory = f"peak GPU memory {full['peak_gpu_mib'] / 1024:.1f} GiB (host RSS {full['peak_rss_mib'] / 1024:.1f})"
        target_speed, target_memory = ">= 3 frames/s (H100)", "<= 12 GB for 300 frames (H100)"
    return [
        f"| {'full size' if full['model'] == 'sd15' else full['model']}, {name} {full['dtype']}, {full['frames']} "
        f"frames ({windows}), {full['steps']} steps | "
        f"{full['seconds_per_frame']:.1f} s/frame ({full['frames_per_second']:.3g} frames/s): reference pass "
        f"{full['reference_seconds']:.1f} s, one step {full['seconds_per_step']:.1f} s (guidance encoding "
        f"{full['guidance_seconds_per_step']:.1f} s of it), decode {full['decode_seconds_per_frame']:.1f} s/frame "
        f"| | | {target_speed} |",
        f"| peak memory, same run | {memory} | | | {target_memory} |",
    ]


def generation_ratio_lines(name: str, part: dict) -> list[str]:
    ratio, runs, long = part["ratios"], part["ratios"]["runs"], part["ratios"]["long_runs"]
    gpu = "peak_gpu_mib" in runs["default"]
    label = "peak GPU memory" if gpu else "peak RSS"

    def peak(run: dict) -> str:
        return f"{run['peak_gpu_mib' if gpu else 'peak_rss_mib']:.0f} MiB"

    def spread(run: dict) -> str:
        peaks = run.get(f"{'peak_gpu_mib' if gpu else 'peak_rss_mib'}_repeats", [])
        return f"; its {len(peaks)} runs: {min(peaks):.0f}-{max(peaks):.0f} MiB" if len(peaks) > 1 else ""

    def loop(run: dict) -> str:
        return f"{run['loop_seconds']:.1f} s"

    ours = runs["default"]
    held = runs["upfront_guidance"].get("held_guidance_mib", 0.0)
    per_frame = part.get("upfront_guidance_mib_per_frame_full_size")
    full_size_held = (f"; at full size {per_frame:.1f} MiB/frame, {per_frame * 300 / 1024:.1f} GiB for 300 frames "
                      "in fp32" if per_frame else "")
    repeats = (f", the fastest of {ratio['repeats']} runs in rounds of alternating order (memory: the median of "
               "their peaks)"
               if ratio.get("repeats", 1) > 1 else "")
    widths = "/".join(str(width) for width in ratio.get("widths", [])) or "reduced"
    return [
        "",
        f"Each optimisation's effect, {name} {part['dtype']}: a reduced-width model (SD-1.5 structure, motion "
        f"modules and official guidance encoders, UNet widths {widths}), {ratio['size']}x{ratio['size']}, "
        f"{ratio['frames']} frames ({ratio['windows']} windows), {ratio['steps']} steps, each variant in "
        f"{'its own process' if ours.get('peak_rss_isolated') else 'this process (peak memory not its own)'}. "
        "Time: from the call to the final latents (portrait encoding, reference pass, steps; decode "
        f"excluded){repeats}. Ratio: baseline / ours, above 1 when ours is faster or smaller. Memory: {label} "
        "of the run.",
        "",
        "| what | measured | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
        f"| reference UNet once per video | {loop(ours)} | once per window per step "
        f"({runs['reference_per_window']['reference_calls']} passes): {loop(runs['reference_per_window'])} | "
        f"{ratio['reference_once_speedup']:.2f}x | — |",
        f"| classifier-free guidance, one batch-2 UNet call per window | {loop(ours)} | two batch-1 calls "
        f"(unconditional without the reference, conditional with it): {loop(runs['two_pass_cfg'])} | "
        f"{ratio['batched_cfg_speedup']:.2f}x | — |",
        f"| SDPA attention (`AttnProcessor2_0`, the default) | {loop(ours)}, {peak(ours)} | classic `AttnProcessor` "
        f"on all {runs['classic_attention'].get('classic_processors', '?')} attentions (both UNets, temporal, "
        f"guidance encoders, the reference fusion's): {loop(runs['classic_attention'])}, "
        f"{peak(runs['classic_attention'])} | time {ratio['sdpa_speedup']:.2f}x, memory "
        f"{ratio['sdpa_memory_ratio']:.2f}x | — |",
        f"| guidance features encoded per window, each step (the default) | {loop(ours)}, {peak(ours)} | every "
        f"frame's features encoded up front and held (official; {held:.1f} MiB here{full_size_held}): "
        f"{loop(runs['upfront_guidance'])}, {peak(runs['upfront_guidance'])} | time "
        f"{ratio['chunked_guidance_time_ratio']:.2f}x, memory {ratio['chunked_guidance_memory_ratio']:.2f}x | — |",
        f"| `cache_guidance=True` (features cached on the CPU in fp16 after the first step) | "
        f"{loop(runs['cache_guidance'])}, {peak(runs['cache_guidance'])} | the default: {loop(ours)}, {peak(ours)} "
        f"| time {ratio['cache_guidance_speedup']:.2f}x, memory {ratio['cache_guidance_memory_ratio']:.2f}x | — |",
        f"| {label}, {ratio['long_frames']} vs {ratio['frames']} frames | {ratio['flatness_default']:.3f}x "
        f"({peak(long['default'])} vs {peak(ours)}{spread(ours)}) | features up front: "
        f"{ratio['flatness_upfront']:.3f}x ({peak(long['upfront_guidance'])} vs {peak(runs['upfront_guidance'])}) "
        "| | ~1.0 (flat in video length) |",
    ]


if __name__ == "__main__":
    main()
