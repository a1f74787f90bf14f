"""The 478 -> 68 landmark correspondence: a fixed sparse map with iBUG's order, sides and symmetry on MediaPipe's
canonical face."""

from __future__ import annotations

import numpy as np
import pytest

from magicportrait.heads.mediapipe_mesh import load_canonical_face
from magicportrait.tracking.ibug68 import ibug68_from_mediapipe, ibug68_weights

# iBUG's left-right partners (the image's left and right sides), and its points on the face's midline
MIRROR = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)]
          + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
          + [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)])
MIDLINE = (8, 27, 28, 29, 30, 33, 51, 57, 62, 66)


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    return ibug68_from_mediapipe(load_canonical_face()[0])[:, :2]  # x to the image right, y down (cm)


def test_each_point_mixes_two_neighbouring_mediapipe_points():
    weights = ibug68_weights()
    assert weights.shape == (68, 478) and not weights.flags.writeable
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    assert ((weights > 0).sum(axis=1) <= 2).all() and (weights >= 0).all()
    # the ends of the nose chains are MediaPipe points exactly
    for ibug, mediapipe in ((27, 168), (30, 4), (31, 98), (33, 2), (35, 327)):
        assert weights[ibug, mediapipe] == pytest.approx(1.0)


def test_the_layout_is_mirror_symmetric(points):
    for left, right in MIRROR:
        assert points[left, 0] < 0 < points[right, 0]
        np.testing.assert_allclose(points[left] * [-1, 1], points[right], atol=0.15)
    np.testing.assert_allclose(points[list(MIDLINE), 0], 0.0, atol=0.1)


def test_the_contours_are_in_ibug_order(points):
    x, y = points[:, 0], points[:, 1]
    assert np.argmax(y[:17]) == 8  # the chin is the jaw's lowest point
    assert (np.diff(x[:9]) > 0).all() and (np.diff(x[8:17]) > 0).all()  # left ear -> chin -> right ear
    assert (np.diff(x[17:27]) > 0).all()  # brows left to right
    assert y[17:27].max() < y[36:48].min()  # brows above the eyes
    assert (np.diff(y[27:31]) > 0).all()  # nose ridge downwards
    assert y[30] < y[33] < y[51] < y[62] < y[66] < y[57] < y[8]  # tip, base, lips, chin
    for start in (36, 42):  # each eye: corner, upper lid, corner, lower lid (clockwise on the image)
        eye = points[start:start + 6]
        assert np.argmin(eye[:, 0]) == 0 and np.argmax(eye[:, 0]) == 3
        assert eye[1:3, 1].max() < eye[[4, 5], 1].min()
    assert np.argmin(x[48:60]) == 0 and np.argmax(x[48:60]) == 6


def test_any_batch_shape_and_width():
    rng = np.random.default_rng(0)
    landmarks = rng.normal(size=(2, 3, 478, 3))
    mapped = ibug68_from_mediapipe(landmarks)
    assert mapped.shape == (2, 3, 68, 3)
    np.testing.assert_allclose(mapped[1, 2], ibug68_weights() @ landmarks[1, 2], atol=1e-12)


def test_official_framing_puts_the_estimated_face_box_on_80_432():
    from magicportrait.tracking.boxes import crop_matrix, official_framing_box

    canonical = load_canonical_face()[0]
    landmarks = canonical * 20.0 + [300.0, 260.0, 0.0]  # a face about 270 px wide
    centre_x, centre_y, side = official_framing_box(landmarks)
    points = ibug68_from_mediapipe(landmarks)[:, :2]
    (left, top), (right, bottom) = points.min(axis=0), points.max(axis=0)
    face_side = 1.1 * ((right - left) + (bottom - top)) / 2  # DECA's detector box from the 68-point box
    # the official crop: the square of 1.5 x the face box's width around its centre goes to [80, 432] of 512
    square = np.array([[(left + right) / 2 - 0.75 * face_side, (top + bottom) / 2 - 0.12 * face_side]])
    square = np.concatenate([square, square + [1.5 * face_side, 0]])  # its left and right ends, centre row
    matrix = crop_matrix(np.array([centre_x, centre_y, side]), 512)
    in_canvas = square @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(in_canvas[:, 0], [80.0, 432.0], atol=0.5)  # OpenCV's half-pixel convention
    np.testing.assert_allclose(in_canvas[:, 1], 256.0, atol=0.5)
