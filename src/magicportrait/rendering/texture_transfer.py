"""Re-render the source photo on a moved head mesh: the geometric (no-weights) reenactment's face.

The source crop is the texture: every vertex's texture coordinate is where the fitted source mesh puts it in the
source image (projective texture mapping). A surface point shown in an output pixel takes the source colour at its
source position as far as the source saw it there (per-texel visibility: its source depth against the source's
z-buffer, min-filtered so that texels next to a nearer surface's edge count as hidden too, with a soft ramp), and
fades to a fill for what the source did not see: the colour of the nearest seen surface on the same side of the
face (:mod:`magicportrait.rendering.fill_atlas`), never a mirror copy (which would paint a second nose or brow).
Interpolation is perspective-correct for perspective cameras (both in the output and in the source projection).
The mouth opening is closed by a strip of triangles across the inner lips: it shows the source's own mouth interior
(teeth) where the source mouth was open enough, and a shaded cavity with a hint of teeth and tongue where the driving
mouth opens wider than the source's (:mod:`magicportrait.rendering.mouth_interior`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from magicportrait.heads.mediapipe_topology import orient_like, strip_triangles
from magicportrait.rendering.fill_atlas import ATLAS_SIZE, build_fill_atlas
from magicportrait.rendering.mouth_interior import MouthInterior
from magicportrait.rendering.rasterizer import rasterize_foreground
from magicportrait.rendering.shading import sample_texture_foreground, vertex_normals

__all__ = ["SourceTexture", "TextureTransferRenderer", "TransferredFaces", "mouth_cavity_faces",
           "project_source_texture"]

DEPTH_TOLERANCE = 0.012
"""Depth slack of the visibility test, as a fraction of the image side (z is in pixels)."""

DEFAULT_CAVITY = (0.17, 0.07, 0.07)
"""Colour of the inside of an open mouth where the source shows no teeth (a dark red-brown)."""

EMPTY_DEPTH = 1e30

OCCLUSION_MARGIN = 0.006
"""Texels this close (fraction of the image side) to the edge of a nearer surface in the source count as hidden:
the source pixels there mix both surfaces (a bright line of the nose's edge smeared over the revealed cheek)."""

MIN_FACING = 0.1
"""Surface seen more obliquely than this (|normal z|) counts as this steep in the occlusion test."""

REGION_EDGE = 0.008
"""Width (fraction of the source side) over which the photo mixes the face's edge with what lies beyond it."""

STRETCH_LIMITS = (0.25, 0.5)
"""A texel seen at a grazing angle in the source but more frontally in the output is stretched (silhouette texels
of the source turn into streaks of hair or background): it counts as seen fully while its foreshortening ratio
(source facing / output facing) is at least the second value, and not at all below the first."""

TEETH_STRETCH = (0.15, 0.5)
"""A mouth triangle shows the source's mouth texture fully when its source area is at least the second fraction of
its rendered area, and the cavity below the first (a closed source mouth stretched open)."""


@dataclass
class SourceTexture:
    """The source photo as a texture of one mesh: where each vertex lies in it and what the source camera saw.

    Attributes:
        image: `(H, W, 3)` uint8 RGB source (crop).
        uv: `(V, 2)` float32 image-space position of each vertex in ``image`` (pixel (i, j) covers [i, i+1)).
        depth: `(V,)` float32 image-space z of each vertex in the source (smaller = nearer).
        zbuffer: `(H, W)` float32 z of the nearest source surface per pixel, +inf where the mesh is absent.
        fallback_colour: `(3,)` float32 in [0, 1], the median colour of the visible face (the fill if the source
            saw none of the mesh; sets the brightness of the mouth interior's teeth hint).
        perspective: whether the source vertices come from a perspective camera (z proportional to depth).
        region: optional `(H, W)` bool, where ``image`` shows this mesh's surface (the face inside its outline);
            surface points that project outside it (a fitted cheek reaching past the real one, onto background or
            hair) count as unseen: drawn from the fill, like the far side of a turned face. None: wherever the mesh
            is.
    """

    image: np.ndarray
    uv: np.ndarray
    depth: np.ndarray
    zbuffer: np.ndarray
    fallback_colour: np.ndarray
    perspective: bool = False
    region: np.ndarray | None = None


def project_source_texture(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                           perspective: bool = False, region: np.ndarray | None = None) -> SourceTexture:
    """Texture the mesh ``faces`` with ``image`` through its fitted source pose ``vertices`` `(V, 3)` image space;
    ``region``: see :class:`SourceTexture`."""
    image = np.ascontiguousarray(image)
    vertices = np.asarray(vertices, np.float32)
    fg = rasterize_foreground(vertices[None], faces, image.shape[:2])
    zbuffer = fg.scatter(fg.zbuf.float(), float("inf"))[0].numpy()
    if region is not None:
        region = np.asarray(region, bool)
        if region.shape != image.shape[:2]:
            raise ValueError(f"region is {region.shape}, the image {image.shape[:2]}.")
    seen = image[np.isfinite(zbuffer) & (True if region is None else region)]
    fallback = np.median(seen, axis=0) / 255.0 if len(seen) else np.full(3, 0.5)
    return SourceTexture(image=image, uv=vertices[:, :2].copy(), depth=vertices[:, 2].copy(), zbuffer=zbuffer,
                         fallback_colour=fallback.astype(np.float32), perspective=perspective, region=region)


def mouth_cavity_faces(loop: np.ndarray, rest_vertices: np.ndarray) -> np.ndarray:
    """Triangles across the mouth opening ``loop`` (starting at a mouth corner), facing the camera at rest.

    The strip zig-zags between the upper and the lower lip, so each triangle has vertices on both lips and the
    source's teeth part with the lips when the jaw opens.
    """
    return orient_like(strip_triangles(np.asarray(loop)), np.asarray(rest_vertices))


@dataclass
class TransferredFaces:
    """The re-rendered face of N frames: `(N, H, W, 3)` uint8 colours, `(N, H, W)` bool coverage and mouth pixels."""

    images: np.ndarray
    mask: np.ndarray
    mouth: np.ndarray


class TextureTransferRenderer:
    """Renders the source texture on moved vertices of the same mesh (see the module docstring).

    Args:
        texture: from :func:`project_source_texture`.
        faces: `(F, 3)` the head mesh's triangles.
        mouth_faces: optional `(M, 3)` triangles across the mouth opening (:func:`mouth_cavity_faces`).
        rest_vertices: optional `(V, 3)` the mesh at rest in its model frame (x to the subject's left, y down, z
            into the head), for the fill atlas; default the source-posed mesh.
        template_vertices: optional `(V, 3)` a shape of the mesh with the lips apart (the model's mean head), for
            the mouth's coordinates; default ``rest_vertices``.
        image_size: (H, W) of the output; default the texture's size.
        cavity_colour: RGB in [0, 1] of the open mouth's inside where the source shows none.
        device: torch device.
    """

    def __init__(self, texture: SourceTexture, faces: np.ndarray, *, mouth_faces: np.ndarray | None = None,
                 rest_vertices: np.ndarray | None = None, template_vertices: np.ndarray | None = None,
                 image_size: tuple[int, int] | None = None,
                 cavity_colour=DEFAULT_CAVITY, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.texture = texture
        self.image_size = tuple(image_size or texture.image.shape[:2])
        faces = np.asarray(faces, np.int64)
        mouth = np.zeros((0, 3), np.int64) if mouth_faces is None else np.asarray(mouth_faces, np.int64)
        self.num_head_faces = len(faces)
        self.faces = torch.as_tensor(np.concatenate([faces, mouth]), device=self.device)
        num_vertices = len(texture.uv)
        if int(self.faces.max()) >= num_vertices:
            raise ValueError(f"faces index vertex {int(self.faces.max())}, but the texture has {num_vertices}.")
        self.uv = torch.as_tensor(texture.uv, dtype=torch.float32, device=self.device)
        self.depth = torch.as_tensor(texture.depth, dtype=torch.float32, device=self.device)
        self.margin_px = max(1, round(OCCLUSION_MARGIN * max(texture.image.shape[:2])))
        # no surface = infinitely far: a large finite depth keeps the visibility test free of inf arithmetic
        zbuffer = np.minimum(texture.zbuffer, EMPTY_DEPTH).astype(np.float32)
        self.zbuffer = torch.as_tensor(zbuffer, device=self.device)
        self.near_zbuffer = self._occlusion_zbuffer(zbuffer)
        self.region_depth = None  # px inside the region's edge, per source pixel (0 outside)
        if texture.region is not None:
            depth_px = cv2.distanceTransform(texture.region.astype(np.uint8), cv2.DIST_L2, 5)
            self.region_depth = torch.as_tensor(depth_px, device=self.device)
        self.edge_px = REGION_EDGE * max(texture.image.shape[:2])
        source_vertices = torch.cat([self.uv, self.depth[:, None]], 1)
        self.head_faces = self.faces[:self.num_head_faces]
        self.source_facing = vertex_normals(source_vertices, self.head_faces)[:, 2].abs()
        self.image = torch.as_tensor(texture.image, device=self.device).permute(2, 0, 1)[None].float() / 255.0
        self.tolerance = DEPTH_TOLERANCE * max(texture.image.shape[:2])
        rest = source_vertices.cpu().numpy() if rest_vertices is None else np.asarray(rest_vertices, np.float64)
        self.atlas = build_fill_atlas(self._atlas_lookup, self.head_faces, rest, ATLAS_SIZE,
                                      texture.fallback_colour)
        self.mouth = None if not len(mouth) else MouthInterior.from_faces(
            self.faces[self.num_head_faces:], rest if template_vertices is None else template_vertices,
            cavity_colour, texture.fallback_colour)
        self._key_buffer: torch.Tensor | None = None

    def _occlusion_zbuffer(self, zbuffer: np.ndarray) -> torch.Tensor:
        """The source z-buffer, min-filtered by OCCLUSION_MARGIN."""
        grow = self.margin_px
        kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)
        nearest = cv2.erode(zbuffer, kernel)
        return torch.as_tensor(nearest, dtype=torch.float32, device=self.device)

    def _atlas_lookup(self, corners: torch.Tensor, bary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What feeds the fill: the source's colours, weighted by how squarely the source saw them (facing 1)."""
        return self._source_lookup(corners, bary, torch.ones(len(corners), device=self.device))

    def render(self, vertices) -> TransferredFaces:
        """Re-render the source on `(N, V, 3)` image-space vertices (the same mesh, moved)."""
        verts = torch.as_tensor(np.asarray(vertices, np.float32), device=self.device)
        verts = verts[None] if verts.ndim == 2 else verts
        n, (h, w) = verts.shape[0], self.image_size
        if self._key_buffer is None or self._key_buffer.numel() < n * h * w:
            self._key_buffer = torch.empty(n * h * w, dtype=torch.int64, device=self.device)
        fg = rasterize_foreground(verts, self.faces, (h, w), key_buffer=self._key_buffer)
        corners = self.faces[fg.face]  # (K, 3)
        bary = fg.bary.float()
        if self.texture.perspective:  # screen-space -> surface barycentrics in the output view
            output_depth = verts[..., 2].reshape(-1)[corners + (fg.frame * verts.shape[1])[:, None]]
            bary = _perspective_weights(bary, output_depth)
        output_facing = vertex_normals(verts, self.head_faces)[..., 2].abs().reshape(-1)
        facing = (output_facing[corners + (fg.frame * verts.shape[1])[:, None]] * bary).sum(1)
        colours = self._surface_colours(fg, corners, bary, facing)
        mouth = fg.face >= self.num_head_faces
        if bool(mouth.any()):
            colours[mouth] = self._mouth_colours(verts, fg.frame[mouth], fg.face[mouth] - self.num_head_faces,
                                                 corners[mouth], bary[mouth], colours[mouth])
        images = fg.scatter((colours.clamp(0, 1) * 255).round().to(torch.uint8))
        mouth_mask = fg.scatter(mouth)
        return TransferredFaces(images=images.cpu().numpy(), mask=fg.mask().cpu().numpy(),
                                mouth=mouth_mask.cpu().numpy())

    def _mouth_colours(self, verts: torch.Tensor, frame: torch.Tensor, face: torch.Tensor, corners: torch.Tensor,
                       bary: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Mouth pixels: the source's mouth where it was open enough, else the procedural interior."""
        alpha = self._teeth_alpha(verts)[frame, face][:, None]
        height, width = self.mouth.openings(verts)
        pixel_height = (height[frame[:, None], corners] * bary).sum(1)
        interior = self.mouth.colours(corners, bary, pixel_height, width[frame])
        return alpha * source + (1 - alpha) * interior

    def _output_edges(self, fg, facing: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """`(S,)` in [0, 1] for the covered ``pixels`` (indices into ``fg``): whether a nearer surface's edge lies
        within the occlusion margin in the output too (there the source's pixels are right as they are, e.g.
        everywhere when unmoved). The margin is probed on a ring of 16 points, enough for an edge's line."""
        n, h, w = fg.shape
        depth = fg.scatter(fg.zbuf.float(), EMPTY_DEPTH).view(-1)
        index = fg.pixel_index[pixels]
        row, col = (index % (h * w)) // w, index % w
        base = index - row * w - col
        nearest = torch.full_like(fg.zbuf[pixels].float(), EMPTY_DEPTH)
        for radius in sorted({max(1, self.margin_px // 2), self.margin_px}):
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
                r = (row + dy * radius).clamp(0, h - 1)
                c = (col + dx * radius).clamp(0, w - 1)
                nearest = torch.minimum(nearest, depth[base + r * w + c])
        facing = facing[pixels]
        slope = (1 - facing.square()).clamp_min(0).sqrt_() / facing.clamp_min(MIN_FACING)
        gap = fg.zbuf[pixels].float() - nearest - self.margin_px * slope
        return gap.sub_(self.tolerance).div_(self.tolerance).clamp_(0, 1)

    def _surface_colours(self, fg, corners: torch.Tensor, bary: torch.Tensor, facing: torch.Tensor) -> torch.Tensor:
        """`(K, 3)` colours: the source where it saw the point (inside the texture's region), faded into the fill
        atlas where it did not.

        ``facing``: `(K,)` |normal z| of the surface in the output view (for the stretch test). Texels the occlusion
        margin hides are checked against the output (:meth:`_output_edges`): a few, so that stays cheap.
        """
        colours, seen, exact = self._source_lookup(corners, bary, facing, exact=True)
        doubt = torch.nonzero(exact > seen).squeeze(1)
        if doubt.numel():
            seen[doubt] += self._output_edges(fg, facing, doubt) * (exact[doubt] - seen[doubt])
        hidden = torch.nonzero(seen < 1).squeeze(1)  # usually a small part: look the fill up only there
        if hidden.numel() == 0:
            return colours
        position = torch.einsum("kc,kcd->kd", bary[hidden], self.atlas.uv[corners[hidden]])
        frame = torch.zeros(len(hidden), dtype=torch.int64, device=self.device)
        fill = sample_texture_foreground(self.atlas.image, position, frame)
        seen = seen[hidden, None]
        colours[hidden] = colours[hidden] * seen + fill * (1 - seen)
        return colours

    def _source_lookup(self, corners: torch.Tensor, bary: torch.Tensor, facing: torch.Tensor,
                       exact: bool = False) -> tuple[torch.Tensor, ...]:
        """Source colour `(K, 3)` and visibility `(K,)` in [0, 1] of the surface points ``bary`` on ``corners``
        (0: hidden in the source, or seen there so obliquely that it would be stretched, see STRETCH_LIMITS).

        Texels within the occlusion margin of a nearer surface's edge in the source count as hidden; with
        ``exact``, also returns the visibility without that margin (both with the stretch test). Outside the
        texture's region nothing counts as seen."""
        uv, depth = self.uv[corners], self.depth[corners]  # (K, 3, 2), (K, 3)
        screen = _projected_weights(bary, depth) if self.texture.perspective else bary
        position = torch.einsum("kc,kcd->kd", screen, uv)
        z = (bary * depth).sum(1)  # depth is affine on the surface, so the surface weights apply
        h, w = self.zbuffer.shape
        col = position[:, 0].long().clamp_(0, w - 1)  # positions are >= 0 where it matters: truncation = floor
        row = position[:, 1].long().clamp_(0, h - 1)
        flat = row * w + col
        source_facing = (self.source_facing[corners] * bary).sum(1)
        # the min-filtered z-buffer is nearer than the texel by up to the margin times its own slope anyway
        slope = (1 - source_facing.square()).clamp_min(0).sqrt_() / source_facing.clamp_min(MIN_FACING)
        nearest = self.near_zbuffer.view(-1)[flat]
        seen = (nearest - z + self.margin_px * slope).add_(2 * self.tolerance).div_(self.tolerance).clamp_(0, 1)
        ratio = source_facing / facing.clamp_min(1e-6)
        low, high = STRETCH_LIMITS
        stretch = ((ratio - low) / (high - low)).clamp_(0, 1)
        inside = None if self.region_depth is None else self._inside(self.region_depth.view(-1)[flat], ratio)
        frame = torch.zeros(len(position), dtype=torch.int64, device=self.device)
        colours = sample_texture_foreground(self.image, position, frame)
        seen.mul_(stretch)
        if inside is not None:  # outside the region the source shows something else there (background, hair)
            seen.mul_(inside)
        if not exact:
            return colours, seen
        unmargined = (self.zbuffer.view(-1)[flat] - z).add_(2 * self.tolerance).div_(self.tolerance).clamp_(0, 1)
        unmargined.mul_(stretch)
        return colours, seen, unmargined if inside is None else unmargined.mul_(inside)

    def _inside(self, depth_px: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """`(K,)` in [0, 1]: how much a texel ``depth_px`` inside the region's edge counts as the face. The photo
        mixes the face's edge with what lies beyond it over a few px; magnified (``ratio`` < 1: seen more
        frontally than in the source), that mix would spread into a band of background colour along the face's
        edge, so the texels near the edge fade out over ``REGION_EDGE`` times the magnification less one."""
        band = (self.edge_px * (1.0 / ratio.clamp_min(1e-3) - 1.0)).clamp_min(1e-6)
        return (depth_px / band).clamp_(0, 1)

    def _teeth_alpha(self, verts: torch.Tensor) -> torch.Tensor:
        """`(N, M)` weight of the source mouth texture per mouth triangle (1: source area enough, 0: interior)."""
        mouth = self.faces[self.num_head_faces:]
        source_area = _triangle_areas(self.uv[mouth])  # (M,)
        rendered_area = _triangle_areas(verts[:, mouth, :2])  # (N, M)
        ratio = source_area / rendered_area.clamp_min(1e-6)
        low, high = TEETH_STRETCH
        return ((ratio - low) / (high - low)).clamp(0, 1)


def _perspective_weights(bary: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Barycentrics over a projected triangle -> over the surface: ``(b_i / z_i) / sum_j (b_j / z_j)``."""
    weights = bary / depth.clamp_min(1e-6)
    return weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)


def _projected_weights(bary: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Surface barycentrics -> barycentrics over the projected triangle: ``(b_i z_i) / sum_j (b_j z_j)``."""
    weights = bary * depth
    return weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)


def _triangle_areas(corners: torch.Tensor) -> torch.Tensor:
    """Unsigned areas of 2D triangles `(..., 3, 2)`."""
    a, b, c = corners.unbind(-2)
    ab, ac = b - a, c - a
    return 0.5 * (ab[..., 0] * ac[..., 1] - ab[..., 1] * ac[..., 0]).abs()
