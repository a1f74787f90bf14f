"""The source photo re-rendered on a moved mesh: exact lookups, per-texel visibility, the fill of unseen surface,
the mouth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicportrait.geometry.mesh import boundary_loops
from magicportrait.heads import MediaPipeHeadModel
from magicportrait.heads.base import pose_vertices
from magicportrait.rendering.fill_atlas import push_pull_fill
from magicportrait.rendering.mouth_interior import TEETH_HEIGHT
from magicportrait.rendering.texture_transfer import (
    REGION_EDGE,
    SourceTexture,
    TextureTransferRenderer,
    _perspective_weights,
    _projected_weights,
    mouth_cavity_faces,
    project_source_texture,
)

SIZE = 256
UPPER_INNER_LIP = (191, 80, 81, 82, 13, 312, 311, 310, 415)
LOWER_INNER_LIP = (95, 88, 178, 87, 14, 317, 402, 318, 324)  # partners of the upper ones, in the same order


def _grid(x0, x1, y0, y1, z, n):
    xs, ys = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    vertices = np.stack([xs.ravel(), ys.ravel(), np.full(n * n, z)], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])
    return vertices, faces


def two_sheets():
    """A 5x5-vertex back sheet (z=50) partly hidden by a front square (z=0); texture R = pixel column."""
    back, back_faces = _grid(40, 200, 40, 200, 50.0, 5)
    front, front_faces = _grid(60, 110, 90, 150, 0.0, 2)
    vertices = np.concatenate([back, front]).astype(np.float32)
    faces = np.concatenate([back_faces, front_faces + len(back)])
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[..., 0] = np.arange(SIZE)[None, :]
    image[..., 1] = 100
    image[90:150, 60:110] = (10, 200, 30)  # what the source camera saw of the front square
    mirror = np.full(len(vertices), -1)
    columns = np.arange(25) % 5
    mirror[:25] = np.arange(25) - columns + (4 - columns)  # the back sheet mirrored about x = 120
    return vertices, faces, image, mirror


def _texture(vertices, faces, image, fallback=(0.2, 0.4, 0.6)):
    texture = project_source_texture(image, vertices, faces)
    texture.fallback_colour = np.asarray(fallback, np.float32)
    return texture


def test_unmoved_mesh_gives_back_the_source_exactly():
    vertices, faces, image, _ = two_sheets()
    out = TextureTransferRenderer(_texture(vertices, faces, image), faces).render(vertices)
    assert out.mask[0].sum() > 20000
    # Exact on any CPU: the sampled colours are the source's integers to ~1e-5 grey levels, far from a rounding step.
    np.testing.assert_array_equal(out.images[0][out.mask[0]], image[out.mask[0]])
    assert not out.mouth.any()


def test_translated_mesh_moves_the_texture_by_whole_pixels():
    vertices, faces, image, _ = two_sheets()
    moved = vertices + np.array([12.0, -7.0, 0.0], np.float32)
    out = TextureTransferRenderer(_texture(vertices, faces, image), faces).render(moved)
    rows, cols = np.nonzero(out.mask[0])
    np.testing.assert_array_equal(out.images[0][rows, cols], image[rows + 7, cols - 12])


def _uncovered(mirror_rest: bool = False):
    """The two sheets with the front square moved away (uncovering the back sheet behind it), rendered with a rest
    shape in which the square lies beside the sheet (so each has its own part of the fill atlas)."""
    vertices, faces, image, _ = two_sheets()
    moved = vertices.copy()
    moved[25:, 0] += 140
    return TextureTransferRenderer(_texture(vertices, faces, image), faces, rest_vertices=moved).render(moved)


def test_surface_the_source_never_saw_is_filled_from_its_own_side_not_its_mirror():
    out = _uncovered()
    columns = np.arange(65, 105) + 0.5
    red = out.images[0][95:145, 65:105, 0].astype(float)
    mirrored = 240.0 - columns - 0.5  # the gradient's value at the mirror point (x = 120) of each column
    # the fill continues the sheet around the hole (columns 58..112 at its border), never its mirror image
    assert red.min() >= 50 and red.max() <= 120
    assert np.abs(red - columns[None]).mean() < 15 and np.abs(red - mirrored[None]).min() > 20
    assert np.abs(out.images[0][95:145, 65:105, 1].astype(int) - 100).max() <= 3  # the sheet's green, not the square's
    seen = out.images[0][60:80, 65:105]  # above the square: the source saw it
    np.testing.assert_array_equal(seen[..., 0], np.tile(np.arange(65, 105), (20, 1)))
    np.testing.assert_array_equal(out.images[0][95:145, 205:245], np.full((50, 40, 3), (10, 200, 30)))


def test_uncovered_surface_next_to_the_occluders_edge_shows_no_line_of_it():
    """The source pixels right at the square's edge mix square and sheet (here: a bright frame round the square);
    uncovered, they must not leave that frame's line on the sheet."""
    vertices, faces, image, _ = two_sheets()
    image[88:152, 58:112] = 255  # a bright rim round the square's edge in the photo
    image[90:150, 60:110] = (10, 200, 30)
    moved = vertices.copy()
    moved[25:, 0] += 140
    out = TextureTransferRenderer(_texture(vertices, faces, image), faces, rest_vertices=moved).render(moved)
    hole = out.images[0][86:154, 56:114].astype(int)
    assert hole[..., 1].max() < 140  # no trace of the white rim (G 255) nor of the square (G 200)


def test_push_pull_fill_keeps_what_was_seen_and_continues_it_into_the_gap():
    colours = np.zeros((64, 64, 3), np.float32)
    colours[:, :20] = (1.0, 0.0, 0.0)
    colours[:, 44:] = (0.0, 0.0, 1.0)
    colours[:, 20:44] = (0.0, 1.0, 0.0)  # under zero weight: must not show
    weight = np.ones((64, 64), np.float32)
    weight[:, 20:44] = 0
    filled = push_pull_fill(colours, weight)
    np.testing.assert_allclose(filled[:, :20], colours[:, :20], atol=1e-6)
    assert filled[:, 20:44, 1].max() < 1e-6
    assert (filled[:, 22, 0] > 0.7).all() and (filled[:, 41, 2] > 0.7).all()  # each side of the gap from its border
    np.testing.assert_allclose(push_pull_fill(colours, 0 * weight, (0.2, 0.4, 0.6)), np.tile([0.2, 0.4, 0.6],
                                                                                          (64, 64, 1)), atol=1e-6)


def test_a_mesh_the_source_never_saw_gets_the_fallback_colour():
    vertices, faces, image, _ = two_sheets()
    texture = _texture(vertices, faces, image)
    texture.zbuffer[:] = -1e6  # something in front of everything
    out = TextureTransferRenderer(texture, faces).render(vertices)
    np.testing.assert_array_equal(out.images[0][out.mask[0]], np.tile(np.round(np.array([0.2, 0.4, 0.6]) * 255),
                                                                      (int(out.mask[0].sum()), 1)))


@pytest.mark.parametrize("seed", [0, 1])
def test_perspective_weights_invert_projection(seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, (3, 3)) + np.array([0, 0, 4.0])  # a triangle in front of the camera
    beta = rng.dirichlet(np.ones(3))
    surface_point = beta @ points
    projected = points[:, :2] / points[:, 2:]
    target = surface_point[:2] / surface_point[2]
    screen = np.linalg.solve(np.vstack([projected.T, np.ones(3)]), np.append(target, 1.0))
    depth = torch.tensor(points[:, 2])
    np.testing.assert_allclose(_perspective_weights(torch.tensor(screen), depth).numpy(), beta, atol=1e-9)
    np.testing.assert_allclose(_projected_weights(torch.tensor(beta), depth).numpy(), screen, atol=1e-9)


def _frontal_face():
    model = MediaPipeHeadModel()
    vertices = pose_vertices(model.canonical[None], np.zeros((1, 3)), np.array([12.0]),
                             np.array([[128.0, 110.0, 200.0]]))[0]
    return model, vertices.astype(np.float32)


def test_opened_mouth_of_a_closed_source_shows_a_shaded_interior_with_a_teeth_band():
    model, vertices = _frontal_face()
    closed = vertices.copy()
    closed[list(LOWER_INNER_LIP), :2] = closed[list(UPPER_INNER_LIP), :2]
    image = np.full((SIZE, SIZE, 3), 180, np.uint8)
    mouth = mouth_cavity_faces(model.mouth_loop(), model.canonical)
    renderer = TextureTransferRenderer(_texture(closed, model.faces, image), model.faces, mouth_faces=mouth,
                                       template_vertices=model.canonical)
    opened = closed.copy()
    opened[list(LOWER_INNER_LIP), 1] += 20
    out = renderer.render(opened)
    x, top = int(closed[13, 0]), int(np.ceil(closed[13, 1] - 0.5))
    assert out.mouth[0][top + 1:top + 15, x].all() and out.mouth[0].sum() > 600
    column = out.images[0][top + 1:top + 15, x].astype(float).mean(1)  # from the upper lip to the lower one
    band = TEETH_HEIGHT * np.linalg.norm(opened[308, :2] - opened[78, :2])  # about 7 px
    teeth, deep = column[1:int(band) - 1], column[int(band) + 1:11]
    assert teeth.min() > 120 and teeth.mean() > deep.min() + 100  # a bright band of upper teeth under the lip
    assert column[int(band) + 1:].max() < 80  # no wider than the stated band
    assert deep.min() < 40  # dark deeper in
    assert column[11:].mean() > deep.min() + 15  # lit again near the lower lip (and the tongue there)
    wide = out.images[0][out.mouth[0]].astype(float).mean(1)
    assert wide.std() > 30  # not a flat fill


def test_open_source_mouth_keeps_its_teeth():
    model, vertices = _frontal_face()
    opened = vertices.copy()
    opened[model.canonical[:, 1] > model.canonical[13, 1] + 0.3, 1] += 20  # the jaw drops: lower lip and chin
    image = np.full((SIZE, SIZE, 3), 180, np.uint8)
    top, bottom = opened[13, 1], opened[14, 1]
    image[int(top) + 2:int(bottom) - 2, int(opened[78, 0]) + 10:int(opened[308, 0]) - 10] = 255  # "teeth"
    mouth = mouth_cavity_faces(model.mouth_loop(), model.canonical)
    out = TextureTransferRenderer(_texture(opened, model.faces, image), model.faces, mouth_faces=mouth).render(opened)
    centre = np.round((opened[13, :2] + opened[14, :2]) / 2).astype(int)
    assert out.mouth[0][centre[1], centre[0]]
    np.testing.assert_array_equal(out.images[0][centre[1], centre[0]], [255, 255, 255])


def test_boundary_loops_find_the_hole_of_a_mesh():
    _, faces = _grid(0, 1, 0, 1, 0, 4)  # a 3x3-cell sheet: one boundary loop of 12 vertices
    keep = np.ones(len(faces), bool)
    keep[[4, 13]] = False  # remove the centre cell: a second loop of 4
    loops = sorted(boundary_loops(faces[keep]), key=len)
    assert [len(loop) for loop in loops] == [4, 12]
    assert set(loops[0]) == {5, 6, 9, 10}


def test_mediapipe_mouth_loop_starts_at_a_corner():
    model = MediaPipeHeadModel()
    loop = model.mouth_loop()
    assert loop[0] == 78 and 308 in loop and len(loop) == 20
    mirror = model.mirror_vertices()
    reflected = model.canonical[mirror] * np.array([-1.0, 1.0, 1.0])
    assert mirror[78] == 308 and np.linalg.norm(reflected - model.canonical, axis=1).mean() < 0.3


def test_source_texture_fallback_is_the_median_of_what_the_mesh_covers():
    vertices, faces, image, _ = two_sheets()
    texture = project_source_texture(image, vertices, faces)
    assert isinstance(texture, SourceTexture)
    covered = image[np.isfinite(texture.zbuffer)]
    np.testing.assert_allclose(texture.fallback_colour, np.median(covered, axis=0) / 255.0, atol=1e-6)
    assert np.isinf(texture.zbuffer[0, 0]) and texture.zbuffer[120, 80] == 0.0 and texture.zbuffer[60, 150] == 50.0


def test_surface_outside_the_region_is_drawn_from_the_fill_not_from_what_the_photo_shows_there():
    """A fitted mesh reaching past the real face (here the sheet's right part, x > 160, where the photo shows a
    blue background): drawn, without holes, from the fill of what the source saw inside the region."""
    vertices, faces, image, _ = two_sheets()
    image[:, 160:] = (0, 0, 255)
    region = np.zeros((SIZE, SIZE), bool)
    region[:, :160] = True
    texture = project_source_texture(image, vertices, faces, region=region)
    covered = np.isfinite(texture.zbuffer) & region
    np.testing.assert_allclose(texture.fallback_colour * 255, np.median(image[covered], axis=0), atol=1e-3)
    out = TextureTransferRenderer(texture, faces).render(vertices)
    mask = out.mask[0]
    np.testing.assert_array_equal(mask, TextureTransferRenderer(_texture(vertices, faces, image), faces)
                                  .render(vertices).mask[0])  # nothing left out
    inside = mask.copy()
    inside[:, 156:] = False
    np.testing.assert_array_equal(out.images[0][inside], image[inside])  # the region as the photo shows it
    outside = out.images[0][45:195, 164:198].astype(int)
    assert outside[..., 2].max() < 40 and outside[..., 1].min() > 80  # the sheet's colours carried on, no blue
    with pytest.raises(ValueError):
        project_source_texture(image, vertices, faces, region=region[:-1])


def test_texels_at_the_regions_edge_fade_out_only_where_they_would_be_magnified():
    """The photo mixes the face's edge with what lies beyond it over a few px: unmagnified (ratio 1) every texel
    inside the region counts; magnified 2x, those within REGION_EDGE of the side of the edge fade, 4x, three times
    as many."""
    vertices, faces, image, _ = two_sheets()
    region = np.zeros((SIZE, SIZE), bool)
    region[:, :160] = True
    renderer = TextureTransferRenderer(project_source_texture(image, vertices, faces, region=region), faces)
    edge = renderer.edge_px
    assert edge == pytest.approx(REGION_EDGE * SIZE)
    depth = torch.tensor([0.0, 1.0, 0.5 * edge, edge, 3 * edge, 10 * edge])
    np.testing.assert_allclose(renderer._inside(depth, torch.ones(6)).numpy(), [0, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(renderer._inside(depth, torch.full((6,), 0.5)).numpy(),
                               [0, 1 / edge, 0.5, 1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(renderer._inside(depth, torch.full((6,), 0.25)).numpy(),
                               [0, 1 / (3 * edge), 1 / 6, 1 / 3, 1, 1], atol=1e-6)
    np.testing.assert_allclose(renderer.region_depth[100, 150:162].numpy(), [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0],
                               atol=0.05)
