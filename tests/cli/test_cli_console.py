"""The CLI's console: one ``error:`` line for bad input, grouped ``--help``, quiet libraries, ``-q`` and ``-v``."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import magicportrait
from magicportrait import console as console_module
from magicportrait.cli.main import build_parser, main
from magicportrait.console import NORMAL, QUIET, VERBOSE, QuietStart, console
from magicportrait.errors import InputError

SRC = Path(magicportrait.__file__).resolve().parents[1]
CHATTER = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
           "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
           "W0000 00:00:1796157626.151423    4452 inference_feedback_manager.cc:114] Feedback manager requires a "
           "model with a single signature inference. Disabling support for feedback tensors.\n")


@pytest.fixture
def no_tracking(monkeypatch):
    """Fail the test if a face tracker is built (bad options must be refused before any work)."""
    import magicportrait.pipelines.stages
    import magicportrait.tracking
    import magicportrait.tracking.mediapipe_tracker

    class NoTracker:
        def __init__(self, *args, **kwargs):
            raise AssertionError("a FaceTracker was built")

    for module in (magicportrait.tracking, magicportrait.tracking.mediapipe_tracker, magicportrait.pipelines.stages):
        monkeypatch.setattr(module, "FaceTracker", NoTracker)


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(("argv", "flag"), [
    (["guide", "--example", "--smoothing", "2"], "--smoothing"),
    (["animate", "--example", "--geometric-neck-length", "5"], "--geometric-neck-length"),
    (["demo", "--flame-fov-degrees", "0"], "--flame-fov-degrees"),
    (["animate", "--example", "--max-frames", "2", "--reference-frame", "2"], "--reference-frame"),
])
def test_bad_option_is_one_error_line_before_any_work(tmp_path, capsys, no_tracking, argv, flag):
    output = tmp_path / "out"
    assert main([*argv, "-o", str(output)]) == 2
    captured = capsys.readouterr()
    lines = _error_lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag} "), captured.err
    assert not output.exists()  # not even the bundled example was written
    assert captured.out == ""


def test_verbose_shows_the_traceback(tmp_path, no_tracking):
    with pytest.raises(InputError, match="--smoothing must be between 0 and 1, got 2"):
        main(["guide", "--example", "--smoothing", "2", "-o", str(tmp_path / "out"), "-v"])  # -v after the command


def test_other_exceptions_are_bugs_and_keep_their_traceback(tmp_path, monkeypatch):
    import magicportrait.pipelines.example

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(magicportrait.pipelines.example, "write_example", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["example", "-o", str(tmp_path / "out")])


def _help_sections(text: str) -> dict[str, str]:
    """Section title -> its body, from argparse's help text."""
    parts = re.split(r"^(\S[^\n]*):\n", text, flags=re.MULTILINE)
    return {title: body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_animate_help_is_grouped(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["animate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    sections = _help_sections(text)
    expected = ["options", "input", "face choice and tracking", "motion", "motion editing", "head model / FLAME",
                "guidance maps",
                "generator and weights", "geometric generator", "diffusion sampler", "output"]
    assert list(sections) == expected
    where = {"--source": "input", "--max-frames": "input", "--face": "face choice and tracking",
             "--max-faces": "face choice and tracking", "--smoothing": "motion", "--edit-yaw": "motion editing",
             "--edit-frames": "motion editing", "--flame": "head model / FLAME",
             "--flame-camera": "head model / FLAME", "--appearance-robust-loss": "guidance maps",
             "--weights": "generator and weights", "--geometric-blend": "geometric generator",
             "--steps": "diffusion sampler", "--prompt": "diffusion sampler", "--output": "output",
             "--write-frames": "output", "--show-progress": "output", "--quiet": "options"}
    for name, section in where.items():
        assert re.search(rf"^  (-\w+, )?{name}[ ,\n]", sections[section], flags=re.MULTILINE), (name, section)
    assert "--write-preview" not in text
    usage = "usage: magicportrait animate (--source IMAGE (--driving VIDEO | --motion FILE) | --example) -o DIR"
    assert text.startswith(usage)


@pytest.mark.parametrize("command", [["animate", "--example", "-o", "x"], ["demo"], ["benchmark", "clips", "-o", "x"]])
def test_flags_that_do_nothing_are_not_offered(command, capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([*command, "--write-preview"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --write-preview" in capsys.readouterr().err
    assert parser.parse_args(["guide", "--example", "-o", "x", "--no-write-preview"]).write_preview is False
    assert parser.parse_args([*command, "--no-write-frames"]).write_frames is False


@pytest.mark.parametrize("argv, unknown", [
    (["evaluate", "-p", "p", "-d", "d", "-s", "s", "-o", "x"], "--flame-texture"),
    (["generate", "-g", "g", "-o", "x"], "--smoothing"),
    (["generate", "-g", "g", "-o", "x"], "--geometric-blend"),
    (["generate", "-g", "g", "-o", "x"], "--flame"),
])
def test_other_commands_offer_only_what_they_use(argv, unknown, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, unknown, "1"])
    assert f"unrecognized arguments: {unknown}" in capsys.readouterr().err
    generate = build_parser().parse_args(["generate", "-g", "g", "-o", "x", "--steps", "3", "--seed", "7"])
    assert (generate.steps, generate.seed) == (3, 7)


def test_verbosity_flags():
    parser = build_parser()
    assert parser.parse_args(["-q", "demo"]).verbosity == QUIET
    assert parser.parse_args(["demo", "-q"]).verbosity == QUIET
    assert parser.parse_args(["-v", "demo"]).verbosity == VERBOSE  # not reset by the subcommand's default
    assert parser.parse_args(["demo"]).verbosity == NORMAL
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "-q", "-v"])


def test_native_chatter_becomes_debug_records(capfd, caplog):
    """What C++ code writes to fd 2 while a graph starts: known chatter is logged at DEBUG, the rest is shown."""

    class Graph:
        def __init__(self) -> None:
            os.write(2, CHATTER.encode())

        def process(self, value):
            os.write(2, b"W0000 00:00:1.5  77 calculator.cc:9] started\nsomething else\n")
            return value * 2

        def close(self) -> None:
            pass

    with caplog.at_level(logging.DEBUG, logger="magicportrait.console"):
        with QuietStart(Graph) as graph:
            assert graph.process(3) == 6
            os.write(2, b"W0000 00:00:2.5  77 later.cc:1] after the first result\n")
    assert capfd.readouterr().err == ("something else\n"
                                      "W0000 00:00:2.5  77 later.cc:1] after the first result\n")
    logged = [record.getMessage() for record in caplog.records]
    assert logged == [*CHATTER.splitlines(), "W0000 00:00:1.5  77 calculator.cc:9] started"]


def test_native_output_is_all_shown_when_the_graph_fails(capfd):
    def failing():
        os.write(2, CHATTER.encode() + b"E0000 graph.cc:1] the model file is missing\n")
        raise RuntimeError("graph failed")

    with pytest.raises(RuntimeError, match="graph failed"):
        QuietStart(failing)
    assert capfd.readouterr().err == CHATTER + "E0000 graph.cc:1] the model file is missing\n"
    assert console_module._CAPTURE._holders == 0  # fd 2 is back


def test_console_settings_are_restored(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    package = logging.getLogger("magicportrait")
    before = package.level
    with console(QUIET):
        assert package.level == logging.ERROR and os.environ["TQDM_DISABLE"] == "1"
    assert package.level == before and "TQDM_DISABLE" not in os.environ
    for verbosity, shown in ((NORMAL, 0), (VERBOSE, 1)):
        with console(verbosity), warnings.catch_warnings(record=True) as caught:
            warnings.warn(f"library note {verbosity}", FutureWarning, stacklevel=1)
        assert len(caught) == shown


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, "-m", "magicportrait.cli.main", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_console_is_quiet_by_default_and_silent_with_q(tmp_path):
    """MediaPipe's C++ log lines never reach the console; -q leaves only the summary."""
    small = ["guide", "--example", "--max-frames", "4", "--size", "128", "--no-write-preview"]
    default = _run(*small, "-o", str(tmp_path / "a"), cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    for noise in ("TensorFlow Lite", "absl", "W0000", "I0000", "Feedback manager"):
        assert noise not in default.stderr, default.stderr
    assert "INFO: Head model" in default.stderr and "Tracking face" in default.stderr  # ours still shows

    quiet = _run("-q", *small, "-o", str(tmp_path / "b"), cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert quiet.stdout.startswith("Wrote 4 frames of depth/normal/render guidance")
