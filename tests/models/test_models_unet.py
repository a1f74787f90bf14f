"""Denoising UNet3D, reference UNet and reference fusion against the official MagicPortrait code.

The vectors (`../shared/vectors/official-tiny`, see its README) were computed by the official modules on a tiny
configuration with random weights; the tolerances are the README's (section 6).
"""

from __future__ import annotations

import json

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from magicportrait.errors import CheckpointError
from magicportrait.models.motion_module import VanillaTemporalModule
from magicportrait.models.reference_attention import ReferenceFusion
from magicportrait.models.reference_unet import ReferenceUNet2DConditionModel
from magicportrait.models.release import SD15_UNET_CONFIG
from magicportrait.models.tiny import TINY_UNET_CONFIG
from magicportrait.models.unet_3d import UNet3DConditionModel
from shared_paths import MANIFEST, VECTORS

needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"compatibility vectors not found at {VECTORS}")

TINY_UNET2D_CONFIG = TINY_UNET_CONFIG  # the vectors' base_model/unet/config.json: SD 1.5's layout, shrunk
SD15_UNET2D_CONFIG = SD15_UNET_CONFIG
WINDOW = slice(0, 12)  # the vectors' first 12-frame context window
TOLERANCE = {"ref": 1e-4, "cfg": 1e-4, "noref": 3e-5, "bank": 3e-5}
# sin / cos of p * exp(-2i ln(10000) / C) for p < 32 in float32: the stored tables are within 1.1e-6 of float64, and
# another CPU's exp / sin / cos kernels differ by a few ulps of the phase (~4e-6 at worst); a wrong base, sin / cos
# swapped or not interleaved, or positions shifted by one changes entries by about 1.
POSITION_ENCODING_ATOL = 1e-5


def rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return ((actual.double() - expected).norm() / expected.norm()).item()


def read_checkpoint(name: str) -> dict[str, torch.Tensor]:
    return torch.load(VECTORS / "ckpts" / name, map_location="cpu", weights_only=True)


def read_tensors(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(VECTORS / name)


def official_unet_settings() -> tuple[dict, dict]:
    config = json.loads((VECTORS / "base_model" / "unet" / "config.json").read_text())
    additional = json.loads((VECTORS / "config.json").read_text())["unet_additional_kwargs"]
    return config, additional


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def official_models(one_thread) -> tuple[UNet3DConditionModel, ReferenceUNet2DConditionModel]:
    """The tiny models with the official checkpoints, loaded strictly (every key present, none left over)."""
    config, additional = official_unet_settings()
    denoising_unet = UNet3DConditionModel.from_unet2d_config(config, **additional)
    reference_unet = ReferenceUNet2DConditionModel.from_unet2d_config(config)
    denoising_unet.load_state_dict({**read_checkpoint("denoising_unet.pth"), **read_checkpoint("motion_module.pth")})
    reference_unet.load_state_dict(read_checkpoint("reference_unet.pth"))
    return denoising_unet.eval(), reference_unet.eval()


@pytest.fixture(scope="module")
def window_inputs() -> dict[str, torch.Tensor]:
    inputs = read_tensors("inputs.safetensors")
    return {
        "sample": inputs["noise_latents"][:, :, WINDOW],
        "text": inputs["text_embeds"],
        "guidance": read_tensors("expected_a_guidance.safetensors")["gge_sum"][:, :, WINDOW],
        "reference_latent": read_tensors("expected_b_vae.safetensors")["ref_latent"],
    }


@pytest.fixture()
def fusion(official_models):
    denoising_unet, reference_unet = official_models
    fusion = ReferenceFusion(reference_unet, denoising_unet)
    yield fusion
    fusion.detach()


def run_window(
    denoising_unet: UNet3DConditionModel,
    fusion: ReferenceFusion,
    inputs: dict[str, torch.Tensor],
    timestep: int,
    kind: str,
) -> torch.Tensor:
    """One UNet3D forward as in the vectors README 4(c): `kind` is "ref", "noref" or "cfg"."""
    batch = 2 if kind == "cfg" else 1
    text = inputs["text"].repeat(batch, 1, 1)
    if kind != "noref":
        fusion.write(inputs["reference_latent"].repeat(batch, 1, 1, 1), text)
    fusion.uncond_first_half = kind == "cfg"
    with torch.no_grad():
        return denoising_unet(
            inputs["sample"].repeat(batch, 1, 1, 1, 1),
            torch.tensor(timestep),
            text,
            inputs["guidance"].repeat(batch, 1, 1, 1, 1),
        )


@needs_vectors
def test_reference_banks_match_official(official_models, fusion, window_inputs):
    with torch.no_grad():
        fusion.write(window_inputs["reference_latent"], window_inputs["text"])
    banks = fusion.reference_banks()
    expected = read_tensors("expected_c_reference_banks.safetensors")
    assert banks.keys() == expected.keys()
    errors = {path: rel_l2(banks[path], expected[path]) for path in expected}
    assert max(errors.values()) < TOLERANCE["bank"], errors
    # The readers get the banks rounded to fp16, as the official code hands them over.
    assert all(reader.bank.dtype == torch.float16 for reader in fusion.readers.values())


@needs_vectors
@pytest.mark.parametrize("timestep", [999, 49])
@pytest.mark.parametrize("kind", ["ref", "noref", "cfg"])
def test_unet_window_matches_official(official_models, fusion, window_inputs, timestep, kind):
    denoising_unet, _ = official_models
    expected = read_tensors("expected_c_unet.safetensors")[f"unet_t{timestep}_{kind}"]
    output = run_window(denoising_unet, fusion, window_inputs, timestep, kind)
    assert output.shape == expected.shape
    assert rel_l2(output, expected) < TOLERANCE[kind]


@needs_vectors
def test_fresh_position_encodings_equal_official_buffers():
    config, additional = official_unet_settings()
    fresh = UNet3DConditionModel.from_unet2d_config(config, **additional).state_dict()
    official = read_checkpoint("motion_module.pth")
    position_keys = [key for key in official if key.endswith("pos_encoder.pe")]
    assert len(position_keys) == 26  # 13 motion modules x 2 temporal attentions
    for key in position_keys:
        torch.testing.assert_close(fresh[key], official[key], rtol=0, atol=POSITION_ENCODING_ATOL, msg=key)


@needs_vectors
def test_add_mode_runs_and_differs_from_concat(official_models, window_inputs):
    denoising_unet, reference_unet = official_models
    outputs = {}
    for mode in ("concat", "add"):
        fusion = ReferenceFusion(reference_unet, denoising_unet, mode=mode)
        outputs[mode] = run_window(denoising_unet, fusion, window_inputs, 999, "ref")
        fusion.detach()
    assert torch.isfinite(outputs["add"]).all()
    assert rel_l2(outputs["add"], outputs["concat"]) > 1e-2


@needs_vectors
def test_detach_and_clear_restore_plain_attention(official_models, window_inputs):
    denoising_unet, reference_unet = official_models
    expected = read_tensors("expected_c_unet.safetensors")["unet_t999_noref"]
    fusion = ReferenceFusion(reference_unet, denoising_unet)
    fusion.write(window_inputs["reference_latent"], window_inputs["text"])
    fusion.clear()
    assert rel_l2(run_window(denoising_unet, fusion, window_inputs, 999, "noref"), expected) < TOLERANCE["noref"]
    fusion.detach()
    processors = [module.processor for module in denoising_unet.modules() if hasattr(module, "processor")]
    assert processors and all(isinstance(processor, AttnProcessor2_0) for processor in processors)


@needs_vectors
def test_official_3d_config_builds_the_same_model():
    settings = json.loads((VECTORS / "config.json").read_text())
    registered = next(value for key, value in settings.items() if key.startswith("denoising_unet_registered_config"))
    config, additional = official_unet_settings()
    from_3d = UNet3DConditionModel.from_unet2d_config(registered).state_dict()
    from_2d = UNet3DConditionModel.from_unet2d_config(config, **additional).state_dict()
    assert {key: value.shape for key, value in from_3d.items()} == {key: value.shape for key, value in from_2d.items()}


@pytest.mark.skipif(not MANIFEST.is_file(), reason=f"state-dict manifest not found at {MANIFEST}")
def test_full_size_state_dicts_match_official_manifest():
    manifest = json.loads(MANIFEST.read_text())
    with torch.device("meta"):  # 2.2 B parameters, no memory
        denoising_unet = UNet3DConditionModel.from_unet2d_config(SD15_UNET2D_CONFIG)
        reference_unet = ReferenceUNet2DConditionModel.from_unet2d_config(SD15_UNET2D_CONFIG)

    def shapes(model: torch.nn.Module) -> dict[str, list[int]]:
        return {key: list(value.shape) for key, value in model.state_dict().items()}

    assert shapes(denoising_unet) == {**manifest["denoising_unet.pth"], **manifest["motion_module.pth"]}
    assert shapes(reference_unet) == manifest["reference_unet.pth"]


def test_stage1_model_has_exactly_the_image_unet_keys(one_thread):
    image_model = UNet3DConditionModel.from_unet2d_config(TINY_UNET2D_CONFIG, motion_modules=False)
    image_keys = UNet2DConditionModel.from_config(TINY_UNET2D_CONFIG).state_dict().keys()
    assert image_model.state_dict().keys() == image_keys
    output = image_model(torch.randn(1, 4, 2, 8, 16), 10, torch.randn(1, 77, 32))
    assert output.shape == (1, 4, 2, 8, 16)


def test_video_model_reduces_to_the_image_model_frame_by_frame(one_thread):
    """With the motion modules at their zero init, each frame is exactly SD's 2-D UNet on that frame (float64)."""
    torch.manual_seed(0)
    video_model = UNet3DConditionModel.from_unet2d_config(TINY_UNET2D_CONFIG).double().eval()
    image_model = UNet2DConditionModel.from_config(TINY_UNET2D_CONFIG).double().eval()
    image_model.load_state_dict(
        {key: value for key, value in video_model.state_dict().items() if "motion_modules" not in key}
    )
    sample, text = torch.randn(2, 4, 3, 8, 16, dtype=torch.float64), torch.randn(2, 77, 32, dtype=torch.float64)
    with torch.no_grad():
        video = video_model(sample, torch.tensor([5, 700]), text)
        frame = image_model(sample[:, :, 1], torch.tensor([5, 700]), text).sample
    assert rel_l2(video[:, :, 1], frame) < 1e-12


def test_fresh_motion_module_is_the_identity():
    hidden_states = torch.randn(2 * 3, 32, 4, 5)
    # exact: the zero-initialised proj_out makes the residual add exact zeros
    assert torch.equal(VanillaTemporalModule(32)(hidden_states, num_frames=3), hidden_states)


@pytest.mark.parametrize(
    "setting", [{"use_inflated_groupnorm": False}, {"motion_module_type": "Conv"}, {"class_embed_type": "timestep"}]
)
def test_unsupported_settings_are_refused(setting):
    with pytest.raises(CheckpointError, match="UNet setting"):  # a user's weights folder: one error line
        UNet3DConditionModel.from_unet2d_config(TINY_UNET2D_CONFIG, **setting)


def test_config_round_trip(tmp_path, one_thread):
    model = UNet3DConditionModel.from_unet2d_config(
        TINY_UNET2D_CONFIG, motion_module_kwargs={"temporal_position_encoding_max_len": 24}
    )
    model.save_pretrained(tmp_path)
    loaded = UNet3DConditionModel.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.config.motion_module_kwargs == {"temporal_position_encoding_max_len": 24}
    weights, loaded_weights = model.state_dict(), loaded.state_dict()
    assert weights.keys() == loaded_weights.keys()
    assert all(torch.equal(loaded_weights[key], value) for key, value in weights.items())
    mid_block_temporal = loaded.mid_block.motion_modules[0].temporal_transformer.transformer_blocks[0]
    assert mid_block_temporal.attention_blocks[0].pos_encoder.pe.shape == (1, 24, 64)
