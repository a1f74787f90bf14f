"""``guide --tracker deca-smirk | smirk``: the paper's tracker through the pipeline, with the random-weight DECA and
SMIRK files in the official formats (../shared/vectors), a synthetic FLAME and texture space. With random weights
the maps are meaningless, so the tests check the plumbing: the aligned head and the render appearance the pipeline
writes equal what the encoders, the official transfer and the conversion give when called directly."""

from __future__ import annotations

import lzma
import shutil
from itertools import islice

import numpy as np
import pytest

from magicportrait.alignment import AlignmentConfig
from magicportrait.alignment.codes import align_codes
from magicportrait.cli.main import main
from magicportrait.heads.flame_codes import head_track_from_codes
from magicportrait.heads.flame_head import FlameHeadModel
from magicportrait.io.image import load_image
from magicportrait.io.video import iter_frames
from magicportrait.tracking.flame_encoders import FlameEncoderConfig, FlameEncoders
from magicportrait.types import FlameCodes, FlameTrack, HeadTrack, RenderAppearance, SourceFace, Track
from shared_paths import DECA_VECTORS, SMIRK_VECTORS, needs_partial_flame
from synthetic_flame import write_synthetic_eyelids, write_synthetic_flame, write_synthetic_texture

pytestmark = [needs_partial_flame, pytest.mark.skipif(
    not (DECA_VECTORS / "deca_model.tar.xz").is_file() or not (SMIRK_VECTORS / "SMIRK_em1.pt").is_file(),
    reason="the DECA / SMIRK test vectors (../shared/vectors) are not here")]
EXAMPLE_FRAMES = 5
SIZE = 256


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("paper-tracker")
    deca = folder / "deca_model.tar"
    with lzma.open(DECA_VECTORS / "deca_model.tar.xz") as packed, open(deca, "wb") as out:
        shutil.copyfileobj(packed, out)
    return {"deca": deca, "smirk": SMIRK_VECTORS / "SMIRK_em1.pt", "flame": write_synthetic_flame(folder),
            "texture": write_synthetic_texture(folder)}


def _guide(example, assets, output, tracker: str, *extra: str) -> int:
    source, driving = example
    return main(["guide", "-s", str(source), "-d", str(driving), "-o", str(output), "--size", str(SIZE),
                 "--flame", str(assets["flame"]), "--flame-texture", str(assets["texture"]), "--tracker", tracker,
                 "--deca-weights", str(assets["deca"]), "--smirk-weights", str(assets["smirk"]),
                 "--no-show-progress", "--no-write-preview", "--no-write-frames", *extra])


def _expected(example, assets, output, tracker: str, alignment: AlignmentConfig):
    """The aligned head from calling the encoders, the transfer and the conversion directly on the run's crop and
    tracks (``alignment`` in the absolute pose mode)."""
    source = SourceFace.load(output / "source_face.npz")
    track = Track.load(output / "track.npz")
    encoders = FlameEncoders(FlameEncoderConfig(tracker=tracker, deca_weights=str(assets["deca"]),
                                                smirk_weights=str(assets["smirk"])))
    source_codes = encoders.encode_image(source.crop, source.track.landmarks[0])
    frames = islice(iter_frames(example[1], max_size=1280), track.num_frames)
    driving_codes = encoders.encode_frames(frames, track)
    head_model = FlameHeadModel.from_file(assets["flame"])
    aligned = head_track_from_codes(head_model, align_codes(source_codes, driving_codes, alignment), fps=track.fps)
    return aligned, source_codes


def _assert_same_head(written: HeadTrack, expected: HeadTrack) -> None:
    for name in ("identity", "expression", "rotation", "scale", "translation", "joint_rotations"):
        np.testing.assert_allclose(getattr(written, name), getattr(expected, name), rtol=1e-4, atol=1e-4,
                                   err_msg=name)


def test_deca_smirk_guide_writes_the_official_transfer(example, assets, tmp_path):
    output = tmp_path / "out"
    assert _guide(example, assets, output, "deca-smirk") == 0
    written = HeadTrack.load(output / "aligned_head.npz")
    assert isinstance(written, FlameTrack) and written.num_frames == EXAMPLE_FRAMES
    assert (written.extras["codes"], written.extras["source"]["head_model"]) == ("deca-smirk", "flame")
    expected, source_codes = _expected(example, assets, output, "deca-smirk", AlignmentConfig(smoothing=0))
    _assert_same_head(written, expected)
    appearance = RenderAppearance.load(output / "appearance.npz")  # the portrait's DECA tex and light codes
    np.testing.assert_allclose(appearance.sh_light, source_codes.light[0], atol=1e-6)
    np.testing.assert_allclose(appearance.texture_coefficients, source_codes.tex[0], atol=1e-6)
    for name in ("depth", "normal", "render"):
        assert (output / f"{name}.mp4").stat().st_size > 0


def test_smirk_tracker_with_smoothing_and_relative_pose(example, assets, tmp_path):
    output = tmp_path / "out"
    assert _guide(example, assets, output, "smirk", "--smoothing", "0.6") == 0
    written = HeadTrack.load(output / "aligned_head.npz")
    expected, _ = _expected(example, assets, output, "smirk", AlignmentConfig(smoothing=0.6))
    _assert_same_head(written, expected)
    relative = tmp_path / "relative"
    assert _guide(example, assets, relative, "smirk", "--pose-mode", "relative", "--smoothing", "0") == 0
    source = SourceFace.load(relative / "source_face.npz")
    head = HeadTrack.load(relative / "aligned_head.npz")
    np.testing.assert_allclose(head.rotation[0], source.head.rotation[0], atol=1e-5)  # the reference frame
    assert head.extras["pose_mode"] == "relative"


def test_smirk_eyelids_reach_the_rendered_head(example, assets, tmp_path):
    # --flame-eyelids: SMIRK's eyelid closures of each driving frame become the aligned head's last two expression
    # components (the official pipeline drops them; without the option the head has none).
    output = tmp_path / "out"
    eyelids = write_synthetic_eyelids(tmp_path)
    assert _guide(example, assets, output, "smirk", "--smoothing", "0", "--flame-eyelids", str(eyelids)) == 0
    written = HeadTrack.load(output / "aligned_head.npz")
    driving = FlameCodes.load(output / "driving_codes.npz")
    assert written.expression.shape[1] == FlameHeadModel.from_file(assets["flame"]).num_expression + 2
    np.testing.assert_allclose(written.expression[:, -2:], driving.eyelids, atol=1e-6)
    assert driving.eyelids.min() >= 0.0 and driving.eyelids.max() <= 1.0 and np.ptp(driving.eyelids) > 0.0


@pytest.mark.parametrize("case, message", [
    ("no deca", "--tracker deca-smirk needs the DECA weights file: pass --deca-weights"),
    ("no flame", "--tracker deca-smirk gives FLAME parameters: pass the FLAME 2020 model"),
    ("wrong file", "not a DECA checkpoint"),
])
def test_paper_tracker_errors(example, assets, tmp_path, capsys, monkeypatch, case, message):
    monkeypatch.delenv("MAGICPORTRAIT_DECA", raising=False)
    monkeypatch.delenv("MAGICPORTRAIT_FLAME", raising=False)
    source, driving = example
    args = ["guide", "-s", str(source), "-d", str(driving), "-o", str(tmp_path / "out"), "--tracker", "deca-smirk",
            "--smirk-weights", str(assets["smirk"]), "--no-show-progress"]
    if case != "no flame":
        args += ["--flame", str(assets["flame"])]
    if case != "no deca":
        args += ["--deca-weights", str(assets["smirk"] if case == "wrong file" else assets["deca"])]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_the_source_crop_is_encoded_where_the_portrait_is(example, assets, tmp_path):
    # The 68 iBUG points (from the MediaPipe track) frame DECA's crop on the face of the bundled portrait.
    from magicportrait.tracking.deca_encoder import crop_box
    from magicportrait.tracking.ibug68 import ibug68_from_mediapipe

    output = tmp_path / "out"
    assert _guide(example, assets, output, "deca-smirk", "--max-frames", "1") == 0
    source = SourceFace.load(output / "source_face.npz")
    points = ibug68_from_mediapipe(source.track.landmarks[0, :, :2])
    centre, side = crop_box(points, scale=1.3)
    eyes = source.track.landmarks[0, [33, 263], :2].mean(axis=0)
    assert np.linalg.norm(centre - eyes) < 0.25 * side and 0.3 * SIZE < side < 1.0 * SIZE
    assert load_image(output / "source.png").shape == (SIZE, SIZE, 3)


def test_prepare_encodes_each_training_frame(example, assets, tmp_path):
    from magicportrait.heads import HeadModelConfig
    from magicportrait.io.frames import FrameFolder
    from magicportrait.training.prepare import PrepareConfig, prepare_dataset

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(example[1], videos / "clip.mp4")
    encoders = FlameEncoderConfig(tracker="smirk", smirk_weights=str(assets["smirk"]))
    head = HeadModelConfig(flame=str(assets["flame"]), flame_texture=str(assets["texture"]), encoders=encoders)
    prepare_dataset(videos, tmp_path / "data", PrepareConfig(size=128, min_face_px=0, show_progress=False, head=head))
    clip = tmp_path / "data" / "clips" / "clip"
    written, track = HeadTrack.load(clip / "head.npz"), Track.load(clip / "track.npz")
    folder = FrameFolder(clip / "frames", track.num_frames)
    codes = FlameEncoders(encoders).encode_frames((folder.read(i) for i in range(len(folder))), track)
    _assert_same_head(written, head_track_from_codes(FlameHeadModel.from_file(assets["flame"]), codes))
    assert written.num_frames == EXAMPLE_FRAMES and (clip / "render" / "frame_0001.png").is_file()


def test_evaluate_with_smirk_compares_smirk_pose_and_expression(example, assets):
    # The paper's Table I protocol: APD / AED from SMIRK's parameters of the generated and the driving frames.
    from magicportrait.evaluation.motion import compare_heads, head_from_codes
    from magicportrait.evaluation.suite import EvaluationConfig, Evaluator
    from magicportrait.heads import HeadModelConfig
    from magicportrait.pipelines.evaluate import read_frames
    from magicportrait.tracking import FaceTracker, TrackerConfig

    frames, fps = read_frames(example[1])
    encoders = FlameEncoderConfig(tracker="smirk", smirk_weights=str(assets["smirk"]))
    config = EvaluationConfig(metrics="apd,aed,p_rmse,e_rmse", show_progress=False,
                              head=HeadModelConfig(encoders=encoders))
    evaluator = Evaluator(config)
    portrait = load_image(example[0])
    same = evaluator.evaluate(frames, frames, portrait, fps=fps)
    assert same.values["apd"] == 0.0 and same.values["aed"] == 0.0 and same.info["head_model"] == "smirk"
    generated = frames[::-1].copy()
    report = evaluator.evaluate(generated, frames, portrait, fps=fps)
    with FaceTracker(TrackerConfig(show_progress=False)) as tracker:
        tracks = [tracker.track_frames(list(video), fps=fps, num_frames=len(video)) for video in (generated, frames)]
    heads = [head_from_codes(FlameEncoders(encoders).encode_frames(iter(video), track))
             for video, track in zip((generated, frames), tracks, strict=True)]
    expected = compare_heads(*heads, pose=config.pose_mode(False))
    assert report.values["aed"] > 0
    np.testing.assert_allclose([report.values[name] for name in ("apd", "aed", "p_rmse", "e_rmse")],
                               [expected.apd, expected.aed, expected.p_rmse, expected.e_rmse], rtol=1e-5)


def test_codes_written_by_a_run_drive_another_run_as_files(example, assets, tmp_path):
    # --source-flame-codes / --flame-codes with our own tracker: the codes a deca-smirk run saved (each in its own
    # image's pixels) give the same aligned head and appearance without the encoders.
    encoded = tmp_path / "encoded"
    assert _guide(example, assets, encoded, "deca-smirk") == 0
    replay = tmp_path / "replay"
    assert _guide(example, assets, replay, "ours", "--source-flame-codes", str(encoded / "source_codes.npz"),
                  "--flame-codes", str(encoded / "driving_codes.npz")) == 0
    _assert_same_head(HeadTrack.load(replay / "aligned_head.npz"), HeadTrack.load(encoded / "aligned_head.npz"))
    np.testing.assert_allclose(RenderAppearance.load(replay / "appearance.npz").sh_light,
                               RenderAppearance.load(encoded / "appearance.npz").sh_light, atol=1e-6)
    # driving codes alone (our fit of the portrait), and too few frames
    assert _guide(example, assets, tmp_path / "driving-only", "ours", "--pose-mode", "absolute",
                  "--flame-codes", str(encoded / "driving_codes.npz")) == 0
    codes = FlameCodes.load(encoded / "driving_codes.npz")
    codes.select(slice(0, 2)).save(tmp_path / "short.npz")
    assert _guide(example, assets, tmp_path / "short", "ours", "--flame-codes", str(tmp_path / "short.npz")) == 2
