"""``magicportrait animate`` end to end on the bundled example with tiny random weights the test writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicportrait.cli.main import main
from magicportrait.io.video import iter_frames, probe_video

NUM_FRAMES = 14  # two context windows of 12 (the second wraps around), like the official run
SIZE = 128
FAST = ["--size", str(SIZE), "--steps", "2", "--max-frames", str(NUM_FRAMES), "--no-show-progress"]
EXAMPLE_FRAMES = 20  # the conftest's example fixture writes the bundled example this long


@pytest.fixture(scope="module")
def animated(release, example, tmp_path_factory):
    source, driving = example
    output = tmp_path_factory.mktemp("animate") / "out"
    assert main(["animate", "-s", str(source), "-d", str(driving), "-o", str(output), "--weights", str(release),
                 "--write-frames", *FAST]) == 0
    return output


def test_result_and_grid(animated):
    crop = probe_video(animated / "result_crop.mp4")
    assert (crop.num_frames, crop.fps, crop.width, crop.height) == (NUM_FRAMES, 25.0, SIZE, SIZE)
    pasted = probe_video(animated / "result.mp4")  # pasted back into the 512x512 source image
    assert (pasted.num_frames, pasted.fps, pasted.width, pasted.height) == (NUM_FRAMES, 25.0, 512, 512)
    grid = probe_video(animated / "grid.mp4")
    assert (grid.num_frames, grid.width, grid.height) == (NUM_FRAMES, 6 * SIZE, SIZE)
    assert (animated / "guidance" / "depth" / "frame_0014.png").is_file()
    frames = np.stack(list(iter_frames(animated / "result_crop.mp4"))).astype(float)
    assert frames.std() > 5  # random weights give a textured image, not a flat (NaN -> 0) frame
    # The grid's last panel is the result, its first the source crop.
    panel = next(iter_frames(animated / "grid.mp4"))[:, 5 * SIZE:].astype(float)
    assert np.abs(panel - frames[0]).mean() < 6


def test_generate_reproduces_animate_from_the_guidance_it_wrote(animated, release, tmp_path, capsys):
    """The diffusion generator alone, on animate's guidance folder, makes animate's crops bit for bit."""
    output = tmp_path / "generated"
    assert main(["generate", "--guidance", str(animated / "guidance"), "-o", str(output), "--weights", str(release),
                 "--steps", "2", "--no-show-progress"]) == 0
    assert "Wrote 14 frames at 25 fps" in capsys.readouterr().out  # the fps of the folder's aligned_head.npz
    generated = np.stack(list(iter_frames(output / "result.mp4")))
    animated_crops = np.stack(list(iter_frames(animated / "result_crop.mp4")))
    assert generated.shape == (NUM_FRAMES, SIZE, SIZE, 3)
    assert np.array_equal(generated, animated_crops)  # same inputs, same machine: exact
    grid = probe_video(output / "grid.mp4")  # reference | depth | normal | render | result
    assert (grid.num_frames, grid.width, grid.height) == (NUM_FRAMES, 5 * SIZE, SIZE)


def test_generate_refuses_folders_that_disagree(animated, release, tmp_path, capsys):
    import shutil

    broken = tmp_path / "guidance"
    shutil.copytree(animated / "guidance", broken)
    (broken / "normal" / "frame_0014.png").unlink()
    assert main(["generate", "-g", str(broken), "-o", str(tmp_path / "out"), "--weights", str(release)]) == 2
    error = capsys.readouterr().err
    assert "disagree in frame count" in error and "normal/ 13" in error and "depth/ 14" in error
    assert not (tmp_path / "out").exists()
    assert main(["generate", "-g", str(animated / "guidance"), "-o", str(tmp_path / "out"), "--weights",
                 str(release), "--fps", "0"]) == 2
    assert "--fps must be in (0, 240], got 0." in capsys.readouterr().err


def test_animate_streams_its_guidance_without_pngs(release, example, tmp_path):
    output = tmp_path / "out"
    assert main(["animate", "-s", str(example[0]), "-d", str(example[1]), "-o", str(output), "--weights",
                 str(release), *FAST, "--max-frames", "3", "--no-write-grid"]) == 0
    written = sorted(path.name for path in (output / "guidance").iterdir())
    assert written == ["aligned_head.npz", "source.png", "source_face.npz", "source_track.npz", "track.npz"]


def test_same_seed_same_video_and_guidance_matters(release, example):
    from magicportrait.io.image import load_image
    from magicportrait.models.generation import GenerationConfig, GenerationPipeline
    from magicportrait.models.release import load_release, resolve_release_paths

    torch.manual_seed(0)
    pipeline = GenerationPipeline(**load_release(resolve_release_paths(release)))
    reference = load_image(example[0])[:SIZE, :SIZE]
    rng = np.random.default_rng(0)
    guidance = {name: rng.integers(0, 256, (NUM_FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
                for name in ("depth", "normal", "render")}
    config = GenerationConfig(steps=2, show_progress=False)
    first = pipeline.generate_latents(reference, guidance, config)
    second = pipeline.generate_latents(reference, guidance, config)
    assert torch.isfinite(first).all() and first.shape == (1, 4, NUM_FRAMES, SIZE // 8, SIZE // 8)
    assert torch.equal(first, second)
    other = pipeline.generate_latents(reference, {**guidance, "depth": guidance["depth"][::-1].copy()}, config)
    assert (other - first).abs().mean() > 1e-3  # the guidance reaches the result


def test_missing_weights_say_what_is_needed(example, tmp_path, capsys):
    source, driving = example
    (tmp_path / "weights" / "ckpts").mkdir(parents=True)
    code = main(["animate", "-s", str(source), "-d", str(driving), "-o", str(tmp_path / "out"), "--weights",
                 str(tmp_path / "weights"), *FAST])
    assert code == 2
    error = capsys.readouterr().err
    for needed in ("denoising_unet.pth", "reference_unet.pth", "guidance_encoder_depth.pth", "motion_module",
                   "stable-diffusion-v1-5", "sd-vae-ft-mse", "magicportrait weights download"):
        assert needed in error
    assert not (tmp_path / "out").exists()


def test_diffusion_without_weights_says_so(example, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAGICPORTRAIT_WEIGHTS", raising=False)
    source, driving = example
    assert main(["animate", "-s", str(source), "-d", str(driving), "-o", str(tmp_path / "out"), "--backend",
                 "diffusion", *FAST]) == 2
    assert "No diffusion weights given" in capsys.readouterr().err


def test_mismatched_checkpoint_is_refused(release, example, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(release, broken)
    state = torch.load(broken / "ckpts" / "reference_unet.pth", weights_only=True)
    state.pop("conv_in.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, broken / "ckpts" / "reference_unet.pth")
    source, driving = example
    assert main(["animate", "-s", str(source), "-d", str(driving), "-o", str(tmp_path / "out"), "--weights",
                 str(broken), *FAST]) == 2
    error = capsys.readouterr().err
    assert "reference_unet.pth" in error and "conv_in.weight" in error and "extra.weight" in error


def test_size_must_suit_the_latents(release, example, tmp_path, capsys):
    source, driving = example
    assert main(["animate", "-s", str(source), "-d", str(driving), "-o", str(tmp_path / "out"), "--weights",
                 str(release), "--size", "100", "--no-show-progress"]) == 2
    assert "multiple of 64" in capsys.readouterr().err


def test_own_format_round_trip(release, example, tmp_path):
    from magicportrait.io.image import load_image
    from magicportrait.models.generation import GenerationConfig
    from magicportrait.pipelines.animate import AnimateConfig, MagicPortraitPipeline

    config = AnimateConfig(generation=GenerationConfig(steps=1, show_progress=False))
    official = MagicPortraitPipeline.from_pretrained(release, config=config)
    saved = official.save_pretrained(tmp_path / "saved")
    assert (saved / "denoising_unet.safetensors").is_file() and (saved / "denoising_unet.json").is_file()
    reloaded = MagicPortraitPipeline.from_pretrained(saved, config=config)
    reference = load_image(example[0])[:SIZE, :SIZE]
    guidance = {name: np.full((3, SIZE, SIZE, 3), 100 + 20 * i, np.uint8)
                for i, name in enumerate(("depth", "normal", "render"))}
    first = official.generator.generate_latents(reference, guidance, config.generation)
    second = reloaded.generator.generate_latents(reference, guidance, config.generation)
    assert torch.equal(first, second)


def test_driving_audio_is_kept(release, example, tmp_path):
    import av

    from magicportrait.io.video import VideoWriter

    tone = tmp_path / "tone.wav"
    with av.open(str(tone), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        samples = (3000 * np.sin(np.linspace(0, 2 * np.pi * 440, 16000))).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    driving = tmp_path / "driving_with_audio.mp4"
    with VideoWriter(driving, 25.0, audio_from=tone) as writer:
        for frame in list(iter_frames(example[1]))[:NUM_FRAMES]:
            writer.write(frame)
    assert probe_video(driving).has_audio
    output = tmp_path / "out"
    assert main(["animate", "-s", str(example[0]), "-d", str(driving), "-o", str(output), "--weights",
                 str(release), *FAST, "--no-write-grid"]) == 0
    for name in ("result.mp4", "result_crop.mp4"):
        result = probe_video(output / name)
        assert result.has_audio and result.num_frames == NUM_FRAMES
    assert not (output / "grid.mp4").exists()
