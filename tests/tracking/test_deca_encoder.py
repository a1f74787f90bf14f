"""DECA's encoder and crop against vectors made by the official DECA (``../shared/vectors/deca-tiny``: real
ResNet-50, random weights in the official ``deca_model.tar``): every code, intermediate and crop within the
vectors' README tolerances."""

from __future__ import annotations

import json
import lzma
import shutil

import numpy as np
import pytest
import torch

from magicportrait.errors import CheckpointError
from magicportrait.tracking.deca_encoder import CODE_SIZES, DecaCodes, DecaEncoder, crop_box, deca_crop
from shared_paths import DECA_VECTORS

pytestmark = pytest.mark.skipif(not DECA_VECTORS.is_dir(), reason="deca-tiny vectors not available")


def rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).norm() / expected.double().norm())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The official-format ``deca_model.tar``, decompressed from the vectors' xz (120 MB)."""
    path = tmp_path_factory.mktemp("deca") / "deca_model.tar"
    with lzma.open(DECA_VECTORS / "deca_model.tar.xz") as source, path.open("wb") as target:
        shutil.copyfileobj(source, target)
    return path


@pytest.fixture(scope="module")
def vectors():
    from safetensors.torch import load_file

    return load_file(str(DECA_VECTORS / "inputs.safetensors")), load_file(str(DECA_VECTORS /
                                                                              "expected_outputs.safetensors"))


@pytest.fixture(scope="module")
def encoder(checkpoint):
    return DecaEncoder.from_checkpoint(checkpoint, with_detail=True)


def test_codes_and_intermediates_match_official(encoder, vectors) -> None:
    inputs, expected = vectors
    images = inputs["images"]
    with torch.no_grad():
        layer4 = encoder.flame.encoder(images)
        features = encoder.flame.features(images)
        hidden = encoder.flame.layers[1](encoder.flame.layers[0](features))
        parameters = encoder.flame(images)
        codes = encoder(images)
        detail = encoder.detail(images)
    assert rel_l2(layer4, expected["layer4_out"]) < 2e-5
    assert rel_l2(features, expected["features"]) < 2e-5
    assert rel_l2(hidden, expected["mlp_hidden"]) < 2e-5
    assert rel_l2(parameters, expected["parameters"]) < 1e-4
    for name in CODE_SIZES:
        assert getattr(codes, name).shape == expected[f"code_{name}"].shape, name
        assert rel_l2(getattr(codes, name), expected[f"code_{name}"]) < 1e-4, name
    assert rel_l2(encoder.detail.features(images), expected["detail_features"]) < 2e-5
    assert rel_l2(detail, expected["code_detail"]) < 1e-4


def test_crops_match_official(vectors) -> None:
    inputs, _ = vectors
    cases = json.loads((DECA_VECTORS / "crop_cases.json").read_text())
    assert cases["scale"] == 1.25 and cases["crop_size"] == 224
    for name, case in cases["cases"].items():
        landmarks = np.array(case["landmarks68_xy"], dtype=np.float64)
        center, size = crop_box(landmarks)
        np.testing.assert_allclose(center, case["center_xy"], rtol=0, atol=1e-9)
        assert size == case["size_int"], name
        crop, matrix = deca_crop(inputs[f"src_image_{name}"].numpy(), landmarks)
        np.testing.assert_allclose(matrix, case["tform_3x3_float64_image_to_crop"], rtol=0, atol=1e-9)
        assert float((crop - inputs[f"crop_{name}"]).abs().max()) <= 1e-6, name


def test_detector_box_centre_moves_down() -> None:
    examples = json.loads((DECA_VECTORS / "crop_cases.json").read_text())["bbox2point_examples"]
    box = examples["input_ltrb"]
    center, size = crop_box(box=(box["left"], box["top"], box["right"], box["bottom"]), scale=1.0)
    np.testing.assert_allclose(center, examples["bbox"]["center_xy"], rtol=0, atol=1e-9)
    assert size == int(examples["bbox"]["old_size"])
    landmarks = np.array([[box["left"], box["top"]], [box["right"], box["bottom"]]])
    center, size = crop_box(landmarks, scale=1.0)
    np.testing.assert_allclose(center, examples["kpt68"]["center_xy"], rtol=0, atol=1e-9)
    assert size == int(examples["kpt68"]["old_size"])


def test_codes_split_as_decompose_code() -> None:
    parameters = torch.arange(2 * 236, dtype=torch.float32).reshape(2, 236)
    codes = DecaCodes.from_parameters(parameters)
    assert codes.shape[1, 0] == 236 and codes.tex[0, 0] == 100 and codes.exp[0, 0] == 150
    assert codes.pose[0].tolist() == list(range(200, 206)) and codes.cam[0].tolist() == [206, 207, 208]
    assert codes.light.shape == (2, 9, 3) and codes.light[0, 1, 2] == 209 + 3 + 2
    with pytest.raises(ValueError, match="236"):
        DecaCodes.from_parameters(parameters[:, :200])


def test_wrong_files_are_refused(checkpoint, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        DecaEncoder.from_checkpoint(tmp_path / "missing.tar")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.tar: not a readable DECA checkpoint"):
        DecaEncoder.from_checkpoint(junk)
    other = tmp_path / "other.tar"
    torch.save({"state_dict": {"a": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="expected the entries E_flame"):
        DecaEncoder.from_checkpoint(other)
    contents = torch.load(checkpoint, weights_only=True)
    del contents["E_flame"]["layers.2.bias"]
    contents["E_flame"]["layers.0.weight"] = contents["E_flame"]["layers.0.weight"][:, :100]
    broken = tmp_path / "broken.tar"
    torch.save(contents, broken)
    with pytest.raises(CheckpointError, match=r"(?s)E_flame.*layers\.2\.bias.*layers\.0\.weight") as caught:
        DecaEncoder.from_checkpoint(broken)
    assert "broken.tar" in str(caught.value)


def test_input_size_is_checked(encoder) -> None:
    with pytest.raises(ValueError, match="224"):
        encoder(torch.zeros(1, 3, 256, 256))
