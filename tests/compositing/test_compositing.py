"""Tests of magicportrait.compositing (blending, colour matching, similarity, paste-back) on known values; the head
motion is in test_rigid_head.py."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from magicportrait.compositing import (
    PasteBack,
    feather_mask,
    laplacian_blend,
    match_colour,
    similarity_2d,
)
from magicportrait.errors import InputError
from magicportrait.tracking.boxes import crop_matrix, invert_affine, transform_points

SIZE = 512


def _disk(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    ys, xs = np.mgrid[:size, :size] + 0.5
    return (np.hypot(xs - centre[0], ys - centre[1]) <= radius).astype(np.uint8)


def _smooth_image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Random RGB texture smoothed to a few px, in [30, 220]: bilinear sampling of it is well behaved."""
    noise = np.random.default_rng(seed).uniform(0, 255, (*shape, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 3.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (30 + 190 * smooth).astype(np.uint8)


def _bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Exact (float64) bilinear sample of a 2-D array at continuous image-space points."""
    x, y = points[:, 0] - 0.5, points[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    return (image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x0 + 1] * fx * (1 - fy)
            + image[y0 + 1, x0] * (1 - fx) * fy + image[y0 + 1, x0 + 1] * fx * fy)


def _map_at(maps: tuple[np.ndarray, np.ndarray], points: np.ndarray) -> np.ndarray:
    """Where the backward maps read for continuous points (back in continuous coordinates)."""
    return np.column_stack([_bilinear(maps[0], points), _bilinear(maps[1], points)]) + 0.5


def _face_points() -> np.ndarray:
    """~100 face-like landmarks: a 40-point oval contour (chin = lowest, index 10) and an interior grid."""
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    contour = np.column_stack([256 + 90 * np.cos(angles), 270 + 115 * np.sin(angles)])
    gx, gy = np.meshgrid(np.linspace(200, 312, 8), np.linspace(190, 350, 8))
    interior = np.column_stack([gx.ravel(), gy.ravel()])
    return np.concatenate([contour, interior])


CHIN = 10  # angle pi/2: the lowest contour point (256, 385)


# ---------------------------------------------------------------------------------------------- feather_mask


def test_feather_mask_is_zero_outside_one_deep_inside_and_ramps_inside_the_edge():
    mask = _disk(256, (128, 128), 80)
    soft = feather_mask(mask, 8)
    assert soft.dtype == np.float32
    assert np.all(soft[mask == 0] == 0.0)
    assert np.all(soft[_disk(256, (128, 128), 80 - 2 * 8 * np.sqrt(2)) == 1] == 1.0)
    row = soft[128, 128:]  # from the centre outwards
    assert np.all(np.diff(row) <= 1e-6)
    ramp = row[(row > 0) & (row < 1)]
    assert 5 <= ramp.size <= 2 * 8 + 2 and np.all((128 + np.flatnonzero((row > 0) & (row < 1)) + 0.5) < 128 + 80)


def test_feather_mask_radius_zero_returns_the_mask_and_reads_uint8_masks():
    mask = _disk(64, (32, 32), 20)
    np.testing.assert_array_equal(feather_mask(mask * 255, 0), mask.astype(np.float32))
    np.testing.assert_array_equal(feather_mask(mask.astype(bool), 5), feather_mask(mask * 255, 5))


def test_feather_mask_never_exceeds_a_soft_mask():
    soft_in = cv2.GaussianBlur(np.random.default_rng(1).uniform(0, 1, (96, 96)).astype(np.float32), (0, 0), 4)
    soft_in = np.clip((soft_in - 0.4) * 5, 0, 1)
    assert np.all(feather_mask(soft_in, 4) <= soft_in)


# ---------------------------------------------------------------------------------------------- match_colour


def _offset_foreground(background: np.ndarray, mask: np.ndarray, offset: np.ndarray) -> np.ndarray:
    shifted = background.astype(np.float32) + offset
    return np.where(mask[..., None] > 0, np.clip(np.rint(shifted), 0, 255), background).astype(np.uint8)


def test_match_colour_removes_a_constant_offset_and_leaves_other_channels_exactly():
    background = _smooth_image((SIZE, SIZE), seed=2)
    mask = _disk(SIZE, (256, 270), 170)
    foreground = _offset_foreground(background, mask, np.array([12.0, 0.0, 0.0]))
    corrected = match_colour(foreground, background, mask)
    interior = _disk(SIZE, (256, 270), 150) == 1
    error = corrected[interior].astype(int) - background[interior]
    assert np.abs(error).max() <= 1
    np.testing.assert_array_equal(corrected[..., 1:], foreground[..., 1:])  # no offset measured -> untouched


def test_match_colour_follows_a_slow_lighting_gradient():
    background = _smooth_image((SIZE, SIZE), seed=3)
    mask = _disk(SIZE, (256, 256), 180)
    ramp = np.linspace(-30, 30, SIZE, dtype=np.float32)[None, :, None] * np.ones((SIZE, 1, 3), np.float32)
    foreground = _offset_foreground(background, mask, ramp)
    corrected = match_colour(foreground, background, mask)
    interior = _disk(SIZE, (256, 256), 165) == 1
    before = np.abs(foreground[interior].astype(int) - background[interior]).mean()
    after = np.abs(corrected[interior].astype(int) - background[interior]).mean()
    assert before > 6 and after < 0.12 * before


def test_match_colour_measures_only_where_the_background_shows_the_same_surface():
    """A face turned away from its old place: behind the left part of its edge the background is a white window,
    not skin. Measured there, the skin would take on the window's colour; told where the background is the same
    surface (or that a difference of 100 levels is no lighting), it keeps the true offset of 12."""
    background = _smooth_image((SIZE, SIZE), seed=5)
    mask = _disk(SIZE, (256, 270), 170)
    foreground = _offset_foreground(background, mask, np.array([12.0, 0.0, 0.0]))
    window = np.zeros((SIZE, SIZE), bool)
    window[:, :200] = True
    background = background.copy()
    background[window] = 250
    interior = (_disk(SIZE, (256, 270), 150) == 1) & ~window
    truth = foreground[interior].astype(int) - np.array([12, 0, 0])
    fooled = match_colour(foreground, background, mask)
    assert np.abs(fooled[interior].astype(int) - truth).max() > 20
    for options in ({"same_surface": ~window}, {"max_difference": 40.0}):
        corrected = match_colour(foreground, background, mask, **options)
        assert np.abs(corrected[interior].astype(int) - truth).max() <= 1, options
    nothing = match_colour(foreground, background, mask, same_surface=np.zeros((SIZE, SIZE), bool))
    np.testing.assert_array_equal(nothing, foreground)


def test_match_colour_is_exactly_a_no_op_when_foreground_equals_background():
    image = np.random.default_rng(4).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    np.testing.assert_array_equal(match_colour(image, image, _disk(300, (150, 100), 80)[:200]), image)


# ------------------------------------------------------------------------------------------ laplacian_blend


def test_laplacian_blend_with_full_and_empty_masks():
    rng = np.random.default_rng(5)
    foreground = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    full = laplacian_blend(foreground, background, np.ones((SIZE, SIZE), np.float32))
    assert np.abs(full.astype(int) - foreground).max() <= 1
    np.testing.assert_array_equal(laplacian_blend(foreground, background, np.zeros((SIZE, SIZE))), background)


@pytest.mark.parametrize("shape", [(256, 256), (333, 251)])
def test_laplacian_blend_half_plane_of_two_flat_colours(shape):
    height, width = shape
    foreground = np.full((height, width, 3), (200, 40, 90), np.uint8)
    background = np.full((height, width, 3), (20, 180, 90), np.uint8)
    mask = np.zeros(shape, np.float32)
    mask[:, : width // 2] = 1.0
    out = laplacian_blend(foreground, background, mask).astype(int)
    np.testing.assert_array_equal(out[:, :20], np.broadcast_to(foreground[:, :20], out[:, :20].shape))
    np.testing.assert_array_equal(out[:, -20:], np.broadcast_to(background[:, -20:], out[:, -20:].shape))
    row = out[height // 2]
    assert np.all(np.diff(row[:, 0]) <= 0) and np.all(np.diff(row[:, 1]) >= 0) and np.all(row[:, 2] == 90)
    assert abs(row[width // 2, 0] - 110) <= 25  # the middle is a mix, not a step
    assert np.count_nonzero((row[:, 0] > 25) & (row[:, 0] < 195)) >= 8  # a ramp several px wide


def _reference_laplacian_blend(foreground, background, mask, levels):
    """Textbook Burt-Adelson: Laplacian pyramids of both images, blended per level, collapsed."""
    def laplacian_pyramid(image):
        gaussians = [image]
        for _ in range(levels):
            gaussians.append(cv2.pyrDown(gaussians[-1]))
        bands = [g - cv2.pyrUp(n, dstsize=g.shape[1::-1]) for g, n in zip(gaussians[:-1], gaussians[1:], strict=True)]
        return bands + [gaussians[-1]]

    masks = [mask]
    for _ in range(levels):
        masks.append(cv2.pyrDown(masks[-1]))
    fg, bg = laplacian_pyramid(foreground.astype(np.float32)), laplacian_pyramid(background.astype(np.float32))
    blended = [f * m[..., None] + b * (1 - m[..., None]) for f, b, m in zip(fg, bg, masks, strict=True)]
    result = blended[-1]
    for band in reversed(blended[:-1]):
        result = cv2.pyrUp(result, dstsize=band.shape[1::-1]) + band
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)


def test_laplacian_blend_matches_the_textbook_two_pyramid_blend():
    foreground, background = _smooth_image((300, 280), 6), _smooth_image((300, 280), 7)
    mask = feather_mask(_disk(300, (140, 150), 120)[:, :280], 10)
    expected = _reference_laplacian_blend(foreground, background, mask, 4)
    assert np.abs(laplacian_blend(foreground, background, mask, 4).astype(int) - expected).max() <= 1


def test_laplacian_blend_only_touches_the_mask_box_plus_the_pyramid_reach():
    rng = np.random.default_rng(8)
    foreground = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[200:260, 220:300] = 1.0
    out = laplacian_blend(foreground, background, mask, levels=3)
    changed = np.argwhere(np.any(out != background, axis=2))
    reach = 3 * (2**3 - 1) + 2
    assert changed[:, 0].min() >= 200 - reach and changed[:, 0].max() < 260 + reach
    assert changed[:, 1].min() >= 220 - reach and changed[:, 1].max() < 300 + reach
    core = out[215:245, 235:285].astype(int) - foreground[215:245, 235:285]
    assert np.abs(core).max() <= 1  # deep inside the mask: the foreground


# ------------------------------------------------------------------------------------------ similarity_2d


def test_similarity_2d_recovers_a_known_similarity_in_opencv_convention():
    points = _face_points()
    angle, scale = np.deg2rad(17.0), 1.3
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.column_stack([linear, [12.0, -30.0]])
    target = transform_points(points, matrix)
    np.testing.assert_allclose(similarity_2d(points, target), matrix, atol=1e-9)


def test_similarity_2d_uses_the_weights_and_never_reflects():
    points = _face_points()
    target = points + [5.0, -2.0]
    target[:40] += np.random.default_rng(9).normal(0, 6, (40, 2))  # the contour moves, weight ~0
    weights = np.full(len(points), 1.0)
    weights[:40] = 1e-9
    expected = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -2.0]])
    np.testing.assert_allclose(similarity_2d(points, target, weights), expected, atol=1e-6)
    mirrored = points * [-1.0, 1.0]
    assert np.linalg.det(similarity_2d(points, mirrored)[:, :2]) > 0


# ------------------------------------------------------------------------------------------------ PasteBack

FRAME = (1080, 1920)
CROP = 512


def _frame_and_crop(box=(900.0, 500.0, 700.0)):
    frame = np.random.default_rng(11).integers(0, 256, (*FRAME, 3), dtype=np.uint8)
    matrix = crop_matrix(np.array(box), CROP)
    crop = cv2.warpAffine(frame, matrix, (CROP, CROP), flags=cv2.INTER_LINEAR)
    return frame, matrix, crop


def test_paste_back_of_an_unchanged_crop_is_bit_exact():
    frame, matrix, crop = _frame_and_crop()
    paste = PasteBack(FRAME, matrix, CROP)
    np.testing.assert_array_equal(paste.paste(frame, crop.copy(), crop), frame)


def test_paste_back_puts_a_painted_square_where_transform_points_says():
    frame, matrix, crop = _frame_and_crop()
    result = crop.copy()
    result[200:260, 300:360] = (250, 10, 10)
    out = PasteBack(FRAME, matrix, CROP).paste(frame, result, crop)
    centre = transform_points(np.array([[330.0, 230.0]]), invert_affine(matrix))[0]
    x, y = (int(v) for v in np.floor(centre))
    assert np.abs(out[y, x].astype(int) - (250, 10, 10)).max() <= 3
    changed = np.argwhere(np.any(out != frame, axis=2))
    corners = transform_points(np.array([[300.0, 200.0], [360.0, 260.0]]), invert_affine(matrix))
    scale = 700.0 / CROP
    slack = 2 * 4.0 * scale + 2  # the dilation and the Gaussian feather (4 crop px each), the bilinear taps
    assert changed[:, 1].min() >= corners[0, 0] - slack and changed[:, 1].max() <= corners[1, 0] + slack
    assert changed[:, 0].min() >= corners[0, 1] - slack and changed[:, 0].max() <= corners[1, 1] + slack


def test_paste_back_full_mode_pastes_the_inverse_warped_crop():
    frame, matrix, crop = _frame_and_crop()
    result = _smooth_image((CROP, CROP), seed=12)
    out = PasteBack(FRAME, matrix, CROP, mode="full").paste(frame, result)
    expected = cv2.warpAffine(result, matrix, FRAME[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    # The crop covers frame x in [550, 1250), y in [150, 850); its centre half has border weight 1.
    centre = (slice(330, 670), slice(730, 1070))
    assert np.abs(out[centre].astype(int) - expected[centre]).max() <= 1
    np.testing.assert_array_equal(out[:140], frame[:140])  # above the crop: untouched
    np.testing.assert_array_equal(out[:, 1260:], frame[:, 1260:])


def test_paste_back_with_the_crop_partly_outside_the_frame():
    frame, matrix, crop = _frame_and_crop(box=(1800.0, 100.0, 500.0))
    paste = PasteBack(FRAME, matrix, CROP)
    assert paste.roi[0].start == 0 and paste.roi[1].stop == FRAME[1]
    result = crop.copy()
    result[240:272, 240:272] = 0
    out = paste.paste(frame, result, crop)
    centre = transform_points(np.array([[256.0, 256.0]]), invert_affine(matrix))[0]
    assert np.all(out[int(centre[1]), int(centre[0])] <= 3)
    outside = PasteBack(FRAME, crop_matrix(np.array([3000.0, 3000.0, 200.0]), CROP), CROP, mode="full")
    np.testing.assert_array_equal(outside.paste(frame, result), frame)


def test_paste_back_into_a_given_output_array_equals_the_new_frame():
    frame, matrix, crop = _frame_and_crop()
    result = crop.copy()
    result[100:400, 150:380] //= 2
    paste = PasteBack(FRAME, matrix, CROP)
    expected = paste.paste(frame, result, crop)
    np.testing.assert_array_equal(paste.paste(frame, result, crop, out=np.zeros_like(frame)), expected)
    in_place = frame.copy()
    assert paste.paste(in_place, result, crop, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, expected)


def test_paste_back_rejects_bad_inputs():
    frame, matrix, crop = _frame_and_crop()
    paste = PasteBack(FRAME, matrix, CROP)
    with pytest.raises(InputError, match="frame"):
        paste.paste(frame[:-1], crop, crop)
    with pytest.raises(InputError, match="crop_result"):
        paste.paste(frame, crop[:-1], crop)
    with pytest.raises(InputError, match="crop_result"):
        paste.paste(frame, crop.astype(np.float32), crop)
    with pytest.raises(InputError, match="crop_reference"):
        paste.paste(frame, crop)
    with pytest.raises(InputError, match="mode"):
        PasteBack(FRAME, matrix, CROP, mode="everything")
