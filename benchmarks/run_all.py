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
    import bench_guide
    import bench_rendering
    import bench_tracking

    tracking = bench_tracking.run(60 if args.quick else 300)
    rendering = bench_rendering.run(num_frames=20 if args.quick else 120, size=512)
    guide = bench_guide.run((60, 120) if args.quick else (300, 3000))
    report = {"machine": machine_line(), "tracking": tracking, "rendering": rendering, "guide": guide}
    print(json.dumps(report, indent=2, default=float))
    if not args.quick:
        write_markdown(Path(args.output), report)
        print(f"wrote {args.output}")


def write_markdown(path: Path, report: dict) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Written by `python benchmarks/run_all.py` (do not edit by hand). Machine: " + report["machine"] + ".",
        "",
        "## Foundation: tracking, rendering, `guide` (issue 2)",
        "",
        "```json",
        json.dumps({k: report[k] for k in ("tracking", "rendering", "guide")}, indent=2, default=float),
        "```",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
