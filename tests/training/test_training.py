"""Stage 1 / stage 2 training on tiny CPU configurations (models/tiny.py widths, 64x64 frames, a few steps)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from magicportrait.errors import DependencyError, InputError
from magicportrait.models.checkpoints import read_state_dict
from magicportrait.training.config import load_config
from magicportrait.training.data import ResumableSampler, Stage1Dataset, Stage2Dataset
from magicportrait.training.trainer import Trainer, latest_checkpoint
from shared_paths import PROJECT

CONFIGS = PROJECT / "configs"
SIZE = 64
OFFICIAL = ["denoising_unet.pth", "reference_unet.pth", "guidance_encoder_depth.pth", "guidance_encoder_normal.pth",
            "guidance_encoder_render.pth"]


def write_synthetic_dataset(root: Path, clips: int = 2, frames: int = 8, seed: int = 0) -> Path:
    """A prepared dataset (the shared format): per clip a moving bright disc on a clip-coloured gradient, and maps
    derived from the disc (depth: its height field, normal: its gradient, render: a shaded disc). Plus one unusable
    clip and one incomplete clip (no clip.json), which readers must skip."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    entries = []
    for index in range(clips + 2):
        name = f"clip{index:02d}"
        folder = root / "clips" / name
        base = rng.uniform(40, 200, size=3)
        for frame in range(frames):
            cx, cy = 20 + 3 * frame + 4 * index, 32 + 2 * np.sin(frame)
            height = np.clip(1 - ((xx - cx) ** 2 + (yy - cy) ** 2) / 15**2, 0, 1)
            image = base * (0.6 + 0.4 * xx[..., None] / SIZE) + 80 * height[..., None]
            gy, gx = np.gradient(height)
            maps = {"frames": image, "depth": np.repeat(255 * height[..., None], 3, axis=2),
                    "normal": np.stack([128 + 600 * gx, 128 + 600 * gy, 255 * height], axis=2),
                    "render": np.repeat(255 * height[..., None] ** 0.5, 3, axis=2) * [1.0, 0.8, 0.7]}
            for kind, value in maps.items():
                (folder / kind).mkdir(parents=True, exist_ok=True)
                rgb = np.clip(value, 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / kind / f"frame_{frame + 1:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        entry = {"name": name, "path": f"clips/{name}", "video": f"videos/{name}.mp4", "num_frames": frames,
                 "fps": 25.0, "flags": {"face_lost_fraction": 0.0, "too_small": False, "too_blurry": False},
                 "usable": index != clips}
        if index != clips + 1:  # the last clip was interrupted: no clip.json
            (folder / "clip.json").write_text(json.dumps(entry))
        entries.append(entry)
    manifest = {"version": 1, "size": SIZE, "head_model": "mediapipe", "clips": entries, "skipped": []}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from magicportrait.models.tiny import write_tiny_release

    root = tmp_path_factory.mktemp("training")
    write_tiny_release(root / "tiny_release")
    write_synthetic_dataset(root / "data")
    return root


def overrides(workspace: Path, output: str, *extra: str) -> list[str]:
    return [f"data.root={workspace / 'data'}", f"model.sd15={workspace / 'tiny_release/stable-diffusion-v1-5'}",
            f"model.vae={workspace / 'tiny_release/sd-vae-ft-mse'}", f"run.output_dir={workspace / output}",
            "run.show_progress=false", *extra]


def stage1_config(workspace: Path, output: str, *extra: str):
    return load_config(CONFIGS / "tiny_stage1.yaml",
                       overrides(workspace, output, f"model.init_checkpoint_dir={workspace / 'tiny_release/ckpts'}",
                                 *extra))


def losses(output: Path) -> dict[int, float]:
    lines = (output / "log.jsonl").read_text().splitlines()
    return {row["step"]: row["train/loss"] for row in map(json.loads, lines) if "train/loss" in row}


@pytest.fixture(scope="module")
def stage1_run(workspace: Path) -> Path:
    """4 steps, checkpoints at 2 and 4 (the tiny config)."""
    return Trainer(stage1_config(workspace, "stage1")).train()


def test_config_overrides_types_and_unknown_keys(workspace: Path) -> None:
    config = load_config(CONFIGS / "stage1.yaml", ["run.max_steps=7", "optim.learning_rate=3e-4",
                                                   "model.motion_module=null", "diffusion.snr_gamma=2"])
    assert (config.run.max_steps, config.optim.learning_rate, config.diffusion.snr_gamma) == (7, 3e-4, 2.0)
    assert (config.optim.learning_rate, config.data.clip_length, config.diffusion.noise_offset) != (1e-5, 12, 0.05)
    base = load_config(CONFIGS / "stage2.yaml")
    assert (base.optim.learning_rate, base.data.clip_length, base.diffusion.noise_offset, base.stage) == (
        1e-5, 12, 0.05, 2)
    with pytest.raises(InputError, match="run.max_stepz"):
        load_config(CONFIGS / "stage1.yaml", ["run.max_stepz=3"])
    with pytest.raises(InputError, match="run.max_steps"):
        load_config(CONFIGS / "stage1.yaml", ["run.max_steps=many"])
    with pytest.raises(InputError, match="mixed_precision"):
        load_config(CONFIGS / "stage1.yaml", ["run.mixed_precision=fp8"])
    with pytest.raises(InputError, match="stage1_checkpoint_dir"):
        load_config(CONFIGS / "stage2.yaml", ["model.stage1_checkpoint_dir=null"])


def test_8bit_adam_without_bitsandbytes_is_a_clear_error(workspace: Path) -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(DependencyError, match="bitsandbytes"):
            Trainer(stage1_config(workspace, "adam8bit", "optim.use_8bit_adam=true"))
    else:
        pytest.skip("bitsandbytes is installed")


def test_datasets_respect_margin_usable_clips_and_are_deterministic(workspace: Path) -> None:
    data = workspace / "data"
    stage1 = Stage1Dataset(data, SIZE, margin=3, seed=5)
    assert [clip.name for clip in stage1.clips] == ["clip00", "clip01"]  # unusable and incomplete clips skipped
    picks = [stage1.pick_frames(i) for i in range(40)]
    assert all(abs(reference - target) >= 3 for _, reference, target in picks)
    assert {clip.name for clip, _, _ in picks[:2]} == {"clip00", "clip01"}  # one epoch visits every clip
    assert [p[1:] for p in picks] == [p[1:] for p in map(Stage1Dataset(data, SIZE, 3, seed=5).pick_frames, range(40))]
    assert [p[1:] for p in picks] != [p[1:] for p in map(Stage1Dataset(data, SIZE, 3, seed=6).pick_frames, range(40))]
    item = stage1[0]
    assert item["reference"].shape == (3, SIZE, SIZE) and item["depth"].shape == (3, SIZE, SIZE)
    assert -1.0 <= item["target"].min() < 0 < item["target"].max() <= 1.0
    clip, _, target = stage1.pick_frames(0)
    png = cv2.imread(str(clip.path / "depth" / f"frame_{target + 1:04d}.png"))[..., ::-1]
    assert torch.equal(item["depth"], torch.from_numpy(png / 255.0).float().permute(2, 0, 1))  # maps in [0, 1]
    stage2 = Stage2Dataset(data, SIZE, clip_length=5, seed=5)
    clip, _, frames = stage2.pick_frames(3)
    assert frames == list(range(frames[0], frames[0] + 5)) and frames[-1] < clip.num_frames
    assert stage2[3]["frames"].shape == (3, 5, SIZE, SIZE) and stage2[3]["render"].shape == (3, 5, SIZE, SIZE)
    with pytest.raises(InputError, match="clip_length=9"):
        Stage2Dataset(data, SIZE, clip_length=9, seed=0)
    stream = ResumableSampler(start=3, rank=1, world_size=2)
    assert [index for index, _ in zip(stream, range(3), strict=False)] == [7, 9, 11]


def test_stage1_writes_official_checkpoints_and_keeps_frozen_weights(workspace: Path, stage1_run: Path) -> None:
    assert latest_checkpoint(stage1_run) == stage1_run / "checkpoint-4"
    initial = workspace / "tiny_release" / "ckpts"
    for step in (2, 4):
        assert sorted(p.name for p in (stage1_run / f"checkpoint-{step}").glob("*.pth")) == sorted(OFFICIAL)
    trained = {name: read_state_dict(stage1_run / "checkpoint-4" / name) for name in OFFICIAL}
    start = {name: read_state_dict(initial / name) for name in OFFICIAL}
    assert not any("motion_modules." in key for key in trained["denoising_unet.pth"])
    frozen = [k for k in start["reference_unet.pth"] if k.startswith("up_blocks.3.")]
    assert frozen and all(torch.equal(trained["reference_unet.pth"][k], start["reference_unet.pth"][k])
                          for k in frozen)
    unused = [k for k in start["guidance_encoder_depth.pth"] if k.startswith(("guidance_attention.", "attentions.0."))]
    assert unused and all(torch.equal(trained["guidance_encoder_depth.pth"][k], start["guidance_encoder_depth.pth"][k])
                          for k in unused)
    for name in OFFICIAL:  # every network trained (its first trainable tensor moved)
        changed = [k for k in start[name] if not torch.equal(trained[name][k], start[name][k])]
        assert changed, name
    assert not torch.equal(trained["reference_unet.pth"]["up_blocks.2.resnets.0.conv1.weight"],
                           start["reference_unet.pth"]["up_blocks.2.resnets.0.conv1.weight"])
    # The VAE of the run is bit-identical to the one on disk.
    from diffusers import AutoencoderKL

    trainer = Trainer(stage1_config(workspace, "stage1"))  # resumes at step 4: nothing left to do
    assert trainer.global_step == 4
    vae = AutoencoderKL.from_pretrained(str(workspace / "tiny_release/sd-vae-ft-mse"))
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), trainer.vae.state_dict().values(),
                                                 strict=True))
    assert all(not p.requires_grad for p in trainer.vae.parameters())
    assert len(losses(stage1_run)) == 4 and all(np.isfinite(list(losses(stage1_run).values())))


def test_resume_gives_the_uninterrupted_losses(workspace: Path, stage1_run: Path) -> None:
    output = Trainer(stage1_config(workspace, "stage1_resumed", "run.max_steps=2")).train()
    assert not (output / "checkpoint-4").exists()
    Trainer(stage1_config(workspace, "stage1_resumed")).train()  # resumes at checkpoint-2, runs steps 3 and 4
    uninterrupted, resumed = losses(stage1_run), losses(output)
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        assert resumed[step] == pytest.approx(uninterrupted[step], abs=1e-6, rel=0), step
    assert len({round(v, 6) for v in uninterrupted.values()}) == 4  # the steps differ: a real comparison
    position = json.loads((output / "checkpoint-4" / "data_position.json").read_text())
    assert position == {"global_step": 4, "samples_per_process": 8, "num_processes": 1}


def test_loss_halves_when_overfitting_one_sample(workspace: Path) -> None:
    """Fixed sample, noise, timestep (the same CPU generator seed every step) and no reference dropout: the loss of
    that one sample must fall below half its starting value within 12 steps at lr 1e-3 (it does by step 5)."""
    config = stage1_config(workspace, "overfit", "optim.learning_rate=1e-3", "diffusion.reference_dropout=0",
                           "run.batch_size=1", "run.resume=false")
    trainer = Trainer(config)
    batch = next(trainer.loader)
    history = [trainer.training_step(batch, torch.Generator().manual_seed(3)) for _ in range(12)]
    assert history[-1] < 0.5 * history[0] and history[-1] < history[-2], history


def test_stage2_trains_only_motion_modules_and_loads_into_the_pipeline(workspace: Path, stage1_run: Path) -> None:
    stage1 = stage1_run / "checkpoint-4"
    config = load_config(CONFIGS / "tiny_stage2.yaml",
                         overrides(workspace, "stage2", f"model.stage1_checkpoint_dir={stage1}", "run.max_steps=2",
                                   "run.validation_steps=2", "data.clip_length=4", "run.validation_frames=4"))
    output = Trainer(config).train()
    checkpoint = output / "checkpoint-2"
    assert sorted(p.name for p in checkpoint.glob("*.pth")) == sorted([*OFFICIAL, "motion_module.pth"])
    for name in OFFICIAL:  # everything but the motion modules is bit-identical to stage 1
        before, after = read_state_dict(stage1 / name), read_state_dict(checkpoint / name)
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), name
    motion = read_state_dict(checkpoint / "motion_module.pth")
    proj_out = [v for k, v in motion.items() if k.endswith("proj_out.weight")]
    assert proj_out and all(v.abs().max() > 0 for v in proj_out)  # zero-initialised, now trained
    assert (output / "validation" / "step-000002.mp4").stat().st_size > 0
    assert np.isfinite(losses(output)[2])

    from magicportrait.models.generation import GenerationConfig, GenerationPipeline
    from magicportrait.models.release import load_release, resolve_release_paths

    release = workspace / "release_from_training"
    shutil.copytree(workspace / "tiny_release", release)
    shutil.rmtree(release / "ckpts")
    shutil.copytree(checkpoint, release / "ckpts", ignore=shutil.ignore_patterns("state", "*.json"))
    components = load_release(resolve_release_paths(release))
    assert torch.equal(components["denoising_unet"].state_dict()[next(k for k in motion if "proj_out.weight" in k)],
                       proj_out[0])
    pipeline = GenerationPipeline(**components)
    reference = cv2.cvtColor(cv2.imread(str(workspace / "data/clips/clip00/frames/frame_0001.png")), cv2.COLOR_BGR2RGB)
    maps = {kind: np.stack([cv2.imread(str(workspace / f"data/clips/clip00/{kind}/frame_{i:04d}.png"))[..., ::-1]
                            for i in range(1, 5)]) for kind in ("depth", "normal", "render")}
    video = pipeline(reference, maps, GenerationConfig(steps=2, context_frames=4, show_progress=False))
    assert video.shape == (4, SIZE, SIZE, 3) and video.dtype == np.uint8 and video.std() > 0


def test_prepare_then_train_from_the_command_line(workspace: Path, tmp_path: Path) -> None:
    """The whole chain on a real face video: `magicportrait prepare`, then `magicportrait train` (stage 1, 2 steps)."""
    import shutil

    from magicportrait.cli.main import main
    from magicportrait.pipelines.example import write_example

    videos = tmp_path / "videos"
    _, driving = write_example(tmp_path / "example", num_frames=8)
    videos.mkdir()
    shutil.copy(driving, videos / "talk.mp4")
    assert main(["prepare", str(videos), "-o", str(tmp_path / "data"), "--size", "64", "--min-face-px", "32",
                 "--no-show-progress"]) == 0
    settings = [item for key in overrides(workspace, "cli_run", "run.max_steps=2", "run.checkpoint_steps=2",
                                          f"model.init_checkpoint_dir={workspace / 'tiny_release/ckpts'}")
                for item in ("--set", key.replace(str(workspace / "data"), str(tmp_path / "data")))]
    assert main(["train", "--config", str(CONFIGS / "tiny_stage1.yaml"), *settings]) == 0
    assert (workspace / "cli_run" / "checkpoint-2" / "denoising_unet.pth").is_file()
    assert sorted(losses(workspace / "cli_run")) == [1, 2]
