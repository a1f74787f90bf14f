"""The release loads without random weights first: models built on the meta device, the checkpoints memory-mapped
and assigned (cast while loading); the result equals a plain build-then-copy load."""

from __future__ import annotations

import json

import pytest
import torch

from magicportrait.models.checkpoints import load_strict, read_state_dict
from magicportrait.models.release import load_release, resolve_release_paths


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lean_load_equals_a_plain_load(release, dtype):
    from magicportrait.models.reference_unet import ReferenceUNet2DConditionModel

    components = load_release(resolve_release_paths(release), dtype=dtype)
    reference = components["reference_unet"]
    for module in (reference, components["denoising_unet"]):
        tensors = list(module.parameters()) + list(module.buffers())
        assert not any(tensor.is_meta for tensor in tensors)
        assert {tensor.dtype for tensor in module.parameters()} == {dtype}
    config = json.loads((release / "stable-diffusion-v1-5" / "unet" / "config.json").read_text())
    plain = ReferenceUNet2DConditionModel.from_unet2d_config(config)
    state = read_state_dict(release / "ckpts" / "reference_unet.pth")
    load_strict(plain, state, "reference_unet.pth")
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(reference.state_dict()[key], value.to(dtype), rtol=0, atol=0, msg=key)
    motion = [key for key in components["denoising_unet"].state_dict() if key.endswith("pos_encoder.pe")]
    assert motion and not components["denoising_unet"].state_dict()[motion[0]].is_meta


def test_mmap_reading_gives_the_same_tensors(release):
    path = release / "ckpts" / "denoising_unet.pth"
    mapped, read = read_state_dict(path, mmap=True), read_state_dict(path)
    assert mapped.keys() == read.keys()
    for key in read:
        torch.testing.assert_close(mapped[key], read[key], rtol=0, atol=0)
