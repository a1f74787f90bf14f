"""The boundary objects and files between stages: frozen types that round-trip through npz, the frame-folder
naming rule, the guidance folder checks, the manifest reader, and the one place user asset paths resolve."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from magicportrait.errors import CheckpointError, InputError
from magicportrait.io.assets import FLAME, WEIGHTS, resolve_asset
from magicportrait.io.frames import FrameFolder, GuidanceFolder, frame_name, load_manifest
from magicportrait.types import (
    GUIDANCE_NAMES,
    FlameTrack,
    GuidanceMaps,
    HeadTrack,
    RenderAppearance,
    SourceFace,
    Track,
)


def _track(frames: int = 3) -> Track:
    rng = np.random.default_rng(0)
    return Track(landmarks=rng.random((frames, 478, 3), dtype=np.float32), boxes=rng.random((frames, 3)).astype(
        np.float32), detected=np.array([True, False, True][:frames]), fps=25.0, image_size=(64, 64), source="x")


def _head(cls=HeadTrack, frames: int = 3, **kwargs) -> HeadTrack:
    rng = np.random.default_rng(1)
    return cls(model="flame", identity=rng.random(5).astype(np.float32), expression=rng.random((frames, 2)),
               rotation=rng.random((frames, 3)), scale=np.ones(frames), translation=rng.random((frames, 3)),
               joint_rotations=np.zeros((frames, 4, 3)), image_size=(64, 64), fps=25.0, **kwargs)


def test_boundary_objects_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _track().fps = 30.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        _head().model = "mediapipe"


def test_track_select_and_round_trip(tmp_path):
    track = _track()
    picked = track.select(slice(1, 3))
    assert picked.num_frames == 2 and picked.detected.tolist() == [False, True]
    assert np.array_equal(picked.landmarks, track.landmarks[1:3])  # a copy of stored values: exact
    loaded = Track.load(track.save(tmp_path / "t.npz"))
    assert np.array_equal(loaded.landmarks, track.landmarks) and loaded.image_size == (64, 64)


def test_camera_is_a_typed_field_and_old_files_still_load(tmp_path):
    head = _head(FlameTrack, camera="perspective", focal_px=1400.0)
    loaded = HeadTrack.load(head.save(tmp_path / "h.npz"))
    assert isinstance(loaded, FlameTrack) and (loaded.camera, loaded.focal_px) == ("perspective", 1400.0)
    assert "camera" not in loaded.extras
    with pytest.raises(InputError, match="focal_px"):
        _head(camera="perspective")
    with pytest.raises(InputError, match="camera must be one of"):
        _head(camera="fisheye")
    # format 1 kept the camera in extras
    from magicportrait.types import save_npz

    arrays, meta = head.to_arrays()
    meta = {**meta, "extras": {"camera": "perspective", "focal_px": 900.0}}
    meta.pop("camera"), meta.pop("focal_px")
    old = HeadTrack.load(save_npz(tmp_path / "old.npz", "FlameTrack", arrays, meta))
    assert (old.camera, old.focal_px, old.extras) == ("perspective", 900.0, {})


def test_source_face_round_trip(tmp_path):
    appearance = RenderAppearance(sh_light=np.ones((9, 3)), vertex_albedo=np.full((5, 3), 0.5))
    source = SourceFace(crop=np.full((64, 64, 3), 7, np.uint8), crop_matrix=np.eye(2, 3), track=_track(1),
                        head=_head(FlameTrack, frames=1), appearance=appearance, image_digest="abc")
    loaded = SourceFace.load(source.save(tmp_path / "s.npz"))
    assert loaded.image_digest == "abc" and loaded.size == 64 and isinstance(loaded.head, FlameTrack)
    assert np.array_equal(loaded.appearance.vertex_albedo, appearance.vertex_albedo)
    assert np.array_equal(loaded.track.landmarks, source.track.landmarks)
    bare = SourceFace.load(dataclasses.replace(source, appearance=None).save(tmp_path / "b.npz"))
    assert bare.appearance is None


def test_guidance_maps_round_trip_as_uint8(tmp_path):
    depth = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])
    maps = GuidanceMaps(depth=depth, normal=torch.full((1, 2, 2, 3), 0.2), render=torch.full((1, 2, 2, 3), 2.0),
                        mask=depth > 0)
    uint8 = maps.to_uint8()
    assert uint8["depth"][0, :, :, 0].tolist() == [[0, 128], [255, 64]]  # round(255 x), clamped
    assert uint8["render"].max() == 255 and uint8["normal"].max() == 51
    loaded = GuidanceMaps.load(maps.save(tmp_path / "g.npz"))
    assert {name: loaded.to_uint8()[name].tolist() for name in GUIDANCE_NAMES} == \
        {name: uint8[name].tolist() for name in GUIDANCE_NAMES}


def test_frame_names_sort_in_order_past_ten_thousand():
    assert frame_name(0, 12) == "frame_0001.png" and frame_name(9998, 9999) == "frame_9999.png"
    names = [frame_name(i, 10001) for i in (0, 9, 9999, 10000)]
    assert names == ["frame_00001.png", "frame_00010.png", "frame_10000.png", "frame_10001.png"]
    assert names == sorted(names)


def _write_guidance(root, counts=(3, 3, 3), sizes=(16, 16, 16)):
    for name, count, size in zip(GUIDANCE_NAMES, counts, sizes, strict=True):
        folder = FrameFolder(root / name, count).create()
        for index in range(count):
            folder.write(index, np.full((size, size, 3), 10 * index, np.uint8))
    return root


def test_guidance_folder_reads_frames_by_name(tmp_path):
    folder = GuidanceFolder(_write_guidance(tmp_path / "g"))
    assert folder.num_frames == 3 and folder.size == (16, 16)
    frames = folder.loaders()["normal"](1, 3)
    assert frames.shape == (2, 16, 16, 3) and frames[:, 0, 0, 0].tolist() == [10, 20]


@pytest.mark.parametrize("counts, sizes, message", [
    ((3, 2, 3), (16, 16, 16), "disagree in frame count"),
    ((3, 3, 3), (16, 24, 16), "disagree in size"),
    ((0, 0, 0), (16, 16, 16), "hold no frames"),
])
def test_guidance_folders_that_disagree_are_refused(tmp_path, counts, sizes, message):
    with pytest.raises(InputError, match=message):
        GuidanceFolder(_write_guidance(tmp_path / "g", counts, sizes))


def test_guidance_folder_without_a_map_is_refused(tmp_path):
    (tmp_path / "g" / "depth").mkdir(parents=True)
    with pytest.raises(InputError, match="no normal/, render/ folder"):
        GuidanceFolder(tmp_path / "g")


def test_manifest_version_is_checked(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 99, "clips": []}))
    with pytest.raises(InputError, match="format version 99"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="not a prepared-dataset manifest"):
        load_manifest(tmp_path)
    with pytest.raises(InputError, match="Prepare the dataset first"):
        load_manifest(tmp_path / "absent")


def test_asset_errors_say_where_the_path_came_from(tmp_path, monkeypatch):
    monkeypatch.delenv(FLAME.env, raising=False)
    assert resolve_asset(FLAME, None) is None
    with pytest.raises(InputError, match=r"FLAME model file given with --flame does not exist: .*nope\.pkl"):
        resolve_asset(FLAME, tmp_path / "nope.pkl")
    monkeypatch.setenv(FLAME.env, str(tmp_path))
    with pytest.raises(InputError, match=r"named by \$MAGICPORTRAIT_FLAME is not a file"):
        resolve_asset(FLAME, None)
    (tmp_path / "model.pkl").write_bytes(b"x")
    assert resolve_asset(FLAME, tmp_path / "model.pkl") == tmp_path / "model.pkl"  # a flag beats the environment
    with pytest.raises(CheckpointError, match="magicportrait weights download"):
        resolve_asset(WEIGHTS, tmp_path / "model.pkl")
