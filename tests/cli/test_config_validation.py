"""Every config refuses bad values when it is made, with an InputError naming the CLI flag."""

from __future__ import annotations

import dataclasses
import math
import typing
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from magicportrait.alignment import AlignmentConfig, align_to_source
from magicportrait.batch import BatchConfig, EngineConfig
from magicportrait.config import HELP_GROUPS, _literal_fields, check_range, flag, unwrap_optional
from magicportrait.errors import InputError, MagicPortraitError
from magicportrait.evaluation.suite import EvaluationConfig
from magicportrait.heads.flame_head import FlameFitConfig
from magicportrait.models.generation import GenerationConfig, GenerationPipeline
from magicportrait.pipelines.animate import AnimateConfig
from magicportrait.pipelines.geometric import GeometricConfig
from magicportrait.pipelines.guide import GuideConfig
from magicportrait.rendering.appearance import AppearanceConfig
from magicportrait.tracking import TrackerConfig
from magicportrait.training.config import apply_overrides
from magicportrait.training.prepare import PrepareConfig
from magicportrait.types import HeadTrack

CLI_CONFIGS = (AlignmentConfig, TrackerConfig, FlameFitConfig, AppearanceConfig, GeometricConfig, GenerationConfig,
               EvaluationConfig, PrepareConfig, GuideConfig, AnimateConfig)


def test_input_error_is_what_the_cli_prints():
    assert issubclass(InputError, MagicPortraitError) and not issubclass(InputError, ValueError)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: AlignmentConfig(smoothing=2), "--smoothing must be between 0 and 1, got 2."),
    (lambda: AlignmentConfig(smoothing=math.nan), "--smoothing must be between 0 and 1, got nan."),
    (lambda: AlignmentConfig(reference_frame=-1), "--reference-frame must be at least 0, got -1."),
    (lambda: AlignmentConfig(pose_mode="sideways"),
     "--pose-mode must be one of relative, absolute; got 'sideways'."),
    (lambda: TrackerConfig(max_faces=0), "--max-faces must be at least 1, got 0."),
    (lambda: TrackerConfig(box_smoothing=1.5), "--box-smoothing must be between 0 and 1, got 1.5."),
    (lambda: TrackerConfig(max_working_size=64), "--max-working-size must be at least 128, got 64."),
    (lambda: FlameFitConfig(fov_degrees=180), "--flame-fov-degrees must be in (0, 180), got 180."),
    (lambda: FlameFitConfig(huber_px=0), "--flame-huber-px must be positive, got 0."),
    (lambda: FlameFitConfig(chunk_size=0), "--flame-chunk-size must be at least 1, got 0."),
    (lambda: AppearanceConfig(saturation=0.0), "--appearance-saturation must be in (0, 1], got 0."),
    (lambda: AppearanceConfig(frontal_threshold=1.0), "--appearance-frontal-threshold must be in [0, 1), got 1."),
    (lambda: GeometricConfig(neck_length=5.0), "--geometric-neck-length must be between 0.05 and 3, got 5."),
    (lambda: GeometricConfig(warp_inner=3.0, warp_outer=2.0),
     "--geometric-warp-inner (3) must be below --geometric-warp-outer (2)."),
    (lambda: GenerationConfig(steps=0), "--steps must be between 1 and 1000, got 0."),
    (lambda: GenerationConfig(context_overlap=12), "--context-overlap must be between 0 and 11, got 12."),
    (lambda: GenerationConfig(dtype="fp8"), "--dtype must be one of auto, fp32, fp16, bf16; got 'fp8'."),
    (lambda: EvaluationConfig(batch_size=0), "--batch-size must be at least 1, got 0."),
    (lambda: EvaluationConfig(metrics="fid,sharpness"), "Unknown metric(s) in --metrics: sharpness."),
    (lambda: PrepareConfig(max_lost=1.5), "--max-lost must be between 0 and 1, got 1.5."),
    (lambda: EngineConfig(workers=0), "--workers must be at least 1, got 0."),
    (lambda: EngineConfig(engine="dask"), "--engine must be one of"),
    (lambda: BatchConfig(shard_index=2, num_shards=2), "--shard-index 2 is not below --num-shards 2"),
    (lambda: GuideConfig(size=32), "--size must be between 64 and 2048, got 32."),
    (lambda: GuideConfig(face=-1), "--face must be at least 0, got -1."),
    (lambda: GuideConfig(chunk_size=0), "--chunk-size must be at least 1, got 0."),
    (lambda: GuideConfig(max_frames=3, alignment=AlignmentConfig(reference_frame=3)),
     "--reference-frame 3 is outside the first --max-frames 3 frames."),
    (lambda: AnimateConfig(backend="gan"), "--backend must be one of auto, diffusion, geometric; got 'gan'."),
    (lambda: AnimateConfig(max_output_size=10), "--max-output-size must be at least 64, got 10."),
    (lambda: AnimateConfig(guide=GuideConfig(size=100)), "--size must be a multiple of 64"),
])
def test_bad_value_names_the_flag(make, message):
    with pytest.raises(InputError) as caught:
        make()
    assert str(caught.value).startswith(message)


def test_training_keys_are_named():
    with pytest.raises(InputError, match=r"optim\.adam_beta1=1\.0 is invalid: it must be in \[0, 1\)"):
        apply_overrides({}, ["optim.adam_beta1=1.0"])
    with pytest.raises(InputError, match=r"run\.validation_frames=0 is invalid"):
        apply_overrides({}, ["run.validation_frames=0"])


def test_defaults_are_valid_and_bounds_inclusive():
    for config_class in CLI_CONFIGS:
        config_class()
    assert AlignmentConfig(smoothing=1.0).smoothing == 1.0  # both ends of a closed range pass
    assert GeometricConfig(feather=0.2, neck_length=0.05).feather == 0.2


def _nested_prefixes(config_class: type, prefix: str = ""):
    """(config class, flag prefix it is reached with) of every config nested in ``config_class``."""
    hints = typing.get_type_hints(config_class)
    for item in dataclasses.fields(config_class):
        annotation, _ = unwrap_optional(hints[item.name])
        if dataclasses.is_dataclass(annotation):
            nested = prefix + item.metadata.get("prefix", "")
            yield annotation, nested
            yield from _nested_prefixes(annotation, nested)


def test_messages_use_the_prefix_the_cli_gives():
    """A config's cli_prefix (used in its messages) is the prefix its flags get where it is nested."""
    for outer in CLI_CONFIGS:
        for nested, prefix in _nested_prefixes(outer):
            assert getattr(nested, "cli_prefix", "") == prefix, (outer.__name__, nested.__name__)


@pytest.mark.parametrize("config_class", CLI_CONFIGS, ids=lambda c: c.__name__)
def test_every_choice_field_is_checked(config_class):
    """Python callers bypass argparse's choices: each Literal field refuses an unknown value itself."""
    for name, choices, _ in _literal_fields(config_class):
        with pytest.raises(InputError, match=f"^{flag(name, getattr(config_class, 'cli_prefix', ''))} must be one "
                                             f"of {', '.join(choices)}; got 'bogus'"):
            config_class(**{name: "bogus"})


@pytest.mark.parametrize("config_class", CLI_CONFIGS, ids=lambda c: c.__name__)
def test_help_groups_are_known(config_class):
    assert getattr(config_class, "cli_group", None) in HELP_GROUPS
    names = {item.name for item in dataclasses.fields(config_class)}
    for name, group in getattr(config_class, "cli_field_groups", {}).items():
        assert name in names and group in HELP_GROUPS, name


def test_range_messages():
    config = SimpleNamespace(value=5)
    with pytest.raises(InputError, match=r"^--value must be at most 4, got 5\.$"):
        check_range(config, "value", high=4)
    with pytest.raises(InputError, match=r"^--value must be below 5, got 5\.$"):
        check_range(config, "value", high=5, high_open=True)
    with pytest.raises(InputError, match=r"^--value must be greater than 5, got 5\.$"):
        check_range(config, "value", 5, low_open=True)
    check_range(config, "value", 5, 5)
    with pytest.raises(InputError, match=r"^--value must be at most 0\.2, got 0\.2000001\.$"):  # not rounded
        check_range(SimpleNamespace(value=0.2000001), "value", high=0.2)
    check_range(SimpleNamespace(value=None), "value", 1)  # an unset optional passes


def test_device_is_checked():
    with pytest.raises(InputError, match=r"^--device 'gpu' is not a torch device"):
        GuideConfig(device="gpu")
    with pytest.raises(InputError, match=r"^--device 'cuda:x' is not a torch device"):
        GenerationConfig(device="cuda:x")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_an_input_error():
    with pytest.raises(InputError, match=r"^--device cuda: torch .* sees no CUDA device here; use --device cpu\."):
        EvaluationConfig(device="cuda")


def _head(frames: int) -> HeadTrack:
    return HeadTrack(model="mediapipe", identity=np.zeros(3, np.float32), expression=np.zeros((frames, 0), np.float32),
                     rotation=np.zeros((frames, 3), np.float32), scale=np.ones(frames, np.float32),
                     translation=np.zeros((frames, 3), np.float32), image_size=(64, 64), fps=25.0)


def test_reference_frame_past_the_video_is_an_input_error():
    """The config cannot know the video's length; the stage names the flag instead of raising a ValueError."""
    with pytest.raises(InputError, match=r"^--reference-frame 5 is outside the driving video \(frames 0\.\.2\)\."):
        align_to_source(_head(1), _head(3), AlignmentConfig(reference_frame=5))


def test_context_window_longer_than_the_motion_modules_is_an_input_error():
    from magicportrait.models.motion_module import SinusoidalPositionalEncoding

    fake = SimpleNamespace(denoising_unet=torch.nn.Sequential(SinusoidalPositionalEncoding(8, max_len=4)))
    GenerationPipeline._check_window_length(fake, 4)
    with pytest.raises(InputError, match=r"^--context-frames 5 is more than the 4 frames these motion modules can "
                                         r"encode; use --context-frames 4 or fewer\.$"):
        GenerationPipeline._check_window_length(fake, 5)
