"""Dataset preparation for training: tiny clips made from the bundled example, plus a corrupt and a faceless video."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from magicportrait.batch.engines import EngineConfig
from magicportrait.errors import InputError
from magicportrait.io.frames import frame_name, load_manifest
from magicportrait.io.video import iter_frames, write_video
from magicportrait.pipelines.example import write_example
from magicportrait.training.prepare import (
    FRAME_FOLDERS,
    PrepareConfig,
    clip_name,
    laplacian_variance,
    prepare_dataset,
)
from magicportrait.types import HeadTrack, Track

SIZE = 128
FPS = 25.0
NUM_FRAMES = 8
# The example face is ~110 px across at 512 px (~82 px once shrunk to 384): 96 separates the two.
MIN_FACE_PX = 96.0
LOST_FRAMES = (2, 5)  # frames of the "lost" clip replaced by a flat grey picture: 2 of 8 = 0.25 > max_lost 0.2


def _config(**overrides) -> PrepareConfig:
    return PrepareConfig(size=SIZE, min_face_px=MIN_FACE_PX, show_progress=False, **overrides)


def _read(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image[..., ::-1]


def _grey(path) -> np.ndarray:
    return cv2.cvtColor(_read(path), cv2.COLOR_RGB2GRAY).astype(float)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """a (good), sub/b (face too small), sub/deep/lost (face lost in 2 of 8 frames), blurry, corrupt, flat."""
    _, driving = write_example(tmp_path_factory.mktemp("example"), num_frames=NUM_FRAMES)
    frames = list(iter_frames(driving))
    root = tmp_path_factory.mktemp("videos")
    (root / "sub" / "deep").mkdir(parents=True)
    shutil.copy(driving, root / "a.mp4")
    write_video(root / "sub" / "b.mp4", [cv2.resize(f, (384, 384), interpolation=cv2.INTER_AREA)
                                         for f in frames[:6]], FPS)
    grey = np.full_like(frames[0], 128)
    write_video(root / "sub" / "deep" / "lost.mp4",
                [grey if i in LOST_FRAMES else f for i, f in enumerate(frames)], FPS)
    write_video(root / "blurry.mp4", [cv2.GaussianBlur(f, (0, 0), 3) for f in frames[:4]], FPS)
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    write_video(root / "flat.mp4", [np.full((128, 128, 3), (40, 90, 160), np.uint8)] * 4, FPS)
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def prepared(videos, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    manifest = prepare_dataset(videos, data, _config())
    return data, json.loads(manifest.read_text())


def _clips(manifest) -> dict:
    return {clip["name"]: clip for clip in manifest["clips"]}


def test_manifest_lists_clips_with_counts_and_flags(prepared, videos):
    data, manifest = prepared
    assert (manifest["version"], manifest["size"], manifest["head_model"]) == (1, SIZE, "mediapipe")
    clips = _clips(manifest)
    assert sorted(clips) == ["a", "blurry", "sub__b", "sub__deep__lost"]
    expected = {  # name: (num_frames, face_lost_fraction, too_small, too_blurry, usable)
        "a": (8, 0.0, False, False, True),
        "sub__b": (6, 0.0, True, False, False),
        "sub__deep__lost": (8, 0.25, False, False, False),
        "blurry": (4, 0.0, False, True, False),
    }
    for name, (num_frames, lost, small, blurry, usable) in expected.items():
        clip = clips[name]
        flags = clip["flags"]
        assert (clip["num_frames"], flags["too_small"], flags["too_blurry"], clip["usable"]) == \
               (num_frames, small, blurry, usable), name
        assert flags["face_lost_fraction"] == pytest.approx(lost), name
        assert clip["fps"] == FPS and clip["path"] == f"clips/{name}"
        assert clip["video"].endswith(name.replace("__", "/") + ".mp4")
        assert json.loads((data / clip["path"] / "clip.json").read_text()) == clip
    assert load_manifest(data) == manifest


def test_skipped_lists_corrupt_and_faceless_videos(prepared):
    _, manifest = prepared
    reasons = {item["video"].rsplit("/", 1)[-1]: item["reason"] for item in manifest["skipped"]}
    assert sorted(reasons) == ["corrupt.mp4", "flat.mp4"]
    assert "corrupt.mp4" in reasons["corrupt.mp4"]
    assert "No usable face" in reasons["flat.mp4"]


def test_every_frame_and_map_is_written(prepared):
    data, manifest = prepared
    for clip in manifest["clips"]:
        folder = data / clip["path"]
        for name in FRAME_FOLDERS:
            files = sorted((folder / name).iterdir())
            assert [f.name for f in files] == [f"frame_{i:04d}.png" for i in range(1, clip["num_frames"] + 1)]
            assert {_read(f).shape for f in files} == {(SIZE, SIZE, 3)}, (clip["name"], name)


def test_maps_cover_the_face_and_match_the_crops(prepared):
    folder = prepared[0] / "clips" / "a"
    for index in range(NUM_FRAMES):
        depth = _read(folder / "depth" / frame_name(index, NUM_FRAMES))
        assert depth[SIZE // 2, SIZE // 2].min() > 0  # the crop is centred on the face
        assert depth[0, 0].max() == 0  # the corner is background
        assert 0.08 < (depth[..., 0] > 0).mean() < 0.5
    # The render map is the first crop on the clip's own head (shaded): it lines up with every frame's face.
    for index in (0, NUM_FRAMES - 1):
        frame, depth, render = (_grey(folder / name / frame_name(index, NUM_FRAMES))
                                for name in ("frames", "depth", "render"))
        face = depth > 0
        assert np.corrcoef(frame[face], render[face])[0, 1] > 0.85
        assert np.corrcoef(np.roll(frame, 6, axis=1)[face], render[face])[0, 1] < 0.7  # misaligned: much worse


def test_track_and_head_are_in_crop_space(prepared):
    folder = prepared[0] / "clips" / "a"
    track, head = Track.load(folder / "track.npz"), HeadTrack.load(folder / "head.npz")
    assert track.image_size == (SIZE, SIZE) and head.image_size == (SIZE, SIZE)
    assert (track.num_frames, head.num_frames) == (NUM_FRAMES, NUM_FRAMES)
    # Each frame was cropped with its own box, so every crop-space box is the whole crop.
    np.testing.assert_allclose(track.boxes, np.tile([SIZE / 2, SIZE / 2, SIZE], (NUM_FRAMES, 1)), atol=1e-3)
    lost = Track.load(prepared[0] / "clips" / "sub__deep__lost" / "track.npz")
    assert np.flatnonzero(~lost.detected).tolist() == list(LOST_FRAMES)


def test_sharpness_measure_ranks_blur():
    rng = np.random.default_rng(1)
    sharp = np.repeat(rng.integers(0, 256, (64, 64, 1), dtype=np.uint8), 3, axis=2)
    assert laplacian_variance(np.full((64, 64, 3), 7, np.uint8)) == 0.0
    assert laplacian_variance(sharp) > 10 * laplacian_variance(cv2.GaussianBlur(sharp, (0, 0), 3))


def test_clip_name_flattens_the_relative_path(tmp_path):
    assert clip_name(tmp_path / "id01" / "take 2.mov", tmp_path) == "id01__take 2"
    assert frame_name(0, 12) == "frame_0001.png" and frame_name(9999, 10000) == "frame_10000.png"


def test_rerun_skips_finished_clips_and_redoes_interrupted_ones(videos, tmp_path):
    data = tmp_path / "data"
    subset = tmp_path / "videos"
    subset.mkdir()
    for name in ("a.mp4", "blurry.mp4"):
        shutil.copy(videos / name, subset / name)
    first = json.loads(prepare_dataset(subset, data, _config()).read_text())
    mtimes = {path: path.stat().st_mtime_ns for path in (data / "clips").rglob("*") if path.is_file()}
    (data / "clips" / "blurry" / "clip.json").unlink()  # as if the run had stopped while writing "blurry"
    (data / "clips" / ".a-stale").mkdir()  # a staging folder left by a killed run
    second = json.loads(prepare_dataset(subset, data, _config()).read_text())
    assert second == first
    for path, mtime in mtimes.items():
        redone = path.parent.name == "blurry" or path.parent.parent.name == "blurry"
        assert (path.stat().st_mtime_ns != mtime) == redone, path
    assert (data / "clips" / "blurry" / "clip.json").is_file()
    assert not (data / "clips" / ".a-stale").exists()


def test_two_workers_give_the_same_manifest(videos, prepared, tmp_path):
    manifest = json.loads(prepare_dataset(videos, tmp_path / "data", _config(engine=EngineConfig(workers=2)))
                          .read_text())
    assert manifest == prepared[1]


def test_ray_workers_give_the_same_manifest(videos, prepared, tmp_path):
    pytest.importorskip("ray")
    engine = EngineConfig(engine="ray", workers=2)
    manifest = json.loads(prepare_dataset(videos, tmp_path / "data", _config(engine=engine)).read_text())
    assert manifest == prepared[1]


def test_bad_input_is_explained(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        prepare_dataset(tmp_path / "missing", tmp_path / "data", _config())
    with pytest.raises(InputError, match="No videos"):
        prepare_dataset(tmp_path, tmp_path / "data", _config())
    with pytest.raises(InputError, match="workers"):
        _config(engine=EngineConfig(workers=0))


def test_max_frames_limits_each_clip(videos, tmp_path):
    subset = tmp_path / "videos"
    subset.mkdir()
    shutil.copy(videos / "a.mp4", subset / "a.mp4")
    manifest = json.loads(prepare_dataset(subset, tmp_path / "data", _config(max_frames=3)).read_text())
    assert [(clip["name"], clip["num_frames"]) for clip in manifest["clips"]] == [("a", 3)]
    assert len(list((tmp_path / "data" / "clips" / "a" / "render").iterdir())) == 3
    assert HeadTrack.load(tmp_path / "data" / "clips" / "a" / "head.npz").num_frames == 3
