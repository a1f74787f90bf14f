"""Batch runs (issue 17): 12 jobs of the bundled example, geometric generator, 50 frames each.

    python benchmarks/bench_batch.py            # ~6 minutes on 2 cores; writes its docs/benchmarks.md section
    python benchmarks/bench_batch.py --quick    # 4 jobs of 12 frames, printed only

Modes, each a fresh command as a user would run it, timed from start to end (process start, imports and loading
included), run one after another on an otherwise idle machine:

- baseline: one ``magicportrait animate`` process per job (the "write a for-loop" answer);
- ``magicportrait batch`` with the local engine, 1 worker and 2 workers (processes);
- ``magicportrait batch --engine ray`` with 2 CPU workers (a local Ray instance, started by the run).

The rows differ in their motion edit (``edit_yaw``), so every job is its own; they share the portrait, which a
batch worker prepares once. Also measured: what loading costs (imports, the face tracker, the head model: a fresh
process up to a loaded pipeline), i.e. what each job pays again when every job is its own process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_real_photos import write_docs  # noqa: E402 - benchmarks/ is not a package

MARKS = ("<!-- batch: start -->", "<!-- batch: end -->")
MAGICPORTRAIT = Path(sys.executable).with_name("magicportrait")
LOAD_CODE = ("import time; start = time.perf_counter(); "
             "from magicportrait.pipelines.animate import AnimateConfig, load_pipeline; "
             "from magicportrait.tracking import FaceTracker, TrackerConfig; "
             "pipeline = load_pipeline(AnimateConfig(backend='geometric')); tracker = FaceTracker(TrackerConfig()); "
             "tracker.close(); print(time.perf_counter() - start)")


def write_inputs(folder: Path, jobs: int, frames: int) -> tuple[Path, Path, Path]:
    from magicportrait.pipelines.example import write_example

    source, driving = write_example(folder / "example", num_frames=frames)
    rows = [f"{source},{driving},job{index:02d},{0.5 + index / (2 * jobs):.3f}" for index in range(jobs)]
    job_file = folder / "jobs.csv"
    job_file.write_text("\n".join(["source,driving,name,edit_yaw", *rows]) + "\n")
    return job_file, source, driving


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def naive(job_file: Path, output: Path) -> float:
    """One ``animate`` process per row, one after another."""
    seconds = 0.0
    for line in job_file.read_text().splitlines()[1:]:
        source, driving, name, yaw = line.split(",")
        seconds += timed([str(MAGICPORTRAIT), "animate", "-s", source, "-d", driving, "-o", str(output / name),
                          "--edit-yaw", yaw, "-q"])
    return seconds


def batch(job_file: Path, output: Path, *options: str) -> float:
    return timed([str(MAGICPORTRAIT), "batch", str(job_file), "-o", str(output), "-q", *options])


def job_seconds(output: Path) -> list[float]:
    """Each job's own seconds (its status.json), in row order."""
    return [json.loads(path.read_text())["seconds"] for path in sorted(output.glob("job*/status.json"))]


def run(quick: bool) -> dict:
    jobs, frames = (4, 12) if quick else (12, 50)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        job_file, _, _ = write_inputs(folder, jobs, frames)
        load = float(subprocess.run([sys.executable, "-c", LOAD_CODE], capture_output=True, text=True,
                                    check=True).stdout.strip().splitlines()[-1])
        modes = {"animate per job (baseline)": naive(job_file, folder / "naive"),
                 "batch, local, 1 worker": batch(job_file, folder / "local1"),
                 "batch, local, 2 workers": batch(job_file, folder / "local2", "--workers", "2"),
                 "batch, Ray, 2 CPU workers": batch(job_file, folder / "ray2", "--engine", "ray", "--workers", "2")}
        per_job = job_seconds(folder / "local1")
    baseline = modes["animate per job (baseline)"]
    return {"jobs": jobs, "frames": frames, "load_seconds": load, "first_job_seconds": per_job[0],
            "later_job_seconds": sum(per_job[1:]) / max(1, len(per_job) - 1),
            "modes": {name: {"seconds": seconds, "jobs_per_minute": 60 * jobs / seconds,
                             "ratio": baseline / seconds} for name, seconds in modes.items()}}


def docs_section(result: dict, machine: str) -> list[str]:
    lines = [MARKS[0], "", "## Batch runs (issue 17)", "",
             f"`python benchmarks/bench_batch.py`: {result['jobs']} jobs of the bundled example (geometric "
             f"generator, {result['frames']} frames each, the same portrait, each row its own `edit_yaw`), every "
             "mode a fresh command timed from start to end (process start, imports and loading included), one "
             f"after another. Machine: {machine}.", "",
             "| mode | seconds | jobs / minute | vs one `animate` process per job |", "|---|---|---|---|"]
    for name, row in result["modes"].items():
        lines.append(f"| {name} | {row['seconds']:.1f} | {row['jobs_per_minute']:.1f} | {row['ratio']:.2f}x |")
    lines += ["", f"Loading once: a fresh process up to a loaded geometric pipeline and face tracker takes "
              f"{result['load_seconds']:.1f} s, which one process per job pays for every job. In one batch "
              f"worker the first job took {result['first_job_seconds']:.1f} s (its portrait prepared) and each "
              f"later one {result['later_job_seconds']:.1f} s (portrait cached, pipeline kept).", "", MARKS[1]]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 jobs of 12 frames; docs/benchmarks.md untouched.")
    args = parser.parse_args()
    from run_all import machine_line

    result = run(args.quick)
    print(json.dumps(result, indent=2))
    if not args.quick:
        write_docs(ROOT / "docs" / "benchmarks.md", docs_section(result, machine_line()), MARKS)
        print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
