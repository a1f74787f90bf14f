"""Tests of the rigid head motion (magicportrait.compositing.warp, head_layers, fill): only the head moves; the body,
a hand beside the head and the background stay still, their straight lines straight; the hair follows the head."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from magicportrait.compositing import HeadFrame, head_layers, head_weight, rigid_head_maps, similarity_2d
from magicportrait.compositing.fill import fill_from, mirror_fill
from magicportrait.errors import InputError

SIZE = 512
CENTRE = np.array([256.0, 270.0])
HALF = np.array([90.0, 115.0])  # the face's half-width and half-height: chin line at y = 385
NECK_END = 385.0 + 0.5 * 115.0  # the neck band (default length 0.5 face half-heights) ends at y = 442.5


def _face_points() -> np.ndarray:
    """~100 face-like landmarks: a 40-point oval contour around CENTRE and an interior grid."""
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    contour = CENTRE + HALF * np.column_stack([np.cos(angles), np.sin(angles)])
    gx, gy = np.meshgrid(np.linspace(200, 312, 8), np.linspace(190, 350, 8))
    return np.concatenate([contour, np.column_stack([gx.ravel(), gy.ravel()])])


def _rolled(points: np.ndarray, degrees: float, shift=(6.0, -4.0), scale: float = 1.03) -> tuple[np.ndarray, object]:
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale

    def move(p: np.ndarray) -> np.ndarray:
        return (p - CENTRE) @ rotation.T + CENTRE + np.asarray(shift)

    return move(points), move


def _scene() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A grid background (dark lines every 32 px), a person (head disk with a red hair marker, neck, body with
    straight edges and stripes) and a hand holding a card beside the head. Returns image, person mask, parts."""
    image = np.full((SIZE, SIZE, 3), 200, np.uint8)
    image[:, 16::32] = 40
    image[16::32, :] = 40
    ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5
    head = np.hypot(xs - 256, ys - 262) < 140
    neck = (np.abs(xs - 256) < 45) & (ys > 350) & (ys < 470)
    body = (xs > 96) & (xs < 416) & (ys > 468)
    card = (xs > 450) & (xs < 500) & (ys > 300) & (ys < 420)  # beyond the moving head's reach (2.1 half-widths)
    image[head] = (150, 110, 70)
    image[neck] = (220, 170, 140)
    image[body] = (30, 40, 120)
    image[body & (np.round(ys) % 12 < 2)] = (240, 240, 240)  # straight stripes across the clothes
    image[card] = (250, 250, 60)
    marker = (np.abs(xs - 256) < 8) & (np.abs(ys - 150) < 8)  # on the hair, above the face
    image[marker] = (255, 0, 0)
    person = (head | neck | body | card).astype(np.float32)
    return image, person, {"marker": marker, "body": body, "card": card}


def _animate(degrees: float, shift=(6.0, -4.0)):
    image, person, parts = _scene()
    points = _face_points()
    frame = HeadFrame.from_points(points)
    layers = head_layers(image, frame, person)
    target, move = _rolled(points, degrees, shift)
    map_x, map_y = rigid_head_maps(points, target, frame, (SIZE, SIZE))
    return image, layers.compose(layers.move(map_x, map_y), map_x, map_y), parts, move, (map_x, map_y), layers


def _edge_columns(image: np.ndarray, rows, start: int, stop: int) -> np.ndarray:
    """Per row, the sub-pixel column where the red channel steps between columns ``start`` and ``stop``."""
    positions = []
    for row in rows:
        values = image[row, start:stop, 0].astype(np.float64)
        steps = np.abs(np.diff(values))
        k = int(np.argmax(steps))
        positions.append(start + k + 1.0)
    return np.array(positions)


def _line_residual(positions: np.ndarray, rows) -> float:
    rows = np.asarray(list(rows), np.float64)
    fit = np.polyfit(rows, positions, 1)
    return float(np.abs(np.polyval(fit, rows) - positions).max())


@pytest.mark.parametrize("degrees", [15.0, -15.0])
def test_a_head_roll_leaves_the_body_the_card_and_the_background_still_and_straight(degrees):
    image, result, parts, _, maps, layers = _animate(degrees)
    # Body, card and background far from the head: not moved at all (pixel for pixel, to rounding).
    ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5
    far_background = (np.hypot(xs - 256, ys - 262) > 210) & ~parts["body"] & ~parts["card"]
    for name, region in (("body", parts["body"] & (ys > NECK_END + 20)), ("card", parts["card"]),
                         ("background", far_background)):
        difference = np.abs(result[region].astype(int) - image[region].astype(int)).max()
        assert difference <= 1, f"{name} changed by {difference}"
    # The maps: exactly the identity below the neck band (under the head; far to the side the band, which turns
    # with the head, is higher or lower, but nothing moving is there).
    grid_y, grid_x = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    below = (grid_y > NECK_END + 2) & (np.abs(grid_x - 256) < 100)
    assert np.abs(maps[0] - grid_x)[below].max() < 1e-4 and np.abs(maps[1] - grid_y)[below].max() < 1e-4
    # Straight lines: the body's left edge, the card's left edge and a background grid line beside the head.
    off_grid_rows = [r for r in range(200, 330) if r % 32 not in (15, 16, 17)]
    checks = [(range(475, 510), 84, 110), (range(305, 415), 446, 460), (off_grid_rows, 70, 100)]
    for rows, start, stop in checks:
        assert _line_residual(_edge_columns(result, rows, start, stop), rows) < 0.5


def test_the_hair_follows_the_head_rigidly():
    image, result, parts, move, maps, _ = _animate(15.0)
    red = (result[..., 0] > 200) & (result[..., 1] < 60) & (result[..., 2] < 60)
    ys, xs = np.nonzero(red)
    found = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    expected = move(np.array([[256.0, 150.0]]))[0]
    assert np.linalg.norm(found - expected) < 1.0
    assert abs(red.sum() - parts["marker"].sum() * 1.03**2) < 0.15 * parts["marker"].sum()
    # Above the chin line the map is exactly the inverse of the head's similarity.
    probe = np.array([[200.0, 180.0], [330.0, 250.0], [256.0, 140.0]])
    read = np.column_stack([cv2.remap(m, probe[:, :1].astype(np.float32) - 0.5, probe[:, 1:].astype(np.float32)
                                      - 0.5, cv2.INTER_LINEAR)[:, 0] for m in maps]) + 0.5
    np.testing.assert_allclose(move(read), probe, atol=0.05)


def test_what_the_head_uncovers_is_background_not_a_second_head():
    image, result, parts, _, _, layers = _animate(0.0, shift=(30.0, 0.0))  # the head moves 30 px right
    # Just right of the head's old edge (x ~ 116, mid-height, in the soft band, which widens for a large shift: it
    # moves ~20 px) is now background: the grey or its grid lines.
    strip = result[240:280, 122:134].reshape(-1, 3).astype(int)
    head_colour = np.array([150, 110, 70])
    assert np.abs(strip - head_colour).sum(1).min() > 60
    assert np.median(strip[:, 0]) > 150  # mostly the background's grey (200), the grid lines dark


def test_head_weight_moves_the_hair_and_ears_but_not_the_shoulders_or_the_body():
    weight = head_weight(HeadFrame.from_points(_face_points()), (SIZE, SIZE))
    assert weight[262 - 135, 256] == pytest.approx(1.0)  # hair above the forehead (1.17 half-heights up)
    assert weight[270, 256 + 130] == pytest.approx(1.0)  # an ear beside the face (1.44 half-widths)
    assert weight[270, 256 + 200] == 0.0  # beyond the head's reach (2.1 half-widths)
    assert weight[380, 256 + 190] == 0.0  # a shoulder beside the chin
    assert weight[350, 256 + 130] > 0.5  # hair beside the jaw
    assert weight[400, 256] > 0.5 and weight[450, 256] == 0.0  # the neck band, then the body
    assert np.abs(np.diff(weight, axis=0)).max() < 0.06 and np.abs(np.diff(weight, axis=1)).max() < 0.06  # smooth


def test_long_hair_below_the_head_bends_without_a_tear_or_a_hole():
    """Hair hanging from the head past the chin to the shoulders: the head rolls, the hair below follows it
    partly, and nowhere inside the moved person does the background show through; the warp is continuous."""
    image, person, parts = _scene()
    ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5
    hair = (np.abs(np.abs(xs - 256) - 105) < 35) & (ys > 262) & (ys < 480)  # two locks beside the neck
    image[hair] = (150, 110, 70)
    person = np.maximum(person, hair.astype(np.float32))
    points = _face_points()
    frame = HeadFrame.from_points(points)
    layers = head_layers(image, frame, person)
    for degrees in (15.0, -15.0):
        target, _ = _rolled(points, degrees)
        map_x, map_y = rigid_head_maps(points, target, frame, (SIZE, SIZE))
        result = layers.compose(layers.move(map_x, map_y), map_x, map_y).astype(int)
        inside = cv2.remap(person, map_x, map_y, cv2.INTER_LINEAR) > 0.99
        inside &= ys < NECK_END  # above the body (its stripes are grey too)
        grey = np.abs(result[..., 0] - result[..., 1]) + np.abs(result[..., 1] - result[..., 2]) < 20
        assert inside.sum() > 50000 and not (grey & inside).any()
        # Continuous: the displacement's gradient is bounded (a tear would make it ~ the motion itself, ~30 px/px)
        # and the map never folds.
        grid_y, grid_x = np.mgrid[:SIZE, :SIZE].astype(np.float32)
        gxx, gxy = np.gradient(map_x - grid_x, axis=(1, 0))
        gyx, gyy = np.gradient(map_y - grid_y, axis=(1, 0))
        core = cv2.erode(person, np.ones((5, 5), np.float32)) > 0.5
        assert np.abs(np.stack([gxx, gxy, gyx, gyy]))[:, core].max() < 2.0
        assert ((1 + gxx) * (1 + gyy) - gxy * gyx)[core].min() > 0.2


def test_an_unmoved_head_gives_the_portrait_back_exactly():
    image, person, _ = _scene()
    points = _face_points()
    frame = HeadFrame.from_points(points)
    layers = head_layers(image, frame, cv2.GaussianBlur(person, (0, 0), 3.0))  # a soft edge everywhere
    maps = rigid_head_maps(points, points, frame, (SIZE, SIZE))
    np.testing.assert_array_equal(layers.compose(layers.move(*maps), *maps), image)


def test_head_frame_from_points_measures_the_face():
    frame = HeadFrame.from_points(_face_points(), neck_length=0.5)
    np.testing.assert_allclose(frame.centre, CENTRE, atol=1e-9)
    np.testing.assert_allclose(frame.half_size, HALF, atol=1e-9)
    assert frame.chin == pytest.approx(115.0) and frame.neck_length == pytest.approx(57.5)
    assert frame.neck(np.array([256.0]), np.array([385.0 + 57.5]))[0] == pytest.approx(1.0)
    with pytest.raises(InputError):
        HeadFrame.from_points(_face_points(), neck_length=0.0)


def test_rigid_head_maps_identity_for_unmoved_points_and_rejects_mismatched_points():
    points = _face_points()
    frame = HeadFrame.from_points(points)
    map_x, map_y = rigid_head_maps(points, points, frame, (SIZE, SIZE))
    grid_y, grid_x = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    assert map_x.dtype == np.float32 and np.abs(map_x - grid_x).max() < 1e-3 and np.abs(map_y - grid_y).max() < 1e-3
    with pytest.raises(InputError):
        rigid_head_maps(points, points[:-1], frame, (SIZE, SIZE))


def test_mirror_fill_continues_the_texture_across_the_hole_edge():
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :, 0] = (np.arange(64) * 4)[None, :]  # a ramp along x
    image[::4, :, 1] = 255  # horizontal lines, perpendicular to the hole's edge
    known = np.ones((64, 64), bool)
    known[:, 40:] = False  # the hole: columns 40.. ; its edge is column 39
    filled = mirror_fill(image, known, depth=100.0)
    np.testing.assert_array_equal(filled[:, :40], image[:, :40])
    np.testing.assert_allclose(filled[:, 44, 0], image[:, 34, 0], atol=1)  # 39 + (39 - 44)
    np.testing.assert_allclose(filled[:, 44, 1], image[:, 44, 1], atol=2)  # the lines carry on


def test_fill_from_keeps_known_pixels_and_fills_a_constant_image_with_its_colour():
    image = np.full((40, 50, 3), (10, 120, 230), np.uint8)
    known = np.ones((40, 50), np.float32)
    known[10:30, 15:35] = 0.0
    noisy = image.copy()
    noisy[10:30, 15:35] = 0
    filled = fill_from(noisy, known)
    assert np.abs(filled.astype(int) - image.astype(int)).max() <= 1


def test_the_outline_lands_on_the_face_mesh_but_the_hair_beyond_the_ring_stays_rigid():
    points = _face_points()
    # An opening jaw: points below y = 300 move down, up to 12 px at the chin (y = 385).
    target = points + np.column_stack([np.zeros(len(points)), 12.0 * np.clip((points[:, 1] - 300) / 85, 0, 1)])
    frame = HeadFrame.from_points(points)
    maps = rigid_head_maps(points, target, frame, (SIZE, SIZE), weights=np.where(target[:, 1] > points[:, 1], 0.05,
                                                                                     1.0))

    def read(p: np.ndarray) -> np.ndarray:
        xy = (p - 0.5).astype(np.float32)
        return np.column_stack([cv2.remap(m, xy[:, :1], xy[:, 1:], cv2.INTER_LINEAR)[:, 0] for m in maps]) + 0.5

    assert np.linalg.norm(read(target) - points, axis=1).max() < 1.0  # the outline meets the rendered face
    hair = np.array([[256.0 + 1.1 * 90.0, 270.0 - 1.1 * 1.5 * 115.0], [256.0 - 1.5 * 90.0, 200.0]])  # past the ring
    a = similarity_2d(points, target, np.where(target[:, 1] > points[:, 1], 0.05, 1.0))
    expected = (np.column_stack([hair - 0.5, np.ones(2)]) @ np.linalg.inv(np.vstack([a, [0, 0, 1]])).T)[:, :2] + 0.5
    np.testing.assert_allclose(read(hair), expected, atol=0.05)
