"""Job files (:mod:`magicportrait.batch.jobs`): CSV and JSONL rows -> validated jobs with their own options; every
bad row reported at once; shards partition the rows."""

from __future__ import annotations

import json

import pytest

from magicportrait.batch import BatchConfig, JobFileError, load_jobs
from magicportrait.cli.args import args_from_config
from magicportrait.cli.main import main
from magicportrait.pipelines.animate import AnimateConfig

DEFAULTS = args_from_config(AnimateConfig())


@pytest.fixture
def inputs(tmp_path):
    """Stand-in files (validation looks at names and existence, not contents)."""
    for name in ("a.png", "b.jpg", "drive.mp4", "motion.npz", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def _write(folder, name: str, text: str):
    path = folder / name
    path.write_text(text)
    return path


def test_csv_rows_become_jobs_with_their_own_options(inputs):
    path = _write(inputs, "jobs.csv", "source,driving,name,edit-yaw,seed,paste_back,face\n"
                                      "a.png,drive.mp4,first,0.5,7,false,\n"
                                      "b.jpg,drive.mp4,,,,,2\n"
                                      f"{inputs / 'a.png'},motion.npz,replay,,,yes,\n")
    jobs, bad = load_jobs(path, DEFAULTS)
    assert bad == [] and [job.name for job in jobs] == ["first", "b__drive", "replay"]
    first, second, replay = jobs
    assert (first.source, first.driving, first.motion) == (inputs / "a.png", inputs / "drive.mp4", None)
    assert (first.config.guide.edit.yaw, first.config.generation.seed, first.config.paste_back) == (0.5, 7, False)
    assert first.options == {"edit-yaw": "0.5", "seed": "7", "paste_back": "false"}
    # an empty cell keeps the batch's value
    default = AnimateConfig()
    assert (second.config.guide.edit.yaw, second.config.generation.seed, second.config.guide.face) == (
        default.guide.edit.yaw, default.generation.seed, 2)
    assert (replay.driving, replay.motion, replay.config.paste_back) == (None, inputs / "motion.npz", True)


def test_jsonl_rows_and_batch_wide_defaults(inputs):
    path = _write(inputs, "jobs.jsonl", json.dumps({"source": "a.png", "driving": "drive.mp4", "steps": 3}) + "\n\n"
                  + json.dumps({"source": "a.png", "driving": "drive.mp4", "write_grid": False}) + "\n")
    defaults = args_from_config(AnimateConfig(write_grid=True, max_output_size=640))
    jobs, _ = load_jobs(path, defaults)
    assert [job.name for job in jobs] == ["a__drive__1", "a__drive__2"]  # the same pair twice: numbered
    assert (jobs[0].config.generation.steps, jobs[0].config.write_grid, jobs[0].config.max_output_size) == (
        3, True, 640)
    assert jobs[1].config.write_grid is False


def test_every_bad_row_is_reported_at_once(inputs):
    path = _write(inputs, "jobs.csv", "source,driving,name,edit_yaw,colour\n"
                                      "a.png,drive.mp4,ok,,\n"
                                      "missing.png,drive.mp4,b,abc,\n"
                                      "notes.txt,drive.mp4,c,7,\n"
                                      "a.png,a.png,../up,,\n"
                                      "a.png,drive.mp4,dup,,\n"
                                      "a.png,drive.mp4,dup,,,extra\n")
    with pytest.raises(JobFileError) as caught:
        load_jobs(path, DEFAULTS)
    message = str(caught.value)
    assert message.startswith(f"5 of 6 rows and the header of {path} are invalid; nothing was run.")
    expected = ["header: unknown column 'colour'", "row 2 (b): source missing.png does not exist",
                "row 2 (b): argument --edit-yaw: invalid float value: 'abc'", "row 3 (c): source notes.txt is not an "
                "image", "row 3 (c): --edit-yaw must be between 0 and 3, got 7.", "row 4 (../up): name '../up' "
                "cannot be a folder name", "row 4 (../up): driving a.png is not a video or a motion .npz",
                "row 5 (dup): the name 'dup' is used by more than one row", "row 6 (dup): more cells than the header"]
    lines = message.splitlines()[1:]
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected, strict=True):
        assert line.strip().startswith(start), (line, start)


def test_skip_invalid_keeps_the_good_rows(inputs):
    path = _write(inputs, "jobs.csv", "source,driving\na.png,drive.mp4\nmissing.png,drive.mp4\n")
    jobs, bad = load_jobs(path, DEFAULTS, skip_invalid=True)
    assert [job.name for job in jobs] == ["a__drive"] and [item.row for item in bad] == [2]


def test_unreadable_or_empty_job_files(tmp_path):
    from magicportrait.errors import InputError

    with pytest.raises(InputError, match="no such job file"):
        load_jobs(tmp_path / "none.csv", DEFAULTS)
    with pytest.raises(InputError, match="no jobs in the file"):
        load_jobs(_write(tmp_path, "empty.csv", "source,driving\n"), DEFAULTS)
    with pytest.raises(InputError, match="line 2: not JSON"):
        load_jobs(_write(tmp_path, "bad.jsonl", '{"source": "a"}\n{oops\n'), DEFAULTS)


def test_the_cli_refuses_a_bad_file_and_writes_nothing(inputs, capsys):
    path = _write(inputs, "jobs.csv", "source,driving\nmissing.png,drive.mp4\n")
    assert main(["batch", str(path), "-o", str(inputs / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: 1 of 1 rows of") and "row 1 (missing__drive): source missing.png" in error
    assert not (inputs / "out").exists()


@pytest.mark.parametrize("environment, expected", [
    ({}, (0, 1)),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"}, (2, 3)),
    ({"RANK": "1", "WORLD_SIZE": "2"}, (1, 2)),
])
def test_shards_come_from_the_scheduler(monkeypatch, environment, expected):
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert BatchConfig().shard() == expected
    assert BatchConfig(shard_index=0, num_shards=4).shard() == (0, 4)  # the options win


def test_missing_model_files_are_row_problems(inputs, monkeypatch):
    for name in ("MAGICPORTRAIT_WEIGHTS", "MAGICPORTRAIT_FLAME", "HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(inputs / "no-hub-cache"))
    path = _write(inputs, "jobs.csv", "source,driving,backend,flame\n"
                                      "a.png,drive.mp4,diffusion,\n"
                                      "a.png,drive.mp4,geometric,missing.pkl\n")
    with pytest.raises(JobFileError) as caught:
        load_jobs(path, DEFAULTS)
    lines = str(caught.value).splitlines()[1:]
    assert "backend diffusion needs the released weights" in lines[0]
    assert "The FLAME model file given with --flame does not exist: missing.pkl" in lines[1]
