"""Speed of the paper's tracker (``--tracker deca-smirk`` and ``smirk``): frames/s of encoding a tracked video
(both crops from the frames and the networks), batched as the pipeline runs it, against per-frame batch 1 (the
official preprocessing's way) in the same run.

    python benchmarks/bench_flame_encoders.py            # 48 frames; writes its docs/benchmarks.md section
    python benchmarks/bench_flame_encoders.py --quick    # 8 frames, does not touch the docs

The networks' speed does not depend on their weights, so the random-weight files of ``../shared/vectors`` (the
official formats and architectures) stand in for the released ones unless ``--deca-weights`` /
``--smirk-weights`` name them. Input: the astronaut moving in 512x512 frames (``bench_tracking``), tracked first
(tracking is not timed). Each variant runs twice, the faster run counts.
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_photos import write_docs  # noqa: E402 - benchmarks/ is not a package
from bench_tracking import moving_astronaut  # noqa: E402

MARKS = ("<!-- flame-encoders: start -->", "<!-- flame-encoders: end -->")
SHARED = ROOT.parent / "shared" / "vectors"
TARGET_FPS = 10.0


def weights(args: argparse.Namespace) -> tuple[Path, Path]:
    deca = Path(args.deca_weights) if args.deca_weights else ROOT / "outputs" / "bench-encoders" / "deca_model.tar"
    if not deca.is_file():
        packed = SHARED / "deca-tiny" / "deca_model.tar.xz"
        if not packed.is_file():
            sys.exit("error: no DECA weights: pass --deca-weights PATH (or put ../shared/vectors beside the project)")
        deca.parent.mkdir(parents=True, exist_ok=True)
        with lzma.open(packed) as source, open(deca, "wb") as out:
            shutil.copyfileobj(source, out)
    smirk = Path(args.smirk_weights) if args.smirk_weights else SHARED / "smirk-tiny" / "SMIRK_em1.pt"
    if not smirk.is_file():
        sys.exit("error: no SMIRK weights: pass --smirk-weights PATH")
    return deca, smirk


def measure(frames: list, track, tracker: str, batch: int, deca: Path, smirk: Path) -> float:
    from magicportrait.tracking.flame_encoders import FlameEncoderConfig, FlameEncoders

    encoders = FlameEncoders(FlameEncoderConfig(tracker=tracker, deca_weights=str(deca), smirk_weights=str(smirk),
                                                encoder_batch=batch))
    encoders.encode_frames(frames[:batch], track.select(slice(0, batch)))  # warm-up
    best = float("inf")
    for _ in range(2):
        began = time.perf_counter()
        encoders.encode_frames(frames, track)
        best = min(best, time.perf_counter() - began)
    return len(frames) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--deca-weights")
    parser.add_argument("--smirk-weights")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from magicportrait.tracking import FaceTracker, TrackerConfig

    deca, smirk = weights(args)
    frames = moving_astronaut(8 if args.quick else args.frames)
    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        track = tracker.track_frames(frames, fps=25.0, num_frames=len(frames))
    rows = []
    for tracker_name in ("deca-smirk", "smirk"):
        single = measure(frames, track, tracker_name, 1, deca, smirk)
        batched = measure(frames, track, tracker_name, 16, deca, smirk)
        rows.append((tracker_name, single, batched))
    lines = [MARKS[0], "", "## The paper's tracker: DECA + SMIRK encoding speed (issue 16)", "",
             f"{len(frames)} tracked 512x512 frames, 224x224 crops, CPU fp32, {torch.get_num_threads()} threads, the "
             "faster of two runs (`python benchmarks/bench_flame_encoders.py`; random weights in the official "
             "formats, which run as fast as the released ones). Crops included.", "",
             "| tracker | per frame, batch 1 (baseline) | batched (16 frames) | ratio |", "|---|---|---|---|"]
    lines += [f"| `{name}` | {single:.1f} frames/s | {batched:.1f} frames/s | {batched / single:.2f}x |"
              for name, single, batched in rows]
    lines += ["", f"Target for `deca-smirk`: >= {TARGET_FPS:.0f} frames/s.", "", MARKS[1]]
    print("\n".join(lines))
    if not args.quick:
        write_docs(ROOT / "docs" / "benchmarks.md", lines, MARKS)
        print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
