"""FLAME eyelid blend shapes (SMIRK's ``l_eyelid.npy`` / ``r_eyelid.npy``) as two extra expression components:
loading and its errors, the vertices they give, FLAME codes' eyelid closures in the head track, and our own
landmark fit recovering a closure (synthetic shapes made by ``tests/synthetic_flame.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicportrait.errors import InputError
from magicportrait.heads.base import pose_vertices
from magicportrait.heads.flame_codes import head_track_from_codes
from magicportrait.heads.flame_eyelids import load_eyelid_blendshapes
from magicportrait.heads.flame_head import FlameHeadModel
from magicportrait.heads.regions import eye_opening
from magicportrait.types import FlameCodes, Track
from shared_paths import PARTIAL_MODEL, needs_partial_flame
from synthetic_flame import write_synthetic_eyelids

pytestmark = needs_partial_flame


@pytest.fixture(scope="module")
def eyelids(tmp_path_factory):
    return write_synthetic_eyelids(tmp_path_factory.mktemp("eyelids"))


@pytest.fixture(scope="module")
def models(eyelids):
    torch.set_num_threads(2)
    return FlameHeadModel.from_file(PARTIAL_MODEL), FlameHeadModel.from_file(PARTIAL_MODEL, eyelids=eyelids)


def test_eyelids_are_the_last_two_expression_components(models, eyelids):
    plain, with_lids = models
    assert (with_lids.num_expression, with_lids.num_eyelids) == (plain.num_expression + 2, 2)
    identity = np.random.default_rng(0).normal(0, 0.5, plain.num_shape)
    closures = np.array([[0.0, 0.0], [1.0, 0.0], [0.3, 0.7]])
    vertices = with_lids.shape_vertices(identity, closures)
    base = plain.shape_vertices(identity, np.zeros((1, plain.num_expression)))[0]
    left, right = (np.load(eyelids / name) * np.array([1.0, -1.0, -1.0]) * 100.0 for name in
                   ("l_eyelid.npy", "r_eyelid.npy"))  # FLAME frame, metres -> model frame, cm
    expected = base[None] + closures[:, 0, None, None] * left + closures[:, 1, None, None] * right
    np.testing.assert_allclose(vertices, expected, atol=1e-5)
    openings = eye_opening(with_lids.landmarks(vertices))
    np.testing.assert_allclose(openings[1] / openings[0], 0.5, atol=0.05)  # one eye closed: the mean opening halves


def test_codes_eyelids_reach_the_head_track(models):
    plain, with_lids = models
    count = 3
    codes = FlameCodes(shape=np.zeros((count, 100), np.float32), expression=np.zeros((count, 50), np.float32),
                       global_pose=np.tile([0.0, 0.3, 0.0], (count, 1)).astype(np.float32),
                       jaw=np.zeros((count, 3), np.float32), cam=np.tile([9.0, 0.0, 0.0], (count, 1)),
                       crop_matrix=np.tile(np.eye(3), (count, 1, 1)), image_size=(256, 256),
                       eyelids=np.array([[0.0, 0.0], [1.0, 1.0], [0.2, 0.9]], np.float32))
    head = head_track_from_codes(with_lids, codes)
    np.testing.assert_allclose(head.expression[:, -2:], codes.eyelids)
    without = head_track_from_codes(plain, codes)
    for name in ("rotation", "scale", "translation"):  # the pose is the codes' with or without eyelids
        np.testing.assert_allclose(getattr(head, name), getattr(without, name), atol=1e-5, err_msg=name)
    codes_without_lids = FlameCodes(**{**codes.__dict__, "eyelids": None})
    np.testing.assert_array_equal(head_track_from_codes(with_lids, codes_without_lids).expression[:, -2:], 0.0)


def test_our_fit_recovers_an_eyelid_closure(models):
    _, model = models
    count = 12
    blink = np.sin(np.linspace(0, np.pi, count)) ** 2  # a slow blink, the left eye ahead of the right one
    closures = np.stack([0.9 * blink, 0.6 * np.roll(blink, 2)], axis=1)
    rotation = np.stack([np.zeros(count), np.deg2rad(10) * np.sin(np.arange(count)), np.zeros(count)], axis=1)
    vertices = model.shape_vertices(np.zeros(model.num_shape), closures)
    translation = np.tile([256.0, 256.0, 0.0], (count, 1))
    landmarks = model.landmarks(pose_vertices(vertices, rotation, np.full(count, 14.0), translation))
    track = Track(landmarks=landmarks.astype(np.float32), boxes=np.zeros((count, 3), np.float32),
                  detected=np.ones(count, bool), fps=25.0, image_size=(512, 512))
    fitted = model.fit(track)
    np.testing.assert_allclose(fitted.expression[:, -2:], closures, atol=0.15)


@pytest.mark.parametrize("problem, message", [("missing", "r_eyelid.npy is missing"),
                                               ("shape", r"expected \(5023, 3\)"), ("large", "implausibly large")])
def test_bad_eyelid_files_are_clear_errors(eyelids, tmp_path, problem, message):
    folder = tmp_path / problem
    folder.mkdir()
    left = np.load(eyelids / "l_eyelid.npy")
    np.save(folder / "l_eyelid.npy", left)
    if problem == "shape":
        np.save(folder / "r_eyelid.npy", left[:100])
    elif problem == "large":
        np.save(folder / "r_eyelid.npy", left + 1.0)
    with pytest.raises(InputError, match=message):
        load_eyelid_blendshapes(folder, 5023)
