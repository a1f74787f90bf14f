"""The guidance pipeline and the CLI, end to end on the bundled example, plus bad input."""

import os

import cv2
import numpy as np
import pytest

from magicportrait.cli.main import main
from magicportrait.io.image import save_image
from magicportrait.io.video import iter_frames, probe_video
from magicportrait.pipelines.example import example_portrait
from magicportrait.types import HeadTrack, Track

NUM_FRAMES = 12
SIZE = 256
EXAMPLE_FRAMES = NUM_FRAMES  # the conftest's example fixture writes the bundled example this long


@pytest.fixture(scope="module")
def guided(example, tmp_path_factory):
    source, driving = example
    output = tmp_path_factory.mktemp("guide") / "out"
    code = main(["guide", "-s", str(source), "-d", str(driving), "-o", str(output), "--size", str(SIZE),
                 "--smoothing", "0", "--no-show-progress"])  # a 12-frame loop is too fast to smooth
    assert code == 0
    return output


def test_example_video(example):
    _, driving = example
    info = probe_video(driving)
    assert (info.num_frames, info.fps, info.width, info.height) == (NUM_FRAMES, 25.0, 512, 512)


def test_guide_writes_every_output(guided):
    for name in ("depth", "normal", "render"):
        info = probe_video(guided / f"{name}.mp4")
        assert (info.num_frames, info.fps, info.width, info.height) == (NUM_FRAMES, 25.0, SIZE, SIZE)
        pngs = sorted(p.name for p in (guided / name).iterdir())
        assert pngs == [f"frame_{i:04d}.png" for i in range(1, NUM_FRAMES + 1)]
    preview = probe_video(guided / "preview.mp4")
    assert (preview.num_frames, preview.width, preview.height) == (NUM_FRAMES, 5 * SIZE, SIZE)
    assert Track.load(guided / "track.npz").num_frames == NUM_FRAMES
    assert HeadTrack.load(guided / "aligned_head.npz").num_frames == NUM_FRAMES
    assert cv2.imread(str(guided / "source.png")).shape == (SIZE, SIZE, 3)
    # no staging leftovers or lock; the hidden record of what the run wrote
    assert [p for p in os.listdir(guided) if p.startswith(".")] == [".magicportrait-run.json"]


def test_maps_follow_the_official_conventions(guided):
    depth = cv2.imread(str(guided / "depth" / "frame_0001.png"))
    normal = cv2.imread(str(guided / "normal" / "frame_0001.png"))[..., ::-1]
    render = cv2.imread(str(guided / "render" / "frame_0001.png"))[..., ::-1]
    face = depth[..., 0] > 0
    assert 0.05 < face.mean() < 0.6  # a face in the middle of a head-and-shoulders crop
    assert depth[0, 0].tolist() == [0, 0, 0] and normal[0, 0].tolist() == [0, 0, 0]  # black background
    assert depth.max() == 255  # nearest point is white
    assert (depth[..., 0] == depth[..., 1]).all()
    # Front-facing skin: the toward-camera (blue) component dominates the normal map.
    assert normal[face][:, 2].mean() > 2 * normal[face][:, 0].mean()
    # The render map's albedo comes from the portrait: skin tones, red above blue.
    assert render[face][:, 0].mean() > render[face][:, 2].mean()
    # The head turns in the example (yaw 18 degrees at a quarter of the loop): the nearest point, the nose
    # tip, moves sideways by several pixels.
    later = cv2.imread(str(guided / "depth" / f"frame_{NUM_FRAMES // 4 + 1:04d}.png"))[..., 0]
    nose_now, nose_later = (np.argwhere(d == d.max())[:, 1].mean() for d in (depth[..., 0], later))
    assert abs(nose_later - nose_now) > 8


def test_guide_frames_match_between_png_and_video(guided):
    png = cv2.imread(str(guided / "normal" / "frame_0003.png"))[..., ::-1].astype(float)
    video = list(iter_frames(guided / "normal.mp4"))[2].astype(float)
    assert np.abs(png - video).mean() < 4.0  # H.264 at crf 18


def test_track_command(example, tmp_path):
    _, driving = example
    assert main(["track", str(driving), "-o", str(tmp_path / "t.npz"), "--no-show-progress"]) == 0
    track = Track.load(tmp_path / "t.npz")
    assert track.landmarks.shape == (NUM_FRAMES, 478, 3) and track.detected.all() and track.fps == 25.0


def run_failing(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


def test_no_face_in_source(example, tmp_path, capsys):
    _, driving = example
    save_image(tmp_path / "wall.png", np.full((256, 256, 3), 128, np.uint8))
    out = tmp_path / "out"
    code, err = run_failing(["guide", "-s", str(tmp_path / "wall.png"), "-d", str(driving), "-o", str(out),
                             "--no-show-progress"], capsys)
    assert code == 2 and "face" in err.lower() and "wall.png" in err
    assert not out.exists() or not any(out.iterdir())


def test_tiny_source_says_why(example, tmp_path, capsys):
    _, driving = example
    save_image(tmp_path / "tiny.png", cv2.resize(example_portrait(), (64, 64), interpolation=cv2.INTER_AREA))
    code, err = run_failing(["guide", "-s", str(tmp_path / "tiny.png"), "-d", str(driving), "-o",
                             str(tmp_path / "out"), "--no-show-progress"], capsys)
    assert code == 2 and "64" in err


def test_unreadable_driving_video(example, tmp_path, capsys):
    source, _ = example
    (tmp_path / "broken.mp4").write_text("not a video")
    out = tmp_path / "out"
    code, err = run_failing(["guide", "-s", str(source), "-d", str(tmp_path / "broken.mp4"), "-o", str(out),
                             "--no-show-progress"], capsys)
    assert code == 2 and "broken.mp4" in err
    assert not out.exists() or not any(out.iterdir())


def test_output_not_writable(example, tmp_path, capsys):
    source, driving = example
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should go")
    code, err = run_failing(["guide", "-s", str(source), "-d", str(driving), "-o", str(blocker / "out"),
                             "--no-show-progress"], capsys)
    assert code == 2 and "write" in err.lower()


def test_huge_source_and_missing_source(example, tmp_path, capsys):
    _, driving = example
    huge = np.zeros((4320, 7680, 3), np.uint8)  # an 8K frame, the portrait filling its height
    huge[:] = (200, 190, 180)
    huge[:, 1680:6000] = cv2.resize(example_portrait(), (4320, 4320), interpolation=cv2.INTER_LINEAR)
    save_image(tmp_path / "8k.jpg", huge)
    out = tmp_path / "out8k"
    assert main(["guide", "-s", str(tmp_path / "8k.jpg"), "-d", str(driving), "-o", str(out), "--size", "128",
                 "--max-frames", "3", "--no-write-frames", "--no-show-progress"]) == 0
    crop = cv2.imread(str(out / "source.png"))
    assert crop.shape == (128, 128, 3) and crop.std() > 20  # the face, not the flat surround
    assert probe_video(out / "depth.mp4").num_frames == 3
    code, err = run_failing(["guide", "-s", str(tmp_path / "nope.png"), "-d", str(driving), "-o", str(out)],
                            capsys)
    assert code == 2 and "nope.png" in err


def test_small_face_in_8k_source_is_found(example, tmp_path):
    # A 2048 px head-and-shoulders portrait inside an 8K frame: the face is ~13 % of the width, too small for
    # the detector once the frame is downscaled to the 1280 px working size; the tiled search finds it.
    _, driving = example
    huge = np.full((4320, 7680, 3), (200, 190, 180), np.uint8)
    huge[1000:3048, 3000:5048] = cv2.resize(example_portrait(), (2048, 2048), interpolation=cv2.INTER_LINEAR)
    save_image(tmp_path / "8k.jpg", huge)
    out = tmp_path / "out"
    assert main(["guide", "-s", str(tmp_path / "8k.jpg"), "-d", str(driving), "-o", str(out), "--size", "128",
                 "--max-frames", "2", "--no-write-frames", "--no-write-preview", "--no-show-progress"]) == 0
    assert cv2.imread(str(out / "source.png")).std() > 20  # the face, not the flat surround
    from magicportrait.tracking import FaceTracker, TrackerConfig

    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        track = tracker.track_image(huge)
    # The astronaut's nose tip is at (223.4, 130.0) in the 512 px portrait, here scaled 4x and offset.
    np.testing.assert_allclose(track.landmarks[0, 1, :2], [3000 + 4 * 223.4, 1000 + 4 * 130.0], atol=16)
