"""``magicportrait batch`` on this machine: each job writes what ``animate`` writes plus its status; reruns skip
finished jobs, redo interrupted ones and retry failed ones on request; one portrait is prepared once per worker;
``--evaluate`` writes the summary with metrics and a contact sheet; the tiny diffusion release loads once."""

from __future__ import annotations

import json

import numpy as np
import pytest

from batch_inputs import FAST, write_jobs
from magicportrait.batch.jobs import load_jobs
from magicportrait.batch.worker import BatchWorker
from magicportrait.cli.args import args_from_config
from magicportrait.cli.main import main
from magicportrait.io.video import iter_frames
from magicportrait.pipelines.animate import AnimateConfig
from magicportrait.types import HeadTrack

ANIMATE_FILES = {"aligned_head.npz", "result.mp4", "result_crop.mp4", "source.png", "source_face.npz",
                 "source_track.npz", "track.npz"}


def _frames(path) -> np.ndarray:
    return np.stack(list(iter_frames(path))).astype(np.float64)


def _status(folder) -> dict:
    return json.loads((folder / "status.json").read_text())


@pytest.fixture(scope="module")
def batch_run(batch_inputs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    jobs = write_jobs(folder, [f"{batch_inputs / 'source.png'},{batch_inputs / 'driving.mp4'},a,",
                               f"{batch_inputs / 'source.png'},{batch_inputs / 'driving.mp4'},b,0.5",
                               f"{batch_inputs / 'source.png'},{batch_inputs / 'noface.mp4'},noface,"],
                      header="source,driving,name,edit_yaw")
    output = folder / "out"
    code = main(["batch", str(jobs), "-o", str(output), *FAST, "-q"])
    return jobs, output, code


def test_each_job_writes_what_animate_writes(batch_run, batch_inputs, tmp_path):
    jobs, output, code = batch_run
    assert code == 1  # one job failed
    direct = tmp_path / "direct"
    assert main(["animate", "-s", str(batch_inputs / "source.png"), "-d", str(batch_inputs / "driving.mp4"),
                 "-o", str(direct), *FAST, "-q"]) == 0
    written = {path.name for path in (output / "a").iterdir() if not path.name.startswith(".")}
    assert written == ANIMATE_FILES | {"status.json"}
    np.testing.assert_allclose(HeadTrack.load(output / "a" / "aligned_head.npz").rotation,
                               HeadTrack.load(direct / "aligned_head.npz").rotation, atol=1e-5)
    assert np.abs(_frames(output / "a" / "result_crop.mp4") - _frames(direct / "result_crop.mp4")).max() <= 2
    status = _status(output / "a")
    assert (status["state"], status["frames"], status["backend"], status["row"]) == ("done", 8, "geometric", 1)
    assert status["seconds"] > 0 and status["options"] == {}
    # row b's own option: half the head turn of row a
    turn = [np.abs(HeadTrack.load(output / name / "aligned_head.npz").rotation[:, 1]).max() for name in "ab"]
    assert turn[1] == pytest.approx(0.5 * turn[0], rel=0.15)


def test_a_failed_job_is_recorded_and_the_others_finish(batch_run):
    _, output, _ = batch_run
    status = _status(output / "noface")
    assert status["state"] == "failed" and "no usable face found" in status["error"].lower()
    assert sorted(path.name for path in (output / "noface").iterdir()) == ["status.json"]  # nothing half-written
    summary = (output / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("name,row,state,seconds,backend,frames")
    assert [line.split(",")[:3] for line in summary[1:]] == [["a", "1", "done"], ["b", "2", "done"],
                                                              ["noface", "3", "failed"]]
    assert "## Failed" in (output / "summary.md").read_text()


def test_reruns_skip_done_redo_interrupted_and_retry_failed_on_request(batch_run, capsys):
    jobs, output, _ = batch_run
    result = output / "a" / "result.mp4"
    before = {name: (output / name / "status.json").stat().st_mtime_ns for name in ("a", "b", "noface")}
    result_time = result.stat().st_mtime_ns
    interrupted = _status(output / "b") | {"state": "running"}  # as a killed run leaves it
    (output / "b" / "status.json").write_text(json.dumps(interrupted))
    assert main(["batch", str(jobs), "-o", str(output), *FAST, "-q"]) == 0  # nothing new failed
    assert "ran 1 (1 done, 0 failed), 1 already done, 1 failed before (not retried)" in capsys.readouterr().out
    assert result.stat().st_mtime_ns == result_time and _status(output / "b")["state"] == "done"
    assert (output / "noface" / "status.json").stat().st_mtime_ns == before["noface"]
    assert main(["batch", str(jobs), "-o", str(output), *FAST, "-q", "--retry-failed"]) == 1
    assert (output / "noface" / "status.json").stat().st_mtime_ns != before["noface"]


def test_a_worker_prepares_a_portrait_once_and_loads_its_pipeline_once(batch_inputs, tmp_path):
    jobs_file = write_jobs(tmp_path, [f"{batch_inputs / 'source.png'},{batch_inputs / 'driving.mp4'},{name},{yaw}"
                                      for name, yaw in (("one", "1"), ("two", "0.5"), ("three", "0"))],
                           header="source,driving,name,edit_yaw")
    defaults = args_from_config(AnimateConfig()) | {"size": 128, "max_frames": 4, "show_progress": False,
                                                    "write_grid": False}
    jobs, _ = load_jobs(jobs_file, defaults)
    worker = BatchWorker(tmp_path / "out")
    statuses = [worker(job) for job in jobs]
    assert [status["state"] for status in statuses] == ["done"] * 3
    assert (worker.cache.misses, worker.cache.hits, len(worker._pipelines)) == (1, 2, 1)
    source_faces = [np.load(tmp_path / "out" / name / "source_face.npz")["crop"] for name in ("one", "three")]
    np.testing.assert_array_equal(*source_faces)  # the cached portrait is the one prepared for the first job
    worker.close()


def test_evaluate_writes_metrics_and_a_contact_sheet(batch_inputs, tmp_path):
    from magicportrait.io.image import load_image

    jobs = write_jobs(tmp_path, [f"{batch_inputs / 'source.png'},{batch_inputs / 'driving.mp4'},a"])
    output = tmp_path / "out"
    assert main(["batch", str(jobs), "-o", str(output), "--size", "128", "--max-frames", "8", "-q"]) == 0
    assert "metrics" not in _status(output / "a") and not (output / "contact_sheet.png").exists()
    # evaluating afterwards evaluates the finished job without making it again
    result_time = (output / "a" / "result.mp4").stat().st_mtime_ns
    assert main(["batch", str(jobs), "-o", str(output), "--size", "128", "--max-frames", "8", "-q",
                 "--evaluate"]) == 0
    assert (output / "a" / "result.mp4").stat().st_mtime_ns == result_time
    metrics = _status(output / "a")["metrics"]
    assert set(metrics) == {"csim", "apd", "aed", "motion_transfer", "artefact_frames", "duplication", "face_lost"}
    assert metrics["csim"] > 0.5 and metrics["face_lost"] == 0.0 and (output / "a" / "metrics" / "metrics.json"
                                                                      ).is_file()
    header = (output / "summary.csv").read_text().splitlines()[0]
    assert header.endswith("csim,apd,aed,motion_transfer,artefact_frames,duplication,face_lost")
    sheet = load_image(output / "contact_sheet.png")
    assert sheet.shape == (24 + 192 + 8, 7 * 192, 3)  # caption + one row: source, 3 x (driving, result)
    assert "| **mean** |" in (output / "summary.md").read_text()


def test_the_tiny_diffusion_release_loads_once_for_many_jobs(batch_inputs, release, tmp_path):
    jobs_file = write_jobs(tmp_path, [f"{batch_inputs / 'source.png'},{batch_inputs / 'driving.mp4'},s{seed},{seed}"
                                      for seed in (1, 2)], header="source,driving,name,seed")
    defaults = args_from_config(AnimateConfig()) | {"size": 64, "max_frames": 3, "steps": 1, "weights": str(release),
                                                    "show_progress": False, "write_grid": False}
    jobs, _ = load_jobs(jobs_file, defaults)
    worker = BatchWorker(tmp_path / "out")
    assert [worker(job)["backend"] for job in jobs] == ["diffusion", "diffusion"]
    assert len(worker._pipelines) == 1
    first, second = (_frames(tmp_path / "out" / name / "result_crop.mp4") for name in ("s1", "s2"))
    assert first.shape == (3, 64, 64, 3) and np.abs(first - second).mean() > 1  # each row's own seed
    worker.close()


def test_a_row_can_replay_a_saved_motion(batch_run, batch_inputs, tmp_path):
    _, output, _ = batch_run
    motion = output / "a" / "aligned_head.npz"
    jobs = write_jobs(tmp_path, [f"{batch_inputs / 'source.png'},{motion},replay"])
    assert main(["batch", str(jobs), "-o", str(tmp_path / "out"), *FAST, "-q"]) == 0
    status = _status(tmp_path / "out" / "replay")
    assert status["state"] == "done" and status["driving"] == str(motion)
    np.testing.assert_allclose(HeadTrack.load(tmp_path / "out" / "replay" / "aligned_head.npz").rotation,
                               HeadTrack.load(motion).rotation, atol=1e-6)
