"""End-to-end ``magicportrait guide`` throughput and peak memory for long driving videos.

Each run happens in a fresh subprocess so its peak RSS is its own. The in-run baseline is the I/O floor:
decoding the driving video and encoding the four output videos with no tracking or rendering.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# VmHWM is the peak resident size of this process image; ru_maxrss would include the parent's size at fork time.
CHILD_PEAK = ("import sys; print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0], "
              "file=sys.stderr)")


def make_long_driving(example_dir: Path, num_frames: int) -> Path:
    """Loop the bundled example's driving video back and forth to ``num_frames`` frames."""
    from magicportrait.io.video import VideoWriter, iter_frames

    base = list(iter_frames(example_dir / "driving.mp4"))
    cycle = base + base[-2:0:-1]
    path = example_dir / f"driving_{num_frames}.mp4"
    if not path.exists():
        with VideoWriter(path, fps=25.0) as writer:
            for index in range(num_frames):
                writer.write(cycle[index % len(cycle)])
    return path


def run_child(code: str) -> tuple[float, float]:
    """Run python code in a subprocess; return (wall seconds, peak RSS MiB)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code + "\n" + CHILD_PEAK], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    peak_kib = int(result.stderr.strip().splitlines()[-1])
    return elapsed, peak_kib / 1024.0


def guide_code(source: Path, driving: Path, output: Path, write_frames: bool) -> str:
    return (
        "import torch; torch.set_num_threads(2)\n"
        "from magicportrait.pipelines.guide import GuideConfig, GuidePipeline\n"
        f"GuidePipeline(GuideConfig(show_progress=False, write_frames={write_frames})).run("
        f"{str(source)!r}, {str(driving)!r}, {str(output)!r})"
    )


def io_floor_code(driving: Path, output: Path) -> str:
    return (
        "from magicportrait.io.video import VideoWriter, iter_frames\n"
        "from contextlib import ExitStack\n"
        "import numpy as np\n"
        "with ExitStack() as stack:\n"
        "    from magicportrait.pipelines.guide import VIDEO_PRESET\n"
        f"    writers = [stack.enter_context(VideoWriter({str(output)!r} + f'/{{i}}.mp4', 25.0, preset=VIDEO_PRESET))"
        " for i in range(4)]\n"
        f"    for frame in iter_frames({str(driving)!r}):\n"
        "        for w in writers[:3]: w.write(frame)\n"
        "        writers[3].write(np.concatenate([frame] * 5, axis=1))\n"
    )


def run(frame_counts: tuple[int, ...] = (300, 3000)) -> dict:
    from magicportrait.pipelines.example import write_example

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source, _ = write_example(tmp / "example")
        for count in frame_counts:
            driving = make_long_driving(tmp / "example", count)
            (tmp / f"io_{count}").mkdir()
            io_seconds, io_peak = run_child(io_floor_code(driving, tmp / f"io_{count}"))
            seconds, peak = run_child(guide_code(source, driving, tmp / f"guide_{count}", True))
            results[count] = {"guide_fps": count / seconds, "guide_peak_rss_mib": peak,
                              "io_floor_fps": count / io_seconds, "io_floor_peak_rss_mib": io_peak,
                              "ratio_to_io_floor": (count / seconds) / (count / io_seconds)}
    counts = sorted(results)
    if len(counts) > 1:
        results["peak_rss_ratio_longest_vs_shortest"] = (results[counts[-1]]["guide_peak_rss_mib"]
                                                         / results[counts[0]]["guide_peak_rss_mib"])
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, nargs="+", default=[300, 3000])
    arguments = parser.parse_args()
    print(json.dumps(run(tuple(arguments.frames)), indent=2, default=float))
