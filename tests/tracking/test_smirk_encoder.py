"""SMIRK's encoder and crop against vectors made by the official SMIRK (``../shared/vectors/smirk-tiny``: the real
MobileNetV3 backbones, random weights in the official ``SMIRK_em1.pt``): the layer list, every output and
intermediate, the clamps, and the crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from magicportrait.errors import CheckpointError
from magicportrait.tracking.mobilenet_v3 import SameConv2d
from magicportrait.tracking.smirk_encoder import SmirkEncoder, crop_square, smirk_crop
from shared_paths import SMIRK_VECTORS

pytestmark = pytest.mark.skipif(not SMIRK_VECTORS.is_dir(), reason="smirk-tiny vectors not available")
TOLERANCE = 2e-5  # the vectors' README: rel-L2 per tensor


def rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).norm() / expected.double().norm())


@pytest.fixture(scope="module")
def encoder():
    return SmirkEncoder.from_checkpoint(SMIRK_VECTORS / "SMIRK_em1.pt")


@pytest.fixture(scope="module")
def vectors():
    from safetensors.torch import load_file

    return load_file(str(SMIRK_VECTORS / "inputs.safetensors")), load_file(str(SMIRK_VECTORS /
                                                                               "expected_outputs.safetensors"))


def test_layers_are_the_official_architecture(encoder) -> None:
    architecture = json.loads((SMIRK_VECTORS / "architecture.json").read_text())
    for branch, spec in architecture.items():
        backbone = getattr(encoder, branch).encoder
        modules = dict(backbone.named_modules())
        for layer in spec["layers"]:
            module = modules[layer["name"]]
            if "Conv" in layer["type"]:
                assert isinstance(module, SameConv2d), layer["name"]
                assert (module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
                        module.groups) == (layer["in"], layer["out"], layer["k"], layer["stride"], layer["groups"])
                assert (module.stride[0] > 1) == (layer["static_padding"] == "dynamic-same"), layer["name"]
            else:
                assert module.eps == layer["eps"], layer["name"]
        skips = {name for name, module in modules.items() if getattr(module, "skip", False)}
        assert skips == {name for name, residual in spec["residual_blocks"].items() if residual}, branch


def test_outputs_and_intermediates_match_official(encoder, vectors) -> None:
    inputs, expected = vectors
    images = inputs["images"]
    with torch.no_grad():
        codes = encoder(images)
        for branch in ("pose_encoder", "shape_encoder", "expression_encoder"):
            module = getattr(encoder, branch)
            feature_map = module.encoder(images)
            pooled = F.adaptive_avg_pool2d(feature_map, 1).flatten(1)
            assert rel_l2(feature_map, expected[f"{branch}.last_feature_map"]) < TOLERANCE, branch
            assert rel_l2(pooled, expected[f"{branch}.pooled"]) < TOLERANCE, branch
            assert rel_l2(module(images), expected[f"{branch}.linear_out"]) < TOLERANCE, branch
    for name in ("pose_params", "cam", "shape_params", "expression_params", "eyelid_params", "jaw_params"):
        value = getattr(codes, name)
        assert value.shape == expected[name].shape, name
        assert rel_l2(value, expected[name]) < TOLERANCE, name
    # The clamps bite on these inputs: values at the bounds match exactly.
    for name, low, high in (("eyelid_params", 0.0, 1.0),):
        at_bounds = (expected[name] == low) | (expected[name] == high)
        assert at_bounds.any() and torch.equal(getattr(codes, name)[at_bounds], expected[name][at_bounds])
    jaw_sides = expected["jaw_params"][:, 1:]
    at_bounds = jaw_sides.abs() == 0.2
    assert at_bounds.any() and torch.equal(codes.jaw_params[:, 1:][at_bounds], jaw_sides[at_bounds])
    assert (codes.jaw_params[:, 0] >= 0).all()


def test_crops_match_official(vectors) -> None:
    inputs, _ = vectors
    cases = json.loads((SMIRK_VECTORS / "crop_cases.json").read_text())
    assert cases["scale"] == 1.4
    for name, case in cases["cases"].items():
        landmarks = np.array(case["landmarks_478_xyz"], dtype=np.float64)
        center, size = crop_square(landmarks)
        np.testing.assert_allclose(center, case["center_xy"], rtol=0, atol=1e-9)
        assert size == case["size_int"], name
        crop, crop_u8, matrix = smirk_crop(inputs[f"src_image_rgb_{name}"].numpy(), landmarks)
        np.testing.assert_allclose(matrix, case["tform_3x3_float64_image_to_crop"], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(crop_u8, inputs[f"crop_u8_rgb_{name}"].numpy())
        assert torch.equal(crop, inputs[f"crop_{name}"]), name  # u8 / 255 in float32: exact


def test_wrong_files_are_refused(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        SmirkEncoder.from_checkpoint(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="expected 'smirk_encoder"):
        SmirkEncoder.from_checkpoint(other)
    state = torch.load(SMIRK_VECTORS / "SMIRK_em1.pt", weights_only=True)
    del state["smirk_encoder.shape_encoder.shape_layers.0.bias"]
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with pytest.raises(CheckpointError, match=r"(?s)broken\.pt.*shape_layers\.0\.bias"):
        SmirkEncoder.from_checkpoint(broken)
