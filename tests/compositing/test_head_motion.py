"""Tests of the head's 3D motion in the 2D warp (magicportrait.compositing.head_motion and rigid_head_maps with
``motion=`` / ``outline=``): exact for an orthographic turn, the hair at the pivot's depth barely moving, the face
sliding in front of it, and no fold where the motion fades out."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from magicportrait.compositing import HeadFrame, rigid_head_maps
from magicportrait.compositing.head_motion import DEPTH_REACH, DepthMotion, head_depth
from magicportrait.compositing.warp import HAIR_ABOVE
from magicportrait.errors import InputError

SIZE = 512
CENTRE = np.array([256.0, 270.0])
HALF = 90.0
PIVOT_DEPTH = 100.0  # image-space depth of the point between the ears (px; smaller = nearer)


def _yaw(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    return np.array([[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]])


def _turn(points: np.ndarray, degrees: float, scale: float = 1.05, shift=(7.0, -3.0)) -> np.ndarray:
    """Image-space (x, y, z) points turned about the pivot, seen by an orthographic camera: (N, 2)."""
    pivot = np.array([*CENTRE, PIVOT_DEPTH])
    turned = (points - pivot) @ _yaw(degrees).T * scale + pivot
    return turned[:, :2] + np.asarray(shift)


def _face_disk() -> tuple[np.ndarray, np.ndarray]:
    """A face-like bulge: a z-buffer (a spherical cap in front of the pivot, +inf off the face) and points on it."""
    ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5
    r2 = ((xs - CENTRE[0]) ** 2 + (ys - CENTRE[1]) ** 2) / HALF**2
    zbuffer = np.where(r2 < 1.0, PIVOT_DEPTH - 80.0 - 30.0 * np.sqrt(np.clip(1 - r2, 0, None)), np.inf)
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    outline = CENTRE + 0.98 * HALF * np.column_stack([np.cos(angles), np.sin(angles)])
    gx, gy = np.meshgrid(np.linspace(210, 302, 8), np.linspace(210, 330, 8))
    xy = np.concatenate([outline, np.column_stack([gx.ravel(), gy.ravel()])])
    z = zbuffer[xy[:, 1].astype(int), xy[:, 0].astype(int)]
    return zbuffer.astype(np.float32), np.column_stack([xy, z])


def test_depth_motion_fit_is_exact_for_an_orthographic_turn_and_its_inverse_finds_the_source_points():
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5

    def relief(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # a smooth, known, curved depth field
        return 40.0 + 20.0 * np.sin(x / 60.0) * np.cos(y / 80.0)

    depth = relief(xs, ys).astype(np.float32)
    xy = rng.uniform(150, 350, (60, 2))
    source = np.column_stack([xy, relief(xy[:, 0], xy[:, 1])])
    target = _turn(source, 22.0)
    motion = DepthMotion.fit(source, target, depth, weights=rng.uniform(0.1, 1.0, 60))
    np.testing.assert_allclose(motion.forward(source), target, atol=1e-8)
    expected = _yaw(22.0)[:2] * 1.05
    np.testing.assert_allclose(motion.linear, expected, atol=1e-9)
    np.testing.assert_allclose(motion.inverse_points(target), xy, atol=0.05)
    with pytest.raises(InputError):
        DepthMotion.fit(source[:3], target[:3], depth)


def test_depth_at_is_bilinear_in_pixel_centres():
    depth = np.arange(12, dtype=np.float32).reshape(3, 4)
    motion = DepthMotion(np.eye(2, 3), np.zeros(2), depth)
    np.testing.assert_allclose(motion.depth_at(np.array([0.5, 1.0, 3.5]), np.array([0.5, 1.5, 2.5])),
                               [0.0, 4.5, 11.0], atol=1e-6)


def test_head_depth_keeps_the_face_and_relaxes_to_the_pivot_beyond_it():
    zbuffer, _ = _face_disk()
    depth = head_depth(zbuffer, PIVOT_DEPTH, HALF)
    assert depth.shape == (SIZE, SIZE) and depth.dtype == np.float32
    cy, cx = int(CENTRE[1]), int(CENTRE[0])
    assert depth[cy, cx] == pytest.approx(PIVOT_DEPTH - 110.0, abs=1.5)  # the nose tip, barely smoothed
    far = int(HALF * (1 + DEPTH_REACH) + 4 * 0.02 * SIZE)  # past the reach and its smoothing
    assert depth[cy, cx + far] == pytest.approx(PIVOT_DEPTH, abs=1e-3)
    assert depth[cy, cx + int(1.1 * HALF)] < PIVOT_DEPTH - 40.0  # hair beside the cheek still moves with the face
    profile = depth[cy, cx:cx + far]
    assert np.all(np.diff(profile) >= -1e-3)  # deeper and deeper away from the nose: no ridge, no crease
    np.testing.assert_allclose(head_depth(np.full((8, 8), np.inf, np.float32), 5.0, 3.0), 5.0)
    with pytest.raises(InputError):
        head_depth(zbuffer, float("nan"), HALF)


def _read(maps: tuple[np.ndarray, np.ndarray], points: np.ndarray) -> np.ndarray:
    xy = (points - 0.5).astype(np.float32)
    return np.column_stack([cv2.remap(m, xy[:, :1], xy[:, 1:], cv2.INTER_LINEAR)[:, 0] for m in maps]) + 0.5


@pytest.mark.parametrize("degrees", [25.0, -25.0])
def test_with_depth_the_face_slides_over_the_hair_which_turns_about_the_pivot_without_a_fold(degrees):
    zbuffer, points = _face_disk()
    target = _turn(points, degrees)
    depth = head_depth(zbuffer, PIVOT_DEPTH, HALF)
    motion = DepthMotion.fit(points, target, depth)
    outline = np.arange(40)
    frame = HeadFrame.from_points(points[:, :2])
    maps = rigid_head_maps(points[:, :2], target, frame, (SIZE, SIZE), outline=outline, motion=motion)
    # The outline lands on the turned face; hair on the skull's side, as deep as the pivot, moves as that 3D point.
    assert np.linalg.norm(_read(maps, target[outline]) - points[outline, :2], axis=1).max() < 1.0
    above = 1.4 * HAIR_ABOVE * frame.half_size[1]  # past the ring, before the motion fades out (radius 1.4)
    hair = np.array([[CENTRE[0], CENTRE[1] - above, 0.0]])
    hair[0, 2] = depth[int(hair[0, 1]), int(hair[0, 0])]
    assert hair[0, 2] == pytest.approx(PIVOT_DEPTH, abs=1.0)
    np.testing.assert_allclose(_read(maps, _turn(hair, degrees)), hair[:, :2], atol=0.2)
    # The face's centre moves much more than the hair (parallax), in the turn's direction.
    face_shift = _turn(points[40:41], degrees)[0, 0] - points[40, 0]
    hair_shift = _turn(hair, degrees)[0, 0] - hair[0, 0]
    assert abs(face_shift) > abs(hair_shift) + 20
    # No fold anywhere: the backward map's Jacobian stays positive (the fade band widens with the motion).
    grid_y, grid_x = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    gxx, gxy = np.gradient(maps[0] - grid_x, axis=(1, 0))
    gyx, gyy = np.gradient(maps[1] - grid_y, axis=(1, 0))
    assert ((1 + gxx) * (1 + gyy) - gxy * gyx).min() > 0.1


def test_the_ring_follows_only_the_outline_points():
    """Points inside the face that a turn moves unlike the outline (they are what the re-rendered face covers) do
    not bend the hair around the face when the ring is told which points are the outline."""
    zbuffer, points = _face_disk()
    target = _turn(points, 0.0, scale=1.0, shift=(0.0, 0.0))
    target[40:] += np.array([15.0, 0.0])  # the inner points slide sideways; the outline stays
    frame = HeadFrame.from_points(points[:, :2])
    only_outline = rigid_head_maps(points[:, :2], target, frame, (SIZE, SIZE), outline=np.arange(40),
                                   weights=np.r_[np.ones(40), np.full(64, 1e-6)])
    probe = np.array([[CENTRE[0] + 1.1 * HALF, CENTRE[1]], [CENTRE[0] - 1.1 * HALF, CENTRE[1]]])
    np.testing.assert_allclose(_read(only_outline, probe), probe, atol=0.3)


def test_a_large_shift_widens_the_fade_band_so_the_hair_never_folds():
    """A 40 px shift faded out over the default band (0.6 face half-sizes, ~53 px here) would fold the warp above
    the face (the smoothstep's slope times the shift exceeds 1): a strand of hair would loop back on itself."""
    _, points = _face_disk()
    frame = HeadFrame.from_points(points[:, :2])
    shift = np.array([40.0, 0.0])
    maps = rigid_head_maps(points[:, :2], points[:, :2] + shift, frame, (SIZE, SIZE))
    grid_y, grid_x = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    gxx, gxy = np.gradient(maps[0] - grid_x, axis=(1, 0))
    gyx, gyy = np.gradient(maps[1] - grid_y, axis=(1, 0))
    above = grid_y < CENTRE[1]  # the hair above the face (the neck has its own band)
    assert ((1 + gxx) * (1 + gyy) - gxy * gyx)[above].min() > 0.05  # -0.12 without the widening
    np.testing.assert_allclose(_read(maps, points[:40, :2] + shift), points[:40, :2], atol=1.0)
