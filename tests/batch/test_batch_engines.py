"""Where batch jobs run: a local Ray instance (the same results as the local engine), workers killed mid-job (the
job runs again elsewhere, nothing half-written stays), and ``torchrun`` processes sharing the rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from batch_inputs import FAST, write_jobs
from magicportrait.cli.main import main
from magicportrait.io.video import iter_frames
from magicportrait.types import HeadTrack

SLOW_JOB = ["--size", "256", "--max-frames", "12"]  # long enough (~2 s) to be caught running


def _frames(path) -> np.ndarray:
    return np.stack(list(iter_frames(path))).astype(np.float64)


def _status(folder: Path) -> dict:
    try:
        return json.loads((folder / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _pair_jobs(folder: Path, inputs: Path, names: tuple[str, ...]) -> Path:
    return write_jobs(folder, [f"{inputs / 'source.png'},{inputs / 'driving.mp4'},{name}" for name in names])


def _same_results(one: Path, other: Path) -> None:
    files = {path.name for path in one.iterdir()}
    assert files == {path.name for path in other.iterdir()}
    head = "aligned_head.npz" if (one / "aligned_head.npz").is_file() else "guidance/aligned_head.npz"  # diffusion
    np.testing.assert_allclose(HeadTrack.load(one / head).rotation, HeadTrack.load(other / head).rotation, atol=1e-4)
    assert np.abs(_frames(one / "result_crop.mp4") - _frames(other / "result_crop.mp4")).mean() < 0.5


def test_ray_gives_the_local_engine_results(batch_inputs, release, tmp_path):
    pytest.importorskip("ray")
    pair = f"{batch_inputs / 'source.png'},{batch_inputs / 'driving.mp4'}"
    jobs = write_jobs(tmp_path, [f"{pair},a,,", f"{pair},b,,", f"{pair},c,diffusion,{release}"],
                      header="source,driving,name,backend,weights")
    options = [*FAST, "-q", "--workers", "2", "--steps", "1"]
    assert main(["batch", str(jobs), "-o", str(tmp_path / "local"), *options]) == 0
    assert main(["batch", str(jobs), "-o", str(tmp_path / "ray"), *options, "--engine", "ray"]) == 0
    assert _status(tmp_path / "ray" / "c")["backend"] == "diffusion"
    for name in ("a", "b", "c"):
        _same_results(tmp_path / "local" / name, tmp_path / "ray" / name)
        assert _status(tmp_path / "ray" / name)["pid"] != os.getpid()  # ran in a Ray worker
    local_rows = (tmp_path / "local" / "summary.csv").read_text().splitlines()
    ray_rows = (tmp_path / "ray" / "summary.csv").read_text().splitlines()
    assert [row.split(",")[:3] for row in ray_rows] == [row.split(",")[:3] for row in local_rows]


def test_ray_reports_bad_rows_before_starting(batch_inputs, tmp_path, capsys):
    pytest.importorskip("ray")
    jobs = write_jobs(tmp_path, [f"{batch_inputs / 'missing.png'},{batch_inputs / 'driving.mp4'},a"])
    assert main(["batch", str(jobs), "-o", str(tmp_path / "out"), "--engine", "ray"]) == 2
    assert "row 1 (a): source" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_without_ray_the_engine_says_how_to_install_it(batch_inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    jobs = _pair_jobs(tmp_path, batch_inputs, ("a",))
    assert main(["batch", str(jobs), "-o", str(tmp_path / "out"), "--engine", "ray"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --engine ray needs Ray: pip install") and not (tmp_path / "out").exists()


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_job_whose_worker_is_killed_runs_again(batch_inputs, tmp_path, engine):
    if engine == "ray":
        pytest.importorskip("ray")
    jobs = _pair_jobs(tmp_path, batch_inputs, ("a", "b"))
    output = tmp_path / "out"
    command = [sys.executable, "-m", "magicportrait.batch", str(jobs), "-o", str(output), *SLOW_JOB,
               "--no-write-grid", "--engine", engine, "--workers", "2", "--no-show-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and process.poll() is None:
        status = _status(output / "a")
        if status.get("state") == "running" and status["pid"] != process.pid:
            os.kill(status["pid"], signal.SIGKILL)
            killed = status["pid"]
        time.sleep(0.02)
    out, err = process.communicate(timeout=300)
    assert killed is not None, err
    assert process.returncode == 0, err
    assert "running it again" in err
    for name in ("a", "b"):
        status = _status(output / name)
        assert status["state"] == "done" and status["pid"] != killed
        leftovers = [path.name for path in (output / name).iterdir() if path.name.startswith(".staging")]
        assert leftovers == []
    assert "ran 2 (2 done, 0 failed)" in out


def test_torchrun_processes_share_the_rows(batch_inputs, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun is not installed beside this Python")
    jobs = _pair_jobs(tmp_path, batch_inputs, ("a", "b", "c", "d"))
    output = tmp_path / "out"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29517", "-m",
                             "magicportrait.batch", str(jobs), "-o", str(output), *FAST, "-q"],
                            capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stderr
    pids = {name: _status(output / name)["pid"] for name in "abcd"}
    assert pids["a"] == pids["c"] and pids["b"] == pids["d"] and pids["a"] != pids["b"]  # row i -> rank i % 2
    summary = (output / "summary.csv").read_text().splitlines()[1:]  # the last shard to end sees every row
    assert [row.split(",")[2] for row in summary] == ["done"] * 4


def test_ray_joins_a_running_cluster(batch_inputs, tmp_path):
    pytest.importorskip("ray")
    ray_command = Path(sys.executable).with_name("ray")
    if not ray_command.is_file():
        pytest.skip("the ray command is not installed beside this Python")
    started = subprocess.run([str(ray_command), "start", "--head", "--num-cpus", "2", "--include-dashboard=false",
                              "--disable-usage-stats"], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        jobs = _pair_jobs(tmp_path, batch_inputs, ("a", "b"))
        assert main(["batch", str(jobs), "-o", str(tmp_path / "out"), *FAST, "-q", "--engine", "ray",
                     "--address", "auto"]) == 0
        assert [_status(tmp_path / "out" / name)["state"] for name in "ab"] == ["done", "done"]
        import ray

        assert not ray.is_initialized()  # the run disconnected; the cluster is left running for others
    finally:
        subprocess.run([str(ray_command), "stop", "--force"], capture_output=True, timeout=120)
