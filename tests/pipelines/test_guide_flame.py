"""``magicportrait guide`` with FLAME (the shared partial model; skips cleanly without it)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from magicportrait.cli.main import main
from magicportrait.io.video import probe_video
from magicportrait.types import FlameTrack, HeadTrack
from shared_paths import PARTIAL_MODEL, needs_partial_flame

NUM_FRAMES = 8
SIZE = 256

pytestmark = needs_partial_flame
EXAMPLE_FRAMES = NUM_FRAMES  # the conftest's example fixture writes the bundled example this long


@pytest.fixture(scope="module")
def guided(example, tmp_path_factory):
    source, driving = example
    output = tmp_path_factory.mktemp("guide-flame") / "out"
    code = main(["guide", "-s", str(source), "-d", str(driving), "-o", str(output), "--size", str(SIZE),
                 "--flame", str(PARTIAL_MODEL), "--smoothing", "0", "--no-show-progress", "--no-write-preview"])
    assert code == 0
    return output


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path))[..., ::-1]


def test_flame_guidance_outputs(guided):
    for name in ("depth", "normal", "render"):
        info = probe_video(guided / f"{name}.mp4")
        assert (info.num_frames, info.width, info.height) == (NUM_FRAMES, SIZE, SIZE)
    head = HeadTrack.load(guided / "aligned_head.npz")
    assert isinstance(head, FlameTrack) and head.num_frames == NUM_FRAMES and head.model == "flame"
    assert (guided / "appearance.npz").is_file()


def test_flame_maps_cover_the_whole_head(guided, example, tmp_path):
    # The open geometry covers the face oval only; FLAME adds forehead, ears, neck and the back of the head.
    source, driving = example
    open_out = tmp_path / "open"
    assert main(["guide", "-s", str(source), "-d", str(driving), "-o", str(open_out), "--size", str(SIZE),
                 "--max-frames", "1", "--no-show-progress", "--no-write-preview"]) == 0
    flame_mask = _read(guided / "depth" / "frame_0001.png")[..., 0] > 0
    open_mask = _read(open_out / "depth" / "frame_0001.png")[..., 0] > 0
    assert flame_mask.sum() > 1.5 * open_mask.sum()
    assert (flame_mask & open_mask).sum() > 0.9 * open_mask.sum()  # the faces sit in the same place
    # Render map: skin-coloured (red above blue) where the face is, black background.
    render = _read(guided / "render" / "frame_0001.png").astype(float)
    assert render[open_mask][:, 0].mean() > render[open_mask][:, 2].mean()
    assert render[~flame_mask].max() <= 16  # H.264-free PNG: background stays (near) black


def test_flame_from_environment_and_missing_file(example, tmp_path, monkeypatch, capsys):
    source, driving = example
    monkeypatch.setenv("MAGICPORTRAIT_FLAME", str(tmp_path / "nowhere.pkl"))
    code = main(["guide", "-s", str(source), "-d", str(driving), "-o", str(tmp_path / "out"), "--size", "128",
                 "--no-show-progress"])
    assert code == 2
    error = capsys.readouterr().err
    assert "MAGICPORTRAIT_FLAME" in error and "nowhere.pkl" in error
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("MAGICPORTRAIT_FLAME", str(PARTIAL_MODEL))
    from magicportrait.heads import HeadModelConfig, head_model_from_config

    assert head_model_from_config(HeadModelConfig()).name == "flame"


def test_flame_fit_flags_are_prefixed():
    from magicportrait.cli.args import config_from_args
    from magicportrait.cli.main import build_parser
    from magicportrait.pipelines.guide import GuideConfig

    args = build_parser().parse_args(["guide", "--example", "-o", "x", "--chunk-size", "2", "--flame-chunk-size",
                                      "64", "--flame-camera", "perspective", "--flame", "model.pkl"])
    config = config_from_args(GuideConfig, args)
    assert (config.chunk_size, config.head.fit.chunk_size) == (2, 64)
    assert config.head.fit.camera == "perspective" and config.head.flame == "model.pkl"
    assert config.tracker.max_faces == 4  # other nested configs keep their unprefixed flags and defaults
