"""The stages run alone from their files: saved motion is reused (and checked), and lower stages never import the
pipelines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from magicportrait.cli.main import main
from magicportrait.io.video import iter_frames
from magicportrait.types import HeadTrack, SourceFace
from shared_paths import PROJECT

PACKAGE = PROJECT / "src" / "magicportrait"
LOWER_STAGES = ("heads", "rendering", "tracking", "evaluation", "training", "alignment", "compositing", "io",
                "geometry", "models")
FAST = ["--size", "128", "--max-frames", "6", "--no-show-progress", "--smoothing", "0"]
EXAMPLE_FRAMES = 8  # the conftest's example fixture writes the bundled example this long


def test_importing_heads_and_rendering_loads_no_pipeline():
    # batch.engines too: prepare (a lower stage) runs its clips on it
    code = ("import sys, magicportrait.heads, magicportrait.rendering, magicportrait.batch.engines; "
            "print(sorted(m for m in sys.modules if m.startswith('magicportrait.pipelines')))")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert printed.strip() == "[]"


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("stage", LOWER_STAGES)
def test_lower_stages_never_import_the_pipelines(stage):
    files = sorted((PACKAGE / stage).rglob("*.py"))
    assert files, f"no modules under {stage}/"
    upper = ("magicportrait.pipelines", "magicportrait.cli")
    offenders = {str(path.relative_to(PACKAGE)): sorted(name for name in _imported_modules(path)
                                                         if name.startswith(upper)) for path in files}
    assert {name: found for name, found in offenders.items() if found} == {}


@pytest.fixture(scope="module")
def animated(example, tmp_path_factory):
    output = tmp_path_factory.mktemp("animated") / "out"
    assert main(["animate", "-s", str(example[0]), "-d", str(example[1]), "-o", str(output), *FAST]) == 0
    return output


def test_saved_motion_gives_the_same_result(example, animated, tmp_path):
    """animate --motion on the track an earlier run saved reproduces that run (geometric generator)."""
    output = tmp_path / "again"
    assert main(["animate", "-s", str(example[0]), "-d", str(example[1]), "--motion",
                 str(animated / "aligned_head.npz"), "-o", str(output), *FAST]) == 0
    for name in ("result.mp4", "result_crop.mp4", "grid.mp4"):
        first, second = (np.stack(list(iter_frames(folder / name))) for folder in (animated, output))
        assert first.shape == second.shape and np.array_equal(first, second), name


def test_saved_motion_without_a_driving_video(example, animated, tmp_path):
    output = tmp_path / "silent"
    assert main(["animate", "-s", str(example[0]), "-m", str(animated / "aligned_head.npz"), "-o", str(output),
                 *FAST]) == 0
    first = np.stack(list(iter_frames(animated / "result_crop.mp4")))
    assert np.array_equal(np.stack(list(iter_frames(output / "result_crop.mp4"))), first)
    assert not (output / "track.npz").exists()


def test_edited_motion_is_used(example, animated, tmp_path):
    """A saved track edited in Python (the head held still) drives the result."""
    from dataclasses import replace

    motion = HeadTrack.load(animated / "aligned_head.npz")
    still = replace(motion, rotation=np.repeat(motion.rotation[:1], motion.num_frames, axis=0),
                    translation=np.repeat(motion.translation[:1], motion.num_frames, axis=0))
    still.save(tmp_path / "still.npz")
    assert main(["animate", "-s", str(example[0]), "-m", str(tmp_path / "still.npz"), "-o", str(tmp_path / "out"),
                 *FAST]) == 0
    frames = np.stack(list(iter_frames(tmp_path / "out" / "result_crop.mp4"))).astype(float)
    moving = np.stack(list(iter_frames(animated / "result_crop.mp4"))).astype(float)
    assert np.abs(np.diff(frames, axis=0)).mean() < np.abs(np.diff(moving, axis=0)).mean()


def test_guide_reuses_saved_motion(example, animated, tmp_path):
    output = tmp_path / "guided"
    assert main(["guide", "-s", str(example[0]), "-m", str(animated / "aligned_head.npz"), "-o", str(output),
                 *FAST, "--no-write-preview"]) == 0
    assert len(list((output / "depth").glob("*.png"))) == 6
    source = SourceFace.load(output / "source_face.npz")
    assert source.size == 128 and source.head.num_frames == 1


@pytest.mark.parametrize("change, message", [
    (["--size", "192"], "another face crop"),
    (["--flame", "missing.pkl"], "FLAME model file given with --flame does not exist"),
])
def test_motion_for_another_crop_is_refused(example, animated, tmp_path, capsys, change, message):
    code = main(["animate", "-s", str(example[0]), "-m", str(animated / "aligned_head.npz"), "-o",
                 str(tmp_path / "out"), *FAST, *change])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_motion_for_another_portrait_is_refused(example, animated, tmp_path, capsys):
    from magicportrait.io.image import load_image, save_image

    other = load_image(example[0]).copy()
    other[:8] = 0  # the same face, other pixels
    save_image(tmp_path / "other.png", other)
    code = main(["animate", "-s", str(tmp_path / "other.png"), "-m", str(animated / "aligned_head.npz"), "-o",
                 str(tmp_path / "out"), *FAST])
    assert code == 2 and "made for another portrait" in capsys.readouterr().err


def test_a_track_without_provenance_is_refused(example, animated, tmp_path, capsys):
    from dataclasses import replace

    motion = HeadTrack.load(animated / "aligned_head.npz")
    replace(motion, extras={}).save(tmp_path / "bare.npz")
    code = main(["animate", "-s", str(example[0]), "-m", str(tmp_path / "bare.npz"), "-o", str(tmp_path / "out"),
                 *FAST])
    assert code == 2 and "does not say which portrait" in capsys.readouterr().err


def test_motion_edits_apply_to_a_saved_motion_and_are_saved(example, animated, tmp_path):
    """--edit-* on a reused motion: the head holds the portrait's yaw, the eyes close in frames 2..4 only, and the
    edited track saved beside the result renders again with --motion."""
    from magicportrait.geometry.rotations import axis_angle_to_matrix, matrix_to_euler_degrees

    output = tmp_path / "edited"
    assert main(["animate", "-s", str(example[0]), "-m", str(animated / "aligned_head.npz"), "-o", str(output),
                 *FAST, "--edit-yaw", "0", "--edit-eyes", "0", "--edit-frames", "2:5", "--edit-ramp", "0"]) == 0
    edited = HeadTrack.load(output / "aligned_head.npz")
    source = SourceFace.load(output / "source_face.npz")
    assert edited.extras["motion_edit"]["yaw"] == 0 and edited.extras["motion_edit"]["frames"] == "2:5"
    relative = axis_angle_to_matrix(edited.rotation) @ axis_angle_to_matrix(source.head.rotation[0]).T
    np.testing.assert_allclose(matrix_to_euler_degrees(relative)[:, 0], 0, atol=1e-3)
    original = HeadTrack.load(animated / "aligned_head.npz")
    changed = np.abs(edited.expression - original.expression).max(axis=1)
    assert (changed[2:5] > 1e-3).all()  # eyes closed there
    np.testing.assert_allclose(edited.expression[[0, 1, 5]], 0, atol=1e-6)  # the portrait's own (open geometry)
    assert main(["animate", "-s", str(example[0]), "-m", str(output / "aligned_head.npz"), "-o",
                 str(tmp_path / "again"), *FAST]) == 0
