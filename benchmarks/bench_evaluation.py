"""The evaluation suite (issue 6): seconds to evaluate a 100-frame 512x512 video with every metric, and peak memory.

    python benchmarks/bench_evaluation.py            # full (a few minutes on 2 cores)
    python benchmarks/bench_evaluation.py --quick    # 20 frames, a smoke check

The video: the bundled example's driving video (100 frames, 512x512) as the ground truth and the driving video, and
the geometric generator's reenactment of the portrait with it as the generated video (self-reenactment, so every
metric applies). Measured with ``Evaluator`` after the networks are loaded (their loading is reported apart): all
metrics together, and each group alone (identity, image quality, distributions, motion + stability) to see where the
time goes. Baseline in the same run: all metrics with batch size 1 (one frame per network call). Peak memory is
the process's peak RSS (VmHWM) in a fresh process per configuration.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from child import call_in_child, peak_rss_mib

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 60.0  # the target for 100 frames at 512x512
GROUPS = {"identity (CSIM)": "csim", "image quality (LPIPS, PSNR, SSIM, LMD)": "lpips,psnr,ssim,lmd",
          "distributions (FID, KID, FVD)": "fid,kid,fvd", "motion and stability (APD, AED, RMSEs, jitter, flicker)":
          "apd,p_rmse,aed,e_rmse,jitter,flicker"}


def make_videos(folder: Path, num_frames: int) -> dict[str, Path]:
    """The example (portrait + driving video) and the geometric reenactment of it, written into ``folder``."""
    from magicportrait.pipelines.animate import AnimateConfig, GeometricPipeline
    from magicportrait.pipelines.example import write_example
    from magicportrait.pipelines.guide import GuideConfig

    source, driving = write_example(folder / "example", num_frames=num_frames)
    config = AnimateConfig(write_grid=False, guide=GuideConfig(show_progress=False))
    GeometricPipeline(config).run(source, driving, folder / "result")
    return {"source": source, "driving": driving, "generated": folder / "result" / "result.mp4"}


def measure(videos: dict[str, str], metrics: str, batch_size: int) -> dict:
    """Seconds (networks loaded beforehand) and peak RSS of one evaluation: run in this process."""
    from magicportrait.evaluation.suite import EvaluationConfig, Evaluator
    from magicportrait.io.image import load_image
    from magicportrait.pipelines.evaluate import read_frames

    config = EvaluationConfig(metrics=metrics, batch_size=batch_size, show_progress=False, write_plots=False)
    generated, fps = read_frames(videos["generated"])
    driving, _ = read_frames(videos["driving"])
    source = load_image(videos["source"])
    evaluator = Evaluator(config)
    began = time.perf_counter()
    evaluator.evaluate(generated[:16], driving[:16], source, driving[:16], fps=fps)  # loads the networks
    load_seconds = time.perf_counter() - began
    began = time.perf_counter()
    report = evaluator.evaluate(generated, driving, source, driving, fps=fps)
    seconds = time.perf_counter() - began
    return {"metrics": metrics, "batch_size": batch_size, "frames": int(len(generated)), "seconds": seconds,
            "first_call_seconds": load_seconds, "peak_rss_mib": peak_rss_mib(),
            "values": {k: float(v) for k, v in report.values.items()}}


def _in_child(videos: dict[str, Path], metrics: str, batch_size: int) -> dict:
    """:func:`measure` in a fresh process, so each configuration's peak memory is its own."""
    return call_in_child("bench_evaluation", "measure", {k: str(v) for k, v in videos.items()}, metrics, batch_size)


def run(quick: bool = False) -> dict:
    num_frames = 20 if quick else 100
    with tempfile.TemporaryDirectory() as tmp:
        videos = make_videos(Path(tmp), num_frames)
        everything = _in_child(videos, "all", 8)
        unbatched = _in_child(videos, "all", 1)
        groups = {name: _in_child(videos, metrics, 8) for name, metrics in GROUPS.items()}
    return {"num_frames": num_frames, "frame_size": [512, 512], "all": everything, "batch_size_1": unbatched,
            "groups": groups, "target_seconds": TARGET_SECONDS}


def summary(results: dict) -> list[str]:
    everything, unbatched = results["all"], results["batch_size_1"]
    lines = [f"all metrics, {results['num_frames']} frames 512x512: {everything['seconds']:.1f} s "
             f"(target <= {TARGET_SECONDS:.0f} s per 100 frames), peak RSS {everything['peak_rss_mib']:.0f} MiB; "
             f"batch size 1: {unbatched['seconds']:.1f} s ({unbatched['seconds'] / everything['seconds']:.2f}x)"]
    lines += [f"  {name}: {part['seconds']:.1f} s, peak RSS {part['peak_rss_mib']:.0f} MiB"
              for name, part in results["groups"].items()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 frames (smoke check).")
    args = parser.parse_args()
    results = run(args.quick)
    print("\n".join(summary(results)))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
