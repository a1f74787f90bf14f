"""Strict checkpoint I/O: every mismatch raises CheckpointError naming the file and the keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models import ModelMixin
from safetensors.torch import save_file
from torch import nn

from magicportrait.errors import CheckpointError
from magicportrait.models.checkpoints import (
    OFFICIAL_FILES,
    find_official_checkpoints,
    load_model,
    load_strict,
    merge_motion_modules,
    position_encoding_length,
    read_motion_modules,
    read_state_dict,
    save_model,
)

SOURCE = "weights/tiny.pth"


class TinyNet(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, width: int = 4, depth: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.register_buffer("scale", torch.ones(width))


class OtherNet(TinyNet):
    pass


class Settings:
    """A custom class: its instances are not plain data, so weights_only loading refuses them."""

    def __init__(self):
        self.learning_rate = 1e-5


class Payload:
    """Unpickling this calls print: the kind of code execution weights_only loading prevents."""

    def __reduce__(self):
        return (print, ("this must never run",))


def random_state(module: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(value.shape, generator=generator) for key, value in module.state_dict().items()}


def test_exact_state_dict_loads():
    model, state = TinyNet(), random_state(TinyNet())
    load_strict(model, state, SOURCE)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state.items())


def test_missing_key_is_named_with_the_file():
    state = random_state(TinyNet())
    del state["layers.1.bias"]
    with pytest.raises(CheckpointError) as caught:
        load_strict(TinyNet(), state, SOURCE)
    message = str(caught.value)
    assert SOURCE in message and "1 missing key: layers.1.bias" in message
    assert "unexpected" not in message and "mis-shaped" not in message


def test_missing_key_under_an_ignored_prefix_keeps_its_value():
    model = TinyNet()
    kept = model.layers[1].bias.detach().clone()
    state = {key: value for key, value in random_state(model).items() if not key.startswith("layers.1.")}
    load_strict(model, state, SOURCE, ignore_missing_prefixes=("layers.1.",))
    assert torch.equal(model.layers[1].bias, kept)
    assert torch.equal(model.layers[0].weight, state["layers.0.weight"])


def test_unexpected_key_is_named_with_the_file():
    state = random_state(TinyNet()) | {"layers.2.weight": torch.zeros(4, 4)}
    with pytest.raises(CheckpointError, match=r"1 unexpected key: layers\.2\.weight") as caught:
        load_strict(TinyNet(), state, SOURCE)
    assert SOURCE in str(caught.value)


def test_misshaped_key_is_named_with_both_shapes():
    state = random_state(TinyNet()) | {"layers.0.weight": torch.zeros(4, 5)}
    model = TinyNet()
    before = model.layers[1].weight.detach().clone()
    with pytest.raises(CheckpointError, match=r"layers\.0\.weight \(file \[4, 5\], model \[4, 4\]\)") as caught:
        load_strict(model, state, SOURCE)
    assert SOURCE in str(caught.value)
    assert torch.equal(model.layers[1].weight, before)  # nothing is loaded when anything mismatches


def test_long_key_lists_are_shortened_with_a_count():
    model = TinyNet(depth=8)
    with pytest.raises(CheckpointError) as caught:
        load_strict(model, {}, SOURCE)
    message = str(caught.value)
    assert "17 missing keys" in message and "(7 more)" in message  # 8 weights + 8 biases + scale


def test_safetensors_and_config_round_trip(tmp_path):
    model = TinyNet(width=3, depth=3)
    load_strict(model, random_state(model, seed=1), "random")
    weights = save_model(model, tmp_path, "tiny")
    assert weights == tmp_path / "tiny.safetensors" and (tmp_path / "tiny.json").is_file()

    loaded = load_model(TinyNet, tmp_path, "tiny")
    assert isinstance(loaded, TinyNet) and not loaded.training
    assert loaded.config.width == 3 and loaded.config.depth == 3
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert read_state_dict(weights).keys() == model.state_dict().keys()


def test_load_model_refuses_another_class_and_tampered_weights(tmp_path):
    model = TinyNet()
    save_model(model, tmp_path, "tiny")
    with pytest.raises(CheckpointError, match="describes a TinyNet, not a OtherNet"):
        load_model(OtherNet, tmp_path, "tiny")

    save_file(model.state_dict() | {"extra": torch.zeros(1)}, str(tmp_path / "tiny.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected key: extra") as caught:
        load_model(TinyNet, tmp_path, "tiny")
    assert str(tmp_path / "tiny.safetensors") in str(caught.value)

    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(TinyNet, tmp_path, "absent")


@pytest.mark.parametrize(("payload", "named"), [(Settings, "Settings"), (Payload, "print")])
def test_pickle_with_arbitrary_objects_is_refused(tmp_path, capsys, payload, named):
    path = tmp_path / "untrusted.pth"
    torch.save({"weight": torch.zeros(2), "extra": payload()}, path)
    with pytest.raises(CheckpointError, match="refused to load: the file contains Python objects") as caught:
        read_state_dict(path)
    assert str(path) in str(caught.value) and named in str(caught.value)
    assert "this must never run" not in capsys.readouterr().out


def test_read_state_dict_formats(tmp_path):
    tensors = {"a.weight": torch.arange(3.0), "b.bias": torch.ones(2)}
    torch.save({"state_dict": tensors, "global_step": 7}, tmp_path / "wrapped.ckpt")
    torch.save(tensors, tmp_path / "plain.pth")
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    for name in ("wrapped.ckpt", "plain.pth", "plain.safetensors"):
        state = read_state_dict(tmp_path / name)
        assert state.keys() == tensors.keys() and torch.equal(state["a.weight"], tensors["a.weight"]), name


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.pth", None, "does not exist"),
        ("weights.npz", b"", "unknown checkpoint format"),
        ("truncated.pth", b"PK\x03\x04 not really a zip", "not a readable PyTorch checkpoint"),
        ("broken.safetensors", b"\x00" * 3, "not a readable safetensors file"),
    ],
)
def test_unreadable_files_raise_checkpoint_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_state_dict(path)


def test_pickle_without_tensors_is_refused(tmp_path):
    torch.save({"global_step": 3}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="contains no tensors"):
        read_state_dict(tmp_path / "empty.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict of tensors"):
        read_state_dict(tmp_path / "list.pth")


def write_release(directory: Path, skip: tuple[str, ...] = ()) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for role, pattern in OFFICIAL_FILES.items():
        if role not in skip:
            (directory / pattern.replace("*", "-47360")).write_bytes(b"")


def test_find_official_checkpoints_lists_every_missing_file_and_where_to_get_it(tmp_path):
    write_release(tmp_path, skip=("reference_unet", "motion_module"))
    with pytest.raises(CheckpointError) as caught:
        find_official_checkpoints(tmp_path)
    message = str(caught.value)
    assert "reference_unet.pth" in message and "motion_module*.pth" in message
    assert "denoising_unet.pth" not in message and "guidance_encoder_depth.pth" not in message
    assert "mengtingwei/MagicPortrait" in message and "ckpts/" in message and str(tmp_path) in message


def test_find_official_checkpoints_in_an_empty_or_absent_folder(tmp_path):
    with pytest.raises(CheckpointError) as caught:
        find_official_checkpoints(tmp_path)
    assert all(pattern in str(caught.value) for pattern in OFFICIAL_FILES.values())
    with pytest.raises(CheckpointError, match="does not exist"):
        find_official_checkpoints(tmp_path / "absent")


def test_find_official_checkpoints_finds_the_release_and_its_ckpts_folder(tmp_path):
    write_release(tmp_path / "ckpts")
    for folder in (tmp_path, tmp_path / "ckpts"):
        found = find_official_checkpoints(folder)
        assert found.keys() == OFFICIAL_FILES.keys()
        assert found["motion_module"] == tmp_path / "ckpts" / "motion_module-47360.pth"
        assert found["guidance_encoder_render"] == tmp_path / "ckpts" / "guidance_encoder_render.pth"
    (tmp_path / "ckpts" / "motion_module-100.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="several motion_module files"):
        find_official_checkpoints(tmp_path)


def motion_state(length: int = 32, channels: int = 8) -> dict[str, torch.Tensor]:
    prefix = "down_blocks.0.motion_modules.0.temporal_transformer"
    block = f"{prefix}.transformer_blocks.0.attention_blocks"
    return {
        f"{prefix}.norm.weight": torch.ones(channels),
        f"{block}.0.pos_encoder.pe": torch.zeros(1, length, channels),
        f"{block}.1.pos_encoder.pe": torch.zeros(1, length, channels),
        "mid_block.motion_modules.0.temporal_transformer.proj_out.weight": torch.zeros(channels, channels),
    }


def test_animatediff_style_motion_file_reads_with_its_position_encoding_length(tmp_path):
    torch.save({"state_dict": motion_state(length=32), "global_step": 0}, tmp_path / "mm_sd_v15_v2.ckpt")
    state = read_motion_modules(tmp_path / "mm_sd_v15_v2.ckpt")
    assert state.keys() == motion_state().keys()
    assert position_encoding_length(state) == 32
    assert position_encoding_length(motion_state(length=24)) == 24
    assert position_encoding_length({"a.motion_modules.0.norm.weight": torch.ones(1)}) is None


def test_merge_motion_modules_refuses_non_motion_keys(tmp_path):
    base = {"conv_in.weight": torch.zeros(1)}
    merged = merge_motion_modules(base, motion_state())
    assert merged.keys() == base.keys() | motion_state().keys()

    foreign = motion_state() | {"conv_in.weight": torch.ones(1)}
    with pytest.raises(CheckpointError, match=r"1 of its 5 keys are not motion-module keys.*conv_in\.weight"):
        merge_motion_modules(base, foreign, source="motion_module-1.pth")
    torch.save(foreign, tmp_path / "motion_module-1.pth")
    with pytest.raises(CheckpointError, match="is not a motion-module file"):
        read_motion_modules(tmp_path / "motion_module-1.pth")
