"""Run every benchmark of the project and write docs/benchmarks.md.

    python benchmarks/run_all.py            # full run (minutes)
    python benchmarks/run_all.py --quick    # fewer frames, for a smoke check
    python benchmarks/run_all.py --only geometric   # one bench; the others' figures kept from docs/benchmarks.md

Each benchmark measures its own in-run baseline and reports a ratio against it, on this machine, now.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


BENCHES = ("tracking", "rendering", "guide", "flame_fitting", "generation", "geometric", "evaluation",
           "training")
"""Every bench, in the order they run and their sections appear (``bench_<name>.py``)."""
SEPARATE_BENCHES = ("flame_fitting", "generation", "geometric", "evaluation", "training")
"""Benches whose sections name their own machine line, so they can be re-run alone (``--only``)."""


def machine_line() -> str:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "uncommitted"
    changed = subprocess.run(["git", "status", "--porcelain", "--", "src", "benchmarks"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
    if changed and commit != "uncommitted":
        commit += " + uncommitted changes"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), commit {commit}, {time.strftime('%Y-%m-%d')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small frame counts (smoke check, not for the docs).")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--only", nargs="+", choices=SEPARATE_BENCHES, default=None,
                        help="Run only these benches and rewrite --output with their fresh figures (each with its "
                             "own machine line) and every other bench's figures as stored in --output.")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    if args.only:
        report = stored_report(Path(args.output)) if not args.quick else {}
        report.update({name: {**run_bench(name, args.quick), "machine": machine_line()} for name in args.only})
    else:
        report = {"machine": machine_line(), **{name: run_bench(name, args.quick) for name in BENCHES}}
    print(json.dumps(report, indent=2, default=float))
    if not args.quick:
        write_markdown(Path(args.output), report)
        print(f"wrote {args.output}")


def run_bench(name: str, quick: bool) -> dict:
    """One bench's figures (its module is ``bench_<name>``)."""
    import importlib

    module = importlib.import_module(f"bench_{name}")
    if name == "tracking":
        return module.run(60 if quick else 300)
    if name == "rendering":
        return module.run(num_frames=20 if quick else 120, size=512)
    if name == "guide":
        return module.run((60, 120) if quick else (300, 3000))
    if name == "flame_fitting":
        return module.run(60 if quick else 300)
    return module.run(quick)  # generation, geometric, evaluation, training


def stored_report(path: Path) -> dict:
    """The figures a previous full run wrote into ``path``: its machine line and raw JSON (as ``main`` made them)."""
    text = path.read_text() if path.is_file() else ""
    machine = re.search(r"^Machine: (.*)\.$", text, re.MULTILINE)
    raw = re.search(r"^Raw figures:\n\n```json\n(.*?)\n```$", text, re.MULTILINE | re.DOTALL)
    if machine is None or raw is None:
        raise SystemExit(f"{path} holds no stored figures (its 'Machine:' line or raw JSON is missing): run all the "
                         "benchmarks first (python benchmarks/run_all.py).")
    report = {"machine": machine.group(1), **json.loads(raw.group(1))}
    if "guide" in report:  # JSON made its frame-count keys strings
        report["guide"] = {int(key) if key.isdigit() else key: value for key, value in report["guide"].items()}
    return report


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
    if "geometric" in report:
        lines += geometric_lines(report["geometric"])
    if "evaluation" in report:
        lines += evaluation_lines(report["evaluation"])
    if "training" in report:
        lines += training_lines(report["training"])
    lines += kept_section(path, REAL_PHOTOS_MARKS)
    for marks in (LOADING_MARKS, THROUGHPUT_MARKS, FLAME_ENCODERS_MARKS, POSE_REFINEMENT_MARKS, BATCH_MARKS):
        lines += kept_section(path, marks)
    lines += ["", "Raw figures:", "", "```json",
              json.dumps({k: report[k] for k in BENCHES if k in report}, indent=2, default=float),
              "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


REAL_PHOTOS_MARKS = ("<!-- real-photos: start -->", "<!-- real-photos: end -->")
"""The section ``bench_real_photos.py`` writes (it needs photos fetched with npm, so it runs on its own)."""
LOADING_MARKS = ("<!-- loading: start -->", "<!-- loading: end -->")
"""The section ``bench_loading.py`` writes (issue 15's memory figures, about 10 minutes on its own)."""
THROUGHPUT_MARKS = ("<!-- loading-throughput: start -->", "<!-- loading-throughput: end -->")
"""The section ``bench_loading.py --throughput`` writes."""
FLAME_ENCODERS_MARKS = ("<!-- flame-encoders: start -->", "<!-- flame-encoders: end -->")
"""The section ``bench_flame_encoders.py`` writes."""
POSE_REFINEMENT_MARKS = ("<!-- pose-refinement: start -->", "<!-- pose-refinement: end -->")
"""The section ``bench_pose_refinement.py`` writes."""
BATCH_MARKS = ("<!-- batch: start -->", "<!-- batch: end -->")
"""The section ``bench_batch.py`` writes."""


def kept_section(path: Path, marks: tuple[str, str]) -> list[str]:
    """The lines of the section between ``marks`` in the current ``path`` (kept when the file is rewritten)."""
    text = path.read_text() if path.is_file() else ""
    start, end = marks
    if start not in text or end not in text:
        return []
    return ["", start + text.split(start, 1)[1].split(end, 1)[0] + end]


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
        "landmarks instead (no tracker), which leaves the fitter and the model mismatch. These fits use the "
        "tracked landmarks alone; the photometric pose refinement guide applies by default is measured in "
        "\"Head pose: photometric refinement\" below.",
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
        *feature_rows(ratio, runs, loop, peak, held, full_size_held),
        f"| {label}, {ratio['long_frames']} vs {ratio['frames']} frames | {ratio['flatness_default']:.3f}x "
        f"({peak(long['default'])} vs {peak(ours)}{spread(ours)}) | features up front: "
        f"{ratio['flatness_upfront']:.3f}x ({peak(long['upfront_guidance'])} vs {peak(runs['upfront_guidance'])}) "
        "| | ~1.0 (flat in video length) |",
    ]


def feature_rows(ratio: dict, runs: dict, loop, peak, held: float, full_size_held: str) -> list[str]:
    """The guidance-feature and feed-forward rows; figures stored before issue 15 (no feature cache by default, a
    ``cache_guidance`` option) keep their own wording."""
    ours = runs["default"]
    upfront = (f"every frame's features encoded up front and held (official; {held:.1f} MiB here{full_size_held}): "
               f"{loop(runs['upfront_guidance'])}, {peak(runs['upfront_guidance'])} | time "
               f"{ratio['chunked_guidance_time_ratio']:.2f}x, memory {ratio['chunked_guidance_memory_ratio']:.2f}x "
               "| — |")
    if "no_guidance_cache" not in runs:  # stored by the benchmark as it was before issue 15
        return [f"| guidance features encoded per window, each step (the default then) | {loop(ours)}, {peak(ours)} "
                f"| {upfront}",
                f"| `cache_guidance=True` (then an option: features cached on the CPU in fp16) | "
                f"{loop(runs['cache_guidance'])}, {peak(runs['cache_guidance'])} | the default: {loop(ours)}, "
                f"{peak(ours)} | time {ratio['cache_guidance_speedup']:.2f}x, memory "
                f"{ratio['cache_guidance_memory_ratio']:.2f}x | — |"]
    return [
        f"| guidance features kept between steps within `--guidance-cache-mb` (the default) | {loop(ours)}, "
        f"{peak(ours)} | {upfront}",
        f"| the same | {loop(ours)}, {peak(ours)} | re-encoded per window at every step (`--guidance-cache-mb 0`): "
        f"{loop(runs['no_guidance_cache'])}, {peak(runs['no_guidance_cache'])} | time "
        f"{ratio['guidance_cache_speedup']:.2f}x, memory {ratio['guidance_cache_memory_ratio']:.2f}x | — |",
        f"| feed-forward layers in chunks of rows (the CPU default) | {loop(ours)}, {peak(ours)} | whole: "
        f"{loop(runs['whole_feed_forward'])}, {peak(runs['whole_feed_forward'])} | time "
        f"{ratio['feed_forward_chunk_speedup']:.2f}x, memory {ratio['feed_forward_chunk_memory_ratio']:.2f}x | — |",
    ]


def geometric_lines(geo: dict) -> list[str]:
    """The geometric backend section (issue 5): the generator at 512x512, 1080p paste-back, the whole `demo`."""
    lines = ["", "## Geometric backend (issue 5)", ""]
    if "machine" in geo:
        lines += [f"Measured apart from the sections above: {geo['machine']}.", ""]
    gen, hd, demo = geo["generator"], geo["hd_paste_back"], geo["demo"]
    size, stages = f"{gen['size']}x{gen['size']}", gen["stage_ms_per_frame"]
    grid, no_grid = demo["grid"], demo["no_grid"]
    lines += [
        f"The bundled portrait ({size}) and its example driving video ({gen['num_frames']} frames) tracked and "
        f"aligned as `magicportrait animate` does, then `GeometricGenerator.render` over every frame in chunks of "
        f"{gen['chunk_size']} ({geo['threads']} torch threads); each figure is the fastest of {gen['rounds']} "
        "passes over the same frames in rounds of alternating order. Set-up (texture projection, paint-out; once per "
        "portrait) and the process's first pass (one-time warm-up) are reported apart. 1080p: the portrait scaled up "
        "2x and centred on a blurred 1920x1080 frame, prepared from that frame (the 512x512 crop covers "
        f"{hd['crop_side_in_frame_px']:.0f} px of it), every frame generated and pasted back. `demo`: "
        "`magicportrait demo -o DIR --no-show-progress` in a fresh process, wall time (interpreter start-up, "
        "writing the bundled example, tracking, generation, videos), the faster of "
        f"{demo['rounds']} runs. Ratio: baseline / ours, above 1 when ours is faster.",
        "",
        "| what | measured | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
        f"| geometric generator, {size}, {gen['num_frames']} frames | {gen['fps']:.1f} frames/s (the process's "
        f"first pass: {gen['first_pass_fps']:.1f}; set-up {gen['setup_seconds']:.2f} s) | depth + normal + render "
        f"guidance maps of the same frames (`render_guidance`): {gen['guidance_maps_fps']:.0f} "
        f"frames/s | {1.0 / gen['cost_vs_guidance_maps']:.2f}x (costs {gen['cost_vs_guidance_maps']:.1f}x the "
        "guidance maps) | >= 15 frames/s |",
        f"| where a frame's time goes | face re-render (posed mesh + texture transfer) "
        f"{stages['face_render']:.1f} ms, background warp {stages['background_warp']:.1f} ms, colour match + "
        f"blend {stages['colour_match_and_blend']:.1f} ms | | | — |",
        f"| `--geometric-blend feather` | {gen['fps_feather_blend']:.1f} frames/s | the default (multi-band): "
        f"{gen['fps']:.1f} frames/s | {gen['feather_blend_speedup']:.2f}x | — |",
        f"| `--no-geometric-colour-match` | {gen['fps_no_colour_match']:.1f} frames/s | the default: "
        f"{gen['fps']:.1f} frames/s | {gen['no_colour_match_speedup']:.2f}x | — |",
        f"| 1080p: generator + `PasteBack` (mode \"changed\") into 1920x1080 | {hd['fps']:.1f} frames/s | generator "
        f"+ naive full-frame paste: {hd['naive_fps']:.1f} frames/s | {hd['speedup']:.2f}x | — |",
        f"| paste-back alone, 1080p | {hd['paste_ms']:.1f} ms/frame (ROI {hd['roi_size'][0]}x{hd['roi_size'][1]}; "
        f"into a held frame with `out=`: {hd['paste_out_ms']:.1f} ms) | `cv2.warpAffine` of the crop onto the whole "
        f"frame + float alpha blend of the whole frame: {hd['naive_paste_ms']:.1f} ms | {hd['paste_speedup']:.0f}x "
        "| — |",
        f"| `magicportrait demo`, {grid['num_frames']} frames | {grid['seconds']:.1f} s, {grid['fps']:.2f} frames/s "
        f"effective, peak RSS {grid['peak_rss_mib']:.0f} MiB (writing the example {grid['example_seconds']:.1f} s; "
        f"generation + videos {grid['generate_seconds']:.1f} s, the generator at {grid['generator_fps']:.1f} "
        f"frames/s) | `--no-write-grid`: {no_grid['seconds']:.1f} s, {no_grid['fps']:.2f} frames/s, peak RSS "
        f"{no_grid['peak_rss_mib']:.0f} MiB (generation + videos {no_grid['generate_seconds']:.1f} s) | "
        f"{1.0 / demo['no_grid_speedup']:.2f}x (the grid costs {demo['no_grid_speedup']:.2f}x) | — |",
    ]
    return lines



def evaluation_lines(ev: dict) -> list[str]:
    """The evaluation suite section (issue 6): every metric on a 100-frame 512x512 video, and where the time goes."""
    everything, unbatched = ev["all"], ev["batch_size_1"]
    lines = [
        "",
        "## Evaluation suite (issue 6)",
        "",
        f"Measured apart from the sections above: {ev.get('machine', 'see the Machine line')}.",
        "",
        f"A self-reenactment of the bundled example ({ev['num_frames']} frames, 512x512: the portrait reenacted by "
        "the geometric generator with the example's driving video, which is also the ground truth), evaluated with "
        "`Evaluator` after its networks were loaded (their loading, the first call, is reported apart); each "
        "configuration in a fresh process, so the peak RSS (VmHWM) is its own. Ratio: baseline / ours.",
        "",
        "| what | measured | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
        f"| every metric ({', '.join(everything['values'])}), {ev['num_frames']} frames | "
        f"{everything['seconds']:.1f} s, peak RSS {everything['peak_rss_mib']:.0f} MiB (loading the networks and a "
        f"first 16-frame call: {everything['first_call_seconds']:.1f} s) | batch size 1: {unbatched['seconds']:.1f} s "
        f"| {unbatched['seconds'] / everything['seconds']:.2f}x | <= {ev['target_seconds']:.0f} s per 100 frames |",
    ]
    for name, part in ev["groups"].items():
        lines.append(f"| {name} alone | {part['seconds']:.1f} s, peak RSS {part['peak_rss_mib']:.0f} MiB | | | — |")
    values = ", ".join(f"{k} {v:.4g}" for k, v in everything["values"].items())
    lines += ["", f"The values measured on that video: {values}."]
    return lines


def training_lines(tr: dict) -> list[str]:
    """The training section (issue 7): step time and peak memory per stage at the tiny configuration."""
    lines = [
        "",
        "## Training (issue 7)",
        "",
        f"Measured apart from the sections above: {tr.get('machine', 'see the Machine line')}.",
        "",
        f"Tiny configuration ({tr['config']}) on the bundled example prepared with `magicportrait prepare`; each run "
        "in a fresh process; step time = (time of a long run - time of a short run) / extra steps, so set-up and "
        "warm-up cancel out. Baseline: the same with gradient checkpointing on. Ratio: baseline / ours. "
        f"GPU, SD-1.5 size at 512x512: {tr['gpu']}.",
        "",
        "| what | measured | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for stage in ("stage1", "stage2"):
        plain, checkpointed = tr[stage]["plain"], tr[stage]["gradient_checkpointing"]
        lines.append(f"| {stage.replace('stage', 'stage ')}, tiny | {plain['seconds_per_step']:.3f} s/step, peak RSS "
                     f"{plain['peak_rss_mib']:.0f} MiB | gradient checkpointing: "
                     f"{checkpointed['seconds_per_step']:.3f} s/step, {checkpointed['peak_rss_mib']:.0f} MiB | "
                     f"{checkpointed['seconds_per_step'] / plain['seconds_per_step']:.2f}x | — |")
    return lines


if __name__ == "__main__":
    main()
