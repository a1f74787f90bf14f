"""``--framing ours|official``: the portrait's canvas, recorded with the motion and kept when the motion is reused."""

from __future__ import annotations

import numpy as np

from magicportrait.cli.main import main
from magicportrait.io.image import load_image
from magicportrait.tracking.boxes import crop_matrix, official_framing_box
from magicportrait.types import HeadTrack, SourceFace

EXAMPLE_FRAMES = 3
SIZE = 128


def _guide(example, output, *extra: str) -> int:
    source, driving = example
    return main(["guide", "-s", str(source), "-o", str(output), "--size", str(SIZE), "--no-show-progress",
                 "--no-write-preview", "--no-write-frames", *extra] + (["-d", str(driving)] if "--motion" not in extra
                                                                        else []))


def test_official_framing_crops_the_official_canvas_and_is_kept_with_the_motion(example, tmp_path):
    official, ours = tmp_path / "official", tmp_path / "ours"
    assert _guide(example, official, "--framing", "official") == 0
    assert _guide(example, ours) == 0
    source = SourceFace.load(official / "source_face.npz")
    portrait = load_image(example[0])
    from magicportrait.tracking import FaceTracker, TrackerConfig

    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        track = tracker.track_image(portrait)
    np.testing.assert_allclose(source.crop_matrix, crop_matrix(official_framing_box(track.landmarks[0]), SIZE),
                               atol=1e-3)
    assert not np.allclose(SourceFace.load(ours / "source_face.npz").crop_matrix, source.crop_matrix, atol=1e-2)
    assert HeadTrack.load(official / "aligned_head.npz").extras["framing"] == "official"
    # a saved motion keeps its framing unless --framing says otherwise (then its crop does not fit)
    assert _guide(example, tmp_path / "reuse", "--motion", str(official / "aligned_head.npz")) == 0
    assert _guide(example, tmp_path / "other", "--motion", str(official / "aligned_head.npz"),
                  "--framing", "ours") == 2
