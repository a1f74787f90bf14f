"""The output folder is safe: one run at a time, a killed run leaves nothing, a rerun replaces the result as a whole,
normal permissions, ``-o x.mp4`` refused, RGBA portraits keep their alpha in PNG frames."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import magicportrait
from magicportrait.cli.main import check_output_folder, main
from magicportrait.errors import OutputError
from magicportrait.io import output as output_module
from magicportrait.io.atomic import atomic_dir, staged_output_dir
from magicportrait.io.image import load_alpha, load_image, save_image
from magicportrait.io.output import LOCK_NAME, MANIFEST_NAME, output_folder, read_manifest
from magicportrait.pipelines.outputs import ResultWriter
from magicportrait.types import save_npz

SRC = str(Path(magicportrait.__file__).resolve().parents[1])


def run_python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", code], env=env, text=True, **kwargs)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = run_python("import os; print(os.getpid())", stdout=subprocess.PIPE)
    pid = int(child.communicate()[0])
    assert child.returncode == 0
    return pid


def write_result(folder: Path, files: dict[str, str]) -> None:
    """One complete run into ``folder`` writing ``files`` (name -> text; "a/b" makes folder a)."""
    with output_folder(folder) as out, out.stage() as stage:
        for name, text in files.items():
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_text(text)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------------------------- the lock


def test_a_second_run_is_refused_naming_the_running_one(tmp_path):
    out = tmp_path / "out"
    holder = run_python(f"from magicportrait.io.output import output_folder\n"
                        f"import sys\n"
                        f"with output_folder({str(out)!r}):\n"
                        f"    print('locked', flush=True)\n"
                        f"    sys.stdin.read()\n", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError) as refused:
            with output_folder(out):
                pytest.fail("a second run got the lock")
        message = str(refused.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message and "in use" in message
        assert "-c" in message  # the holder's command line
    finally:
        holder.communicate("")  # closing its stdin ends it
    assert holder.returncode == 0
    assert not (out / LOCK_NAME).exists()  # removed on exit
    with output_folder(out):  # and free again
        pass


def test_a_second_run_from_the_same_process_is_refused(tmp_path):
    with output_folder(tmp_path / "out"):
        with pytest.raises(OutputError, match=f"pid {os.getpid()} "):
            with output_folder(tmp_path / "out"):
                pass
    assert os.listdir(tmp_path / "out") == []


def test_a_stale_lock_of_a_dead_run_is_taken_over(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    pid = dead_pid()
    (out / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "command": "magicportrait x",
                                             "started": "2024-01-01 00:00:00"}))
    with caplog.at_level(logging.INFO, logger="magicportrait.io.output"), output_folder(out):
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid()
    assert f"pid {pid} " in caplog.text and "no longer running" in caplog.text
    assert not (out / LOCK_NAME).exists()


def test_without_flock_a_live_pid_holds_and_a_dead_one_is_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(output_module, "_try_flock", lambda fd: None)  # e.g. a network file system
    out = tmp_path / "out"
    out.mkdir()
    host = socket.gethostname()
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": host}))  # alive: pytest's parent
    with pytest.raises(OutputError, match=f"pid {os.getppid()} .*delete .*{LOCK_NAME}"):
        with output_folder(out):
            pass
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": "another-host"}))  # cannot be checked
    with pytest.raises(OutputError, match="another-host"):
        with output_folder(out):
            pass
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": host}))
    with output_folder(out):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(OutputError, match=f"pid {os.getpid()} "):  # the exclusive lock holds too
            with output_folder(out):
                pass
    assert os.listdir(out) == []


def test_a_locked_folder_is_refused_before_any_tracking(tmp_path, capsys):
    out = tmp_path / "out"
    with output_folder(out):  # the inputs do not exist: the refusal must come before they are read
        code = main(["animate", "-s", str(tmp_path / "none.png"), "-d", str(tmp_path / "none.mp4"), "-o", str(out),
                     "--backend", "geometric", "--no-show-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "in use by another magicportrait run" in err and f"pid {os.getpid()}" in err


# ---------------------------------------------------------------------------------------------- a killed run


KILLED_RUN = """
import os, signal, sys
from magicportrait.io.output import output_folder
with output_folder(sys.argv[1]) as out, out.stage() as stage:
    (stage / "guidance").mkdir()
    (stage / "guidance" / "frame_0001.png").write_bytes(b"partial")
    with open(stage / "result.mp4", "wb") as f:
        f.write(b"half a vid")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("earlier", [False, True])
def test_a_run_killed_mid_write_leaves_no_partial_result(tmp_path, earlier):
    out = tmp_path / "out"
    if earlier:
        write_result(out, {"result.mp4": "the earlier result"})
    env = {**os.environ, "PYTHONPATH": SRC}
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(out)], env=env)
    assert killed.returncode == -signal.SIGKILL
    staging = [name for name in os.listdir(out) if name.startswith(".staging-")]
    assert len(staging) == 1 and (out / staging[0] / "result.mp4").is_file()  # what the next run must clean up
    assert (out / "result.mp4").exists() == earlier and not (out / "guidance").exists()

    with output_folder(out):  # the next run into the same place
        assert not (out / staging[0]).exists()
    if earlier:
        assert (out / "result.mp4").read_text() == "the earlier result"
        assert sorted(os.listdir(out)) == [MANIFEST_NAME, "result.mp4"]
    else:
        assert os.listdir(out) == []


def test_a_live_runs_staging_is_not_removed_without_flock(tmp_path, monkeypatch):
    monkeypatch.setattr(output_module, "_try_flock", lambda fd: None)
    out = tmp_path / "out"
    (out / f".staging-{os.getppid()}-abcd").mkdir(parents=True)  # a live process: not ours to delete
    (out / f".staging-{dead_pid()}-abcd").mkdir()
    (out / ".staging-old1x2").mkdir()  # an older version's name, without a pid
    with output_folder(out):
        pass
    assert os.listdir(out) == [f".staging-{os.getppid()}-abcd"]


# ----------------------------------------------------------------------------------------------------- failures


def test_a_failed_run_leaves_no_folder_it_created(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError):
        with output_folder(out) as folder:
            assert out.is_dir()  # created up front: a bad path fails before the slow work
            with folder.stage() as stage:
                (stage / "result.mp4").write_text("half")
                raise RuntimeError("no face")
    assert os.listdir(tmp_path) == []


def test_a_failed_run_leaves_the_earlier_result_intact(tmp_path):
    out = tmp_path / "out"
    write_result(out, {"result.mp4": "one", "guidance/frame_0001.png": "map"})
    before = listing(out)
    with pytest.raises(KeyboardInterrupt):
        with output_folder(out) as folder, folder.stage() as stage:
            (stage / "result.mp4").write_text("two")
            raise KeyboardInterrupt
    assert listing(out) == before and (out / "result.mp4").read_text() == "one"


def test_a_failed_move_puts_the_earlier_result_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_result(out, {"result.mp4": "one", "guidance/frame_0001.png": "map"})
    before, manifest = listing(out), (out / MANIFEST_NAME).read_text()
    replace = os.replace

    def failing_replace(source, target):
        if Path(source).name == "result.mp4" and Path(source).parent.name.startswith(".staging-"):
            raise OSError(28, "No space left on device")
        replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OutputError, match="No space left.*earlier result"):
        with output_folder(out) as folder, folder.stage() as stage:
            (stage / "grid.mp4").write_text("two")  # moved in first (sorted), then taken back out
            (stage / "result.mp4").write_text("two")
    assert listing(out) == before and (out / "result.mp4").read_text() == "one"
    assert (out / MANIFEST_NAME).read_text() == manifest


def test_an_unwritable_path_says_so(tmp_path):
    (tmp_path / "file").write_text("a file where a folder should go")
    with pytest.raises(OutputError, match="Cannot write to"):
        with output_folder(tmp_path / "file" / "out"):
            pass
    assert os.listdir(tmp_path) == ["file"]


# ------------------------------------------------------------------------------------------------------ reruns


def test_a_rerun_replaces_the_earlier_result_as_a_whole(tmp_path, caplog):
    out = tmp_path / "out"
    write_result(out, {"result.mp4": "diffusion", "guidance/frame_0001.png": "map", "grid.mp4": "grid"})
    (out / "my notes.txt").write_text("the user's own file")
    with caplog.at_level(logging.INFO, logger="magicportrait.io.output"):
        write_result(out, {"result.mp4": "geometric", "track.npz": "track"})
    assert f"Replacing the earlier result in {out}/" in caplog.text
    assert listing(out) == [MANIFEST_NAME, "my notes.txt", "result.mp4", "track.npz"]
    assert (out / "result.mp4").read_text() == "geometric"
    assert (out / "my notes.txt").read_text() == "the user's own file"
    assert read_manifest(out) == ["result.mp4", "track.npz"]


def test_a_first_run_into_a_folder_of_the_users_files_keeps_them(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / "portrait.png").write_text("mine")
    with caplog.at_level(logging.INFO, logger="magicportrait.io.output"):
        write_result(out, {"result.mp4": "new"})
    assert "Replacing" not in caplog.text
    assert listing(out) == [MANIFEST_NAME, "portrait.png", "result.mp4"]


def test_a_run_record_cannot_point_outside_the_folder(tmp_path):
    out = tmp_path / "out"
    write_result(out, {"result.mp4": "one"})
    (tmp_path / "precious").write_text("not in out/")
    record = json.loads((out / MANIFEST_NAME).read_text())
    (out / MANIFEST_NAME).write_text(json.dumps({**record, "entries": ["../precious", "/etc", ".", "result.mp4"]}))
    assert read_manifest(out) == ["result.mp4"]
    write_result(out, {"grid.mp4": "two"})
    assert (tmp_path / "precious").read_text() == "not in out/"
    assert listing(out) == [MANIFEST_NAME, "grid.mp4"]


def test_staged_output_dir_locks_and_replaces(tmp_path):
    out = tmp_path / "release"
    with staged_output_dir(out) as stage:
        (stage / "old.json").write_text("{}")
        with pytest.raises(OutputError, match="in use"):
            with output_folder(out):
                pass
    with staged_output_dir(out) as stage:
        (stage / "new.json").write_text("{}")
    assert listing(out) == [MANIFEST_NAME, "new.json"]


# ------------------------------------------------------------------------------------------------- permissions


@pytest.mark.parametrize(("mask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_get_the_modes_the_umask_gives(tmp_path, mask, file_mode, folder_mode):
    def mode(path: Path) -> int:
        return path.stat().st_mode & 0o777

    with umask(mask):
        npz = save_npz(tmp_path / "track.npz", "track", {"x": np.zeros(3)}, {})
        with atomic_dir(tmp_path / "clip") as clip:
            (clip / "a.txt").write_text("a")
        out = tmp_path / "new" / "out"
        with output_folder(out) as folder, folder.stage() as stage:
            save_image(stage / "source.png", np.zeros((32, 32, 3), np.uint8))
            save_npz(stage / "aligned_head.npz", "head", {"x": np.zeros(3)}, {})
            (stage / "guidance").mkdir()
    assert mode(npz) == file_mode and mode(tmp_path / "clip") == folder_mode
    assert mode(out / "source.png") == file_mode and mode(out / "aligned_head.npz") == file_mode
    assert mode(out / MANIFEST_NAME) == file_mode
    assert mode(out) == folder_mode and mode(tmp_path / "new") == folder_mode and mode(out / "guidance") == folder_mode


# ------------------------------------------------------------------------------------------------------- -o x.mp4


@pytest.mark.parametrize("command", ["animate", "guide", "demo"])
def test_a_video_file_name_for_the_output_folder_is_refused(tmp_path, capsys, command):
    target = tmp_path / "result.mp4"
    inputs = [] if command == "demo" else ["-s", str(tmp_path / "none.png"), "-d", str(tmp_path / "none.mp4")]
    assert main([command, *inputs, "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: -o takes a folder") and f"-o {tmp_path / 'result'}" in err
    assert os.listdir(tmp_path) == []


def test_output_folder_argument_rules(tmp_path):
    (tmp_path / "clip.mp4").mkdir()  # an existing folder is accepted whatever its name
    assert check_output_folder(tmp_path / "clip.mp4", "animate") == tmp_path / "clip.mp4"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output_folder(tmp_path / "file", "animate")
    with pytest.raises(OutputError, match=r"writes .*out[/\\]result\.mp4"):
        check_output_folder(tmp_path / "out.MOV", "animate", "result.mp4")
    assert check_output_folder(tmp_path / "out.v2", "animate") == tmp_path / "out.v2"


# ----------------------------------------------------------------------------------------------- RGBA portraits


def rgba_portrait(path: Path, width: int = 64, height: int = 48) -> np.ndarray:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba[:, :8, 3] = 0  # a transparent left edge
    Image.fromarray(rgba).save(path)
    return rgba


def test_an_rgba_portrait_loads_as_rgb_and_says_so(tmp_path, caplog):
    rgba = rgba_portrait(tmp_path / "cutout.png")
    with caplog.at_level(logging.INFO, logger="magicportrait.io.image"):
        rgb = load_image(tmp_path / "cutout.png")
        load_image(tmp_path / "cutout.png")
    assert rgb.shape == (48, 64, 3) and (rgb[:, :8] == 255).all()  # composited on white, as before
    messages = [r.getMessage() for r in caplog.records if "has transparency" in r.getMessage()]
    assert len(messages) == 1 and "composited on white" in messages[0] and "cutout.png" in messages[0]
    assert np.array_equal(load_alpha(tmp_path / "cutout.png"), rgba[:, :, 3])

    opaque = rgba.copy()
    opaque[:, :, 3] = 255
    Image.fromarray(opaque).save(tmp_path / "opaque.png")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="magicportrait.io.image"):
        load_image(tmp_path / "opaque.png")
    assert load_alpha(tmp_path / "opaque.png") is None and "transparency" not in caplog.text
    save_image(tmp_path / "plain.png", rgba[:, :, :3].copy())
    assert load_alpha(tmp_path / "plain.png") is None


@pytest.mark.parametrize("max_output_size", [1920, 32])
def test_result_frames_keep_the_portraits_alpha(tmp_path, max_output_size):
    rgba = rgba_portrait(tmp_path / "cutout.png")
    image, alpha = load_image(tmp_path / "cutout.png"), load_alpha(tmp_path / "cutout.png")
    matrix = np.array([[1.0, 0.0, -16.0], [0.0, 1.0, -8.0]])  # a 32 px crop at (16, 8)
    crop = np.ascontiguousarray(image[8:40, 16:48])
    changed = crop.copy()
    changed[8:24, 8:24] = 0
    writer = ResultWriter(tmp_path, 25.0, None, image, crop, matrix, paste_mode="changed", write_grid=False,
                          max_output_size=max_output_size, write_result_frames=True, source_alpha=alpha)
    with writer:
        writer.write(crop)  # unchanged: the pasted-back frame is the source image itself
        writer.write(changed)
    frames = sorted(os.listdir(tmp_path / "result_frames"))
    assert frames == ["frame_0001.png", "frame_0002.png"]
    assert writer.files["result_frames"] == tmp_path / "result_frames"
    first = cv2.cvtColor(cv2.imread(str(tmp_path / "result_frames" / frames[0]), cv2.IMREAD_UNCHANGED),
                         cv2.COLOR_BGRA2RGBA)
    second = cv2.cvtColor(cv2.imread(str(tmp_path / "result_frames" / frames[1]), cv2.IMREAD_UNCHANGED),
                          cv2.COLOR_BGRA2RGBA)
    if max_output_size == 1920:
        assert np.array_equal(first[:, :, 3], rgba[:, :, 3]) and np.array_equal(second[:, :, 3], rgba[:, :, 3])
        assert np.array_equal(first[:, :, :3], image)
        assert (second[16:32, 24:40, :3] == 0).all()  # the changed square, pasted back where the crop came from
    else:  # the output frame is the source halved: the alpha is resized the same way
        expected = cv2.resize(rgba[:, :, 3], (32, 24), interpolation=cv2.INTER_AREA)
        assert first.shape == (24, 32, 4) and np.array_equal(first[:, :, 3], expected)
        assert np.array_equal(first[:, :, :3], cv2.resize(image, (32, 24), interpolation=cv2.INTER_AREA))


def test_result_frames_without_alpha_are_rgb(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    matrix = np.array([[1.0, 0.0, -16.0], [0.0, 1.0, -8.0]])
    crop = np.ascontiguousarray(image[8:40, 16:48])
    with ResultWriter(tmp_path, 25.0, None, image, crop, matrix, write_grid=False, write_result_frames=True) as w:
        w.write(crop)
    frame = cv2.imread(str(tmp_path / "result_frames" / "frame_0001.png"), cv2.IMREAD_UNCHANGED)
    assert frame.shape == (48, 64, 3) and np.array_equal(frame[:, :, ::-1], image)
