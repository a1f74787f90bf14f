"""magicportrait retarget: a still portrait with its eyes, lips and head changed, pasted back into the picture."""

from __future__ import annotations

import numpy as np
import pytest

from magicportrait.cli.main import main
from magicportrait.io.image import load_image
from magicportrait.types import HeadTrack

FAST = ["--size", "256", "-q"]


@pytest.fixture(scope="module")
def portrait(example):
    return example[0]


def _mouth_box(folder) -> tuple[slice, slice]:
    """The mouth's box in the crop, from the portrait's fitted landmarks."""
    from magicportrait.types import SourceFace

    points = SourceFace.load(folder / "source_face.npz").track.landmarks[0, [61, 291, 0, 17], :2]
    (x0, y0), (x1, y1) = points.min(0).astype(int) - 4, points.max(0).astype(int) + 4
    return slice(y0, y1), slice(x0, x1)


def test_retarget_opens_the_mouth_and_keeps_the_rest(portrait, tmp_path):
    assert main(["retarget", "-s", str(portrait), "-o", str(tmp_path / "same"), *FAST]) == 0
    assert main(["retarget", "-s", str(portrait), "-o", str(tmp_path / "open"), "--lip-opening", "0.45",
                 *FAST]) == 0
    source = load_image(portrait)
    same, opened = (load_image(tmp_path / name / "result.png") for name in ("same", "open"))
    assert same.shape == opened.shape == source.shape
    assert np.abs(same.astype(float) - source).mean() < 1.0  # nothing asked, (almost) nothing changed
    crop_same, crop_open = (load_image(tmp_path / name / "result_crop.png").astype(float) for name in ("same", "open"))
    mouth = _mouth_box(tmp_path / "open")
    assert np.abs(crop_open[mouth] - crop_same[mouth]).mean() > 10  # the mouth opened
    top = np.abs(crop_open[:60] - crop_same[:60]).mean()  # the forehead and hair did not move
    assert top < 2.0
    head = HeadTrack.load(tmp_path / "open" / "aligned_head.npz")
    assert head.num_frames == 1 and head.extras["retarget"]["lip_opening"] == 0.45


def test_retarget_result_is_a_motion_animate_renders(portrait, tmp_path):
    assert main(["retarget", "-s", str(portrait), "-o", str(tmp_path / "r"), "--yaw", "12", *FAST]) == 0
    assert main(["animate", "-s", str(portrait), "-m", str(tmp_path / "r" / "aligned_head.npz"), "-o",
                 str(tmp_path / "a"), *FAST]) == 0


@pytest.mark.parametrize("flags, message", [
    (["--eye-opening", "2"], "--eye-opening must be between 0 and 0.6"),
    (["--yaw", "90"], "--yaw must be between -30 and 30"),
])
def test_retarget_refuses_bad_values(portrait, tmp_path, capsys, flags, message):
    assert main(["retarget", "-s", str(portrait), "-o", str(tmp_path / "x"), *flags, *FAST]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "x").exists()
