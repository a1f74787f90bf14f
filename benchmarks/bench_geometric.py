"""The instant geometric reenactment backend (issue 5): frames/s at 512x512, at 1080p paste-back, and `demo`.

    python benchmarks/bench_geometric.py            # full (about 3 minutes on 2 cores)
    python benchmarks/bench_geometric.py --quick    # few frames, a smoke check (under a minute)

Three parts, each against a baseline measured in the same run; loops over the same frames run in rounds of
alternating order (so that drift of the machine's speed hits every variant alike) and the fastest round counts:

1. Generator, 512x512: the bundled portrait (``example_portrait()``) prepared once (``stages.prepare_source``),
   the example driving video (``write_example``, 100 frames) tracked and aligned (``GeometricPipeline.
   prepare_motion``), then ``GeometricGenerator.render`` over every frame in chunks of ``GeometricConfig().
   chunk_size``. The set-up (texture projection, paint-out) and the first pass of the process (one-time warm-up) are
   reported apart. Variants: ``blend="feather"`` and ``colour_match=False``; the per-frame stages (face re-render,
   background warp, colour match + blend) are timed around the generator's own steps. Baseline: the guidance maps of
   the same frames (depth + normal + render, ``render_guidance``).
2. 1080p paste-back: the portrait scaled up 2x and centred on a blurred 1920x1080 background, prepared from that full
   frame (so the crop matrix maps 1080p -> the 512 crop); per frame the generator + ``PasteBack`` (mode "changed",
   as the geometric pipeline pastes) into the 1080p frame. Baseline: a naive full-frame paste (``cv2.warpAffine`` of
   the crop to the whole frame with the inverse crop matrix + a float alpha blend of the whole frame).
3. The whole ``magicportrait demo`` command (default 50-frame example) in a fresh process: wall seconds, effective
   frames/s and peak RSS (VmHWM), with and without ``--no-write-grid``; the time spent writing the bundled example,
   in the reenactment loop (generation + videos) and the generator's own frames/s are read from inside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TARGET_FPS = 15.0  # the target for the generator at 512x512
HD_FRAME = (1080, 1920)
HD_PORTRAIT_SCALE = 2  # the 512 portrait scaled up so the face is about as large as in a real 1080p portrait
CHILD_MARKER = "BENCH_GEOMETRIC_RESULT "


@dataclass
class Prepared:
    """One source prepared for the generator, with the example motion aligned to it."""

    pipeline: object  # GeometricPipeline
    frame: np.ndarray  # the full source frame
    source: object  # SourceFace
    aligned: object  # HeadTrack
    seconds: float  # prepare_source + prepare_motion (tracking the driving video not included)


def portrait_in_hd(portrait: np.ndarray, frame_size: tuple[int, int] = HD_FRAME) -> np.ndarray:
    """``portrait`` scaled up ``HD_PORTRAIT_SCALE`` x and centred on a blurred copy of itself filling the frame."""
    height, width = frame_size
    background = cv2.GaussianBlur(cv2.resize(portrait, (width, height), interpolation=cv2.INTER_AREA), (0, 0), 25)
    side = portrait.shape[0] * HD_PORTRAIT_SCALE
    if side > min(height, width):
        raise ValueError(f"a {side}-pixel portrait does not fit a {width}x{height} frame")
    scaled = cv2.resize(portrait, (side, side), interpolation=cv2.INTER_CUBIC)
    top, left = (height - side) // 2, (width - side) // 2
    background[top:top + side, left:left + side] = scaled
    return background


def track_example(example_dir: Path, num_frames: int):
    """(pipeline, driving track) of the example driving video, written with ``num_frames``."""
    from magicportrait.pipelines import stages
    from magicportrait.pipelines.animate import AnimateConfig, GeometricPipeline
    from magicportrait.pipelines.example import write_example
    from magicportrait.pipelines.guide import GuideConfig
    from magicportrait.tracking import FaceTracker

    _, driving_path = write_example(example_dir, num_frames=num_frames)
    config = AnimateConfig(guide=GuideConfig(size=512, show_progress=False))
    pipeline = GeometricPipeline(config)
    with FaceTracker(config.guide.tracker) as tracker:
        driving = stages.track_driving(driving_path, tracker, config.guide)
    return pipeline, driving


def prepare(pipeline, frame: np.ndarray, driving) -> Prepared:
    """The source face from ``frame`` and the driving motion aligned to it, as ``GeometricPipeline.run`` does."""
    from magicportrait.pipelines import stages
    from magicportrait.tracking import FaceTracker

    start = time.perf_counter()
    guide = pipeline.config.guide
    with FaceTracker(guide.tracker) as tracker:
        source = stages.prepare_source(frame, tracker, pipeline.head_model, guide)
    motion = stages.Motion(stages.align_motion(pipeline.head_model, source, driving, guide), driving, driving.fps)
    aligned = pipeline.limit_motion(source, motion).aligned
    return Prepared(pipeline, frame, source, aligned, time.perf_counter() - start)


def make_generator(prepared: Prepared, **options):
    """(generator, set-up seconds) with the default ``GeometricConfig`` changed by ``options``."""
    from dataclasses import replace

    from magicportrait.pipelines.geometric import GeometricGenerator

    config = replace(prepared.pipeline.config.geometric, **options)
    start = time.perf_counter()
    generator = GeometricGenerator(prepared.pipeline.head_model, prepared.source, config)
    return generator, time.perf_counter() - start


def chunks(prepared: Prepared):
    """The aligned track in chunks of ``GeometricConfig.chunk_size`` frames, as ``GeometricPipeline`` renders it."""
    aligned, size = prepared.aligned, prepared.pipeline.config.geometric.chunk_size
    return [aligned.select(slice(start, start + size)) for start in range(0, aligned.num_frames, size)]


def timed(loop: Callable[[], object]) -> Callable[[], float]:
    def run_once() -> float:
        start = time.perf_counter()
        loop()
        return time.perf_counter() - start

    return run_once


def alternating_rounds(loops: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each loop once per round, in alternating order; every round's seconds per loop."""
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            seconds[name].append(loops[name]())
    return seconds


# --- 1. the generator at 512x512 ---------------------------------------------------------------------------------


def render_all(generator, parts: list) -> None:
    for part in parts:
        generator.render(part)


def guidance_maps_all(prepared: Prepared) -> None:
    from magicportrait.rendering.guidance import render_guidance

    guide = prepared.pipeline.config.guide
    for _ in render_guidance(prepared.pipeline.head_model, prepared.source, prepared.aligned, guide.chunk_size):
        pass


def stage_seconds(generator, parts: list) -> dict[str, float]:
    """Seconds of each stage over all frames: ``render`` itself, with timers put around the steps it calls (face
    re-render = posing the mesh + texture transfer; background warp); colour match + blend is the rest."""
    clock = {"face_render": 0.0, "background_warp": 0.0}
    steps = {"face_render": [(generator.head_model, "posed_vertices"), (generator.renderer, "render")],
             "background_warp": [(generator, "_background")]}
    for name, owners in steps.items():
        for owner, attribute in owners:
            setattr(owner, attribute, stopwatch(clock, name, getattr(owner, attribute)))
    try:
        total = timed(lambda: render_all(generator, parts))()
    finally:
        for owners in steps.values():
            for owner, attribute in owners:
                delattr(owner, attribute)  # the instance attribute goes; the class's method shows again
    return {**clock, "colour_match_and_blend": total - sum(clock.values())}


def stopwatch(clock: dict[str, float], name: str, function: Callable) -> Callable:
    def wrapped(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            clock[name] += time.perf_counter() - start

    return wrapped


def generator_part(prepared: Prepared, rounds: int) -> dict:
    parts = chunks(prepared)
    frames = prepared.aligned.num_frames
    default, setup_seconds = make_generator(prepared)
    first_pass = timed(lambda: render_all(default, parts))()  # the process's first render: one-time warm-up in it
    feather, _ = make_generator(prepared, blend="feather")
    plain, _ = make_generator(prepared, colour_match=False)
    seconds = alternating_rounds({
        "default": timed(lambda: render_all(default, parts)),
        "feather_blend": timed(lambda: render_all(feather, parts)),
        "no_colour_match": timed(lambda: render_all(plain, parts)),
        "guidance_maps": timed(lambda: guidance_maps_all(prepared)),
    }, rounds)
    fps = {name: frames / min(values) for name, values in seconds.items()}
    stages = stage_seconds(default, parts)
    return {
        "num_frames": frames, "size": int(prepared.source.crop.shape[0]), "chunk_size": parts[0].num_frames,
        "rounds": rounds, "setup_seconds": setup_seconds, "first_pass_fps": frames / first_pass,
        "fps": fps["default"], "fps_feather_blend": fps["feather_blend"],
        "fps_no_colour_match": fps["no_colour_match"],
        "guidance_maps_fps": fps["guidance_maps"],
        "cost_vs_guidance_maps": fps["guidance_maps"] / fps["default"],
        "feather_blend_speedup": fps["feather_blend"] / fps["default"],
        "no_colour_match_speedup": fps["no_colour_match"] / fps["default"],
        "stage_ms_per_frame": {name: 1000.0 * value / frames for name, value in stages.items()},
        "seconds_repeats": seconds, "target_fps": TARGET_FPS, "meets_target": fps["default"] >= TARGET_FPS,
    }


# --- 2. paste-back into 1080p ----------------------------------------------------------------------------------------


class NaivePaste:
    """Baseline: the crop warped onto the whole frame (inverse crop matrix) and a float alpha blend of the whole
    frame; the alpha (the crop's square, warped once) is precomputed, so only the per-frame work is timed."""

    def __init__(self, frame: np.ndarray, crop_matrix: np.ndarray, crop_size: int) -> None:
        from magicportrait.tracking.boxes import invert_affine

        self.frame = frame
        self.size = (frame.shape[1], frame.shape[0])
        self.inverse = invert_affine(crop_matrix)
        square = np.ones((crop_size, crop_size), np.float32)
        self.alpha = cv2.warpAffine(square, self.inverse, self.size, flags=cv2.INTER_LINEAR)[..., None]

    def paste(self, crop: np.ndarray) -> np.ndarray:
        warped = cv2.warpAffine(crop, self.inverse, self.size, flags=cv2.INTER_LINEAR)
        return (self.frame * (1.0 - self.alpha) + warped * self.alpha + 0.5).astype(np.uint8)


def paste_all(paste_one: Callable[[np.ndarray], object], crops: np.ndarray) -> None:
    for crop in crops:
        paste_one(crop)


def generate_and_paste(generator, parts: list, paste_one: Callable[[np.ndarray], object]) -> None:
    for part in parts:
        for crop in generator.render(part):
            paste_one(crop)


def hd_part(prepared: Prepared, rounds: int) -> dict:
    from magicportrait.compositing import PasteBack

    frame, source, frames = prepared.frame, prepared.source, prepared.aligned.num_frames
    crop_size = source.crop.shape[0]
    generator, setup_seconds = make_generator(prepared)
    parts = chunks(prepared)
    crops = np.concatenate([generator.render(part) for part in parts])  # also the warm-up
    paste = PasteBack(frame.shape[:2], source.crop_matrix, crop_size, mode="changed")
    naive = NaivePaste(frame, source.crop_matrix, crop_size)
    buffer = frame.copy()

    def ours(crop: np.ndarray) -> np.ndarray:  # as ResultWriter pastes: a new frame per call
        return paste.paste(frame, crop, source.crop)

    def ours_in_place(crop: np.ndarray) -> np.ndarray:
        return paste.paste(frame, crop, source.crop, out=buffer)

    seconds = alternating_rounds({
        "generator_and_paste": timed(lambda: generate_and_paste(generator, parts, ours)),
        "generator_and_naive_paste": timed(lambda: generate_and_paste(generator, parts, naive.paste)),
        "paste": timed(lambda: paste_all(ours, crops)),
        "paste_out": timed(lambda: paste_all(ours_in_place, crops)),
        "naive_paste": timed(lambda: paste_all(naive.paste, crops)),
    }, rounds)
    best = {name: min(values) for name, values in seconds.items()}
    rows, cols = paste.roi
    return {
        "frame_size": list(frame.shape[:2]), "num_frames": frames, "rounds": rounds,
        "crop_side_in_frame_px": float(crop_size / np.linalg.norm(source.crop_matrix[0, :2])),
        "roi_size": [rows.stop - rows.start, cols.stop - cols.start],
        "setup_seconds": setup_seconds,
        "fps": frames / best["generator_and_paste"], "naive_fps": frames / best["generator_and_naive_paste"],
        "speedup": best["generator_and_naive_paste"] / best["generator_and_paste"],
        "paste_ms": 1000.0 * best["paste"] / frames, "paste_out_ms": 1000.0 * best["paste_out"] / frames,
        "naive_paste_ms": 1000.0 * best["naive_paste"] / frames,
        "paste_speedup": best["naive_paste"] / best["paste"],
        "seconds_repeats": seconds,
    }


# --- 3. the whole demo command ---------------------------------------------------------------------------------------


def demo_child_code(output: Path, arguments: list[str], example_frames: int | None) -> str:
    """Python for a fresh process: ``magicportrait demo`` through the CLI's ``main``, with timers wrapped around
    the example writing and the reenactment loop (nothing else changed), then the figures and VmHWM."""
    return "\n".join([
        "import json, time",
        "import magicportrait.pipelines.animate as animate",
        "import magicportrait.pipelines.example as example",
        "from magicportrait.cli.main import main",
        "stats = {}",
        "write_example, generate = example.write_example, animate.GeometricPipeline._generate",
        "def timed_example(output_dir, num_frames=example.EXAMPLE_NUM_FRAMES):",
        "    start = time.perf_counter()",
        f"    paths = write_example(output_dir, {example_frames!r} or num_frames)",
        "    stats['example_seconds'] = time.perf_counter() - start",
        "    return paths",
        "def timed_generate(self, source, motion, *args):",
        "    start = time.perf_counter()",
        "    generate(self, source, motion, *args)",
        "    stats.update(generate_seconds=time.perf_counter() - start, generator_fps=self.frames_per_second,",
        "                 num_frames=motion.aligned.num_frames)",
        "example.write_example, animate.GeometricPipeline._generate = timed_example, timed_generate",
        f"assert main(['demo', '-o', {str(output)!r}, '--no-show-progress', *{arguments!r}]) == 0",
        "stats['peak_rss_mib'] = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
        " / 1024",
        f"print({CHILD_MARKER!r} + json.dumps(stats), flush=True)",
    ])


def run_demo(output: Path, arguments: list[str], example_frames: int | None) -> dict:
    """One ``demo`` in a fresh process: wall seconds (start-up and imports included) and the child's figures."""
    code = demo_child_code(output, arguments, example_frames)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"demo {arguments}: {result.stderr[-3000:]}")
    line = next(line for line in result.stdout.splitlines()[::-1] if line.startswith(CHILD_MARKER))
    stats = json.loads(line[len(CHILD_MARKER):])
    return {**stats, "seconds": seconds, "fps": stats["num_frames"] / seconds}


def demo_part(tmp: Path, rounds: int, example_frames: int | None) -> dict:
    variants = {"grid": [], "no_grid": ["--no-write-grid"]}
    samples: dict[str, list[dict]] = {name: [] for name in variants}
    names = list(variants)
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            samples[name].append(run_demo(tmp / f"demo_{name}_{index}", variants[name], example_frames))
    runs = {}
    for name, results in samples.items():
        fastest = dict(min(results, key=lambda result: result["seconds"]))
        fastest["seconds_repeats"] = [result["seconds"] for result in results]
        fastest["peak_rss_mib"] = float(np.median([result["peak_rss_mib"] for result in results]))
        runs[name] = fastest
    return {**runs, "rounds": rounds, "no_grid_speedup": runs["grid"]["seconds"] / runs["no_grid"]["seconds"]}


# --- the benchmark ---------------------------------------------------------------------------------------------------


def run(quick: bool = False) -> dict:
    """All three parts; ``quick``: a few frames, one round each (a smoke check, not for the docs)."""
    from magicportrait.pipelines.example import example_portrait

    num_frames, rounds = (8, 1) if quick else (100, 3)
    with tempfile.TemporaryDirectory(prefix="bench-geometric-") as tmp:
        tmp = Path(tmp)
        pipeline, driving = track_example(tmp / "example", num_frames)
        portrait = example_portrait()
        small = prepare(pipeline, portrait, driving)
        generator = generator_part(small, rounds)
        hd = hd_part(prepare(pipeline, portrait_in_hd(portrait), driving), rounds)
        demo = demo_part(tmp, 1 if quick else 2, 4 if quick else None)
    return {"threads": torch.get_num_threads(), "generator": generator, "hd_paste_back": hd, "demo": demo}


def summary(results: dict) -> list[str]:
    """The figures with their baselines, ratios and the target, as lines to print."""
    gen, hd, demo = results["generator"], results["hd_paste_back"], results["demo"]
    stages = gen["stage_ms_per_frame"]
    grid, no_grid = demo["grid"], demo["no_grid"]
    return [
        f"generator {gen['size']}x{gen['size']}, {gen['num_frames']} frames: {gen['fps']:.1f} frames/s (target "
        f">= {TARGET_FPS:g}: {'met' if gen['meets_target'] else 'NOT met'}; first pass {gen['first_pass_fps']:.1f}; "
        f"set-up {gen['setup_seconds']:.2f} s)",
        f"  baseline guidance maps: {gen['guidance_maps_fps']:.1f} frames/s -> geometric costs "
        f"{gen['cost_vs_guidance_maps']:.2f}x the three guidance maps",
        f"  feather blend {gen['fps_feather_blend']:.1f} frames/s ({gen['feather_blend_speedup']:.2f}x), no colour "
        f"match {gen['fps_no_colour_match']:.1f} frames/s ({gen['no_colour_match_speedup']:.2f}x)",
        f"  stages per frame: face {stages['face_render']:.1f} ms, background warp "
        f"{stages['background_warp']:.1f} ms, colour match + blend {stages['colour_match_and_blend']:.1f} ms",
        f"1080p paste-back: generator + PasteBack {hd['fps']:.1f} frames/s vs generator + naive paste "
        f"{hd['naive_fps']:.1f} ({hd['speedup']:.2f}x); paste alone {hd['paste_ms']:.2f} ms (out=: "
        f"{hd['paste_out_ms']:.2f}) vs naive {hd['naive_paste_ms']:.1f} ms ({hd['paste_speedup']:.1f}x)",
        f"demo, {grid['num_frames']} frames: {grid['seconds']:.1f} s ({grid['fps']:.2f} frames/s, peak RSS "
        f"{grid['peak_rss_mib']:.0f} MiB; example {grid['example_seconds']:.1f} s, reenact + videos "
        f"{grid['generate_seconds']:.1f} s, generator {grid['generator_fps']:.1f} frames/s)",
        f"  --no-write-grid: {no_grid['seconds']:.1f} s ({no_grid['fps']:.2f} frames/s, peak RSS "
        f"{no_grid['peak_rss_mib']:.0f} MiB) -> {demo['no_grid_speedup']:.2f}x",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Few frames, one round (a smoke check, < 60 s).")
    arguments = parser.parse_args()
    results = run(arguments.quick)
    print("\n".join(summary(results)))
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
