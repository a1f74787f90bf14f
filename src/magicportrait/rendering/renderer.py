"""Guidance-map renderer of MagicPortrait: depth, normal and shaded render maps from one rasterisation."""

from __future__ import annotations

import numpy as np
import torch

from magicportrait.types import GuidanceMaps, quantize_unit

from .rasterizer import Foreground, Fragments, _as_float_tensor, interpolate_foreground, rasterize_foreground
from .shading import (
    DEFAULT_SH_LIGHT,
    as_texture,
    camera_normals_foreground,
    depth_foreground,
    sample_texture_foreground,
    shade_foreground,
)

__all__ = ["GuidanceRenderer", "SKIN_GREY"]

SKIN_GREY = 0.7
"""Uniform albedo of the render map when neither a texture nor vertex colours are given."""


class GuidanceRenderer:
    """Renders MagicPortrait's guidance maps for meshes of one topology (orthographic, image-space vertices).

    Args:
        faces: `(F, 3)` vertex indices; outward normal ``normalize(cross(v1 - v0, v2 - v0))`` in image space.
        image_size: (H, W) of the maps.
        sh_light: `(9, 3)` (or `(N, 9, 3)`) SH coefficients of the render map (see :mod:`.shading`).
        device: torch device of all tensors (vertices are converted to float32 on it).
        cull_backfaces: passed to :func:`rasterize` (default False, like the official release).

    The renderer keeps its z-buffer scratch tensor between calls (no re-allocation per batch), so one instance
    must not be used from several threads at once. Render long videos in batches of a few frames: the cost is
    per pixel and per triangle, so batching beyond ~4 frames gains little and costs memory (~70 bytes/pixel).
    """

    def __init__(self, faces, image_size: tuple[int, int] = (512, 512), sh_light=DEFAULT_SH_LIGHT,
                 device: str | torch.device = "cpu", *, cull_backfaces: bool = False) -> None:
        self.device = torch.device(device)
        faces_t = torch.as_tensor(np.asarray(faces) if not isinstance(faces, torch.Tensor) else faces)
        if faces_t.ndim != 2 or faces_t.shape[1] != 3:
            raise ValueError(f"faces must have shape (F, 3), got {tuple(faces_t.shape)}.")
        self.faces = faces_t.to(self.device, torch.int64).contiguous()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.sh_light = _as_float_tensor(sh_light, device=self.device)
        self.cull_backfaces = cull_backfaces
        self._key_buffer: torch.Tensor | None = None  # z-buffer scratch, reused between calls

    # ------------------------------------------------------------------------------------------------ helpers
    def _vertices(self, vertices) -> torch.Tensor:
        v = torch.as_tensor(np.asarray(vertices) if not isinstance(vertices, torch.Tensor) else vertices,
                            device=self.device).to(torch.float32)  # the maps are float32 images
        if v.ndim == 2:
            v = v.unsqueeze(0)
        if v.ndim != 3 or v.shape[-1] != 3:
            raise ValueError(f"vertices must have shape (N, V, 3), got {tuple(v.shape)}.")
        return v

    def rasterize(self, vertices) -> Fragments:
        """Rasterise `(N, V, 3)` image-space vertices with this renderer's faces and image size."""
        return self._foreground(self._vertices(vertices)).to_fragments()

    def _foreground(self, verts: torch.Tensor) -> Foreground:
        size = verts.shape[0] * self.image_size[0] * self.image_size[1]
        if self._key_buffer is None or self._key_buffer.numel() < size:
            self._key_buffer = torch.empty(size, dtype=torch.int64, device=self.device)
        return rasterize_foreground(verts, self.faces, self.image_size, cull_backfaces=self.cull_backfaces,
                                    key_buffer=self._key_buffer)

    def _uv(self, uv, num_vertices: int) -> torch.Tensor:
        uv_t = _as_float_tensor(uv, device=self.device)
        if uv_t.ndim != 2 or uv_t.shape != (num_vertices, 2):
            raise ValueError(f"uv must have shape (V, 2) with V={num_vertices}, got {tuple(uv_t.shape)}.")
        return uv_t

    def _sample(self, texture, uv_fg: torch.Tensor, fg: Foreground) -> torch.Tensor:
        tex = as_texture(texture, device=self.device)
        if tex.shape[0] not in (1, fg.shape[0]):
            raise ValueError(f"texture batch {tex.shape[0]} does not match {fg.shape[0]} frames.")
        return sample_texture_foreground(tex, uv_fg, fg.frame)

    # ------------------------------------------------------------------------------------------------- public
    def render(self, vertices, *, vertex_colors=None, texture=None, uv=None) -> GuidanceMaps:
        """Depth, normal and render maps of `(N, V, 3)` image-space vertices from ONE rasterisation.

        Args:
            vertices: `(N, V, 3)` (or `(V, 3)`) numpy array or tensor, image space.
            vertex_colors: optional `(V, 3)` or `(N, V, 3)` albedo in [0, 1] (uint8 is divided by 255).
            texture: optional `(3, Ht, Wt)` / `(Ht, Wt, 3)` uint8 or float [0, 1] albedo texture (with ``uv``).
            uv: `(V, 2)` texture pixel coordinates of the vertices (texel (i, j) centred at (i+0.5, j+0.5)).

        Returns:
            :class:`GuidanceMaps`. The render albedo is the texture at the interpolated uv if given, else the
            interpolated vertex colours, else a uniform grey :data:`SKIN_GREY`.
        """
        fg, depth, normal, render = self._render_foreground(vertices, vertex_colors, texture, uv)
        return GuidanceMaps(depth=fg.scatter(depth), normal=fg.scatter(normal), render=fg.scatter(render),
                            mask=fg.mask())

    def render_uint8(self, vertices, *, vertex_colors=None, texture=None, uv=None) -> dict[str, np.ndarray]:
        """Same as ``render(...).to_uint8()`` but converts only the covered pixels (faster for long videos)."""
        fg, depth, normal, render = self._render_foreground(vertices, vertex_colors, texture, uv)
        maps = {"depth": depth[:, None].expand(-1, 3), "normal": normal, "render": render}
        return {name: fg.scatter(quantize_unit(values)).cpu().numpy() for name, values in maps.items()}

    def _render_foreground(self, vertices, vertex_colors, texture, uv):
        """Foreground and the `(K,)` depth, `(K, 3)` clamped normal and `(K, 3)` render values of covered pixels."""
        verts = self._vertices(vertices)
        fg = self._foreground(verts)
        depth = depth_foreground(fg, verts)
        if texture is not None:
            if uv is None:
                raise ValueError("a texture needs uv coordinates.")
            uv_t = self._uv(uv, verts.shape[1])
            normals, uv_fg = camera_normals_foreground(fg, verts, self.faces, extra_attributes=uv_t)
            albedo = self._sample(texture, uv_fg, fg).to(normals.dtype)
        elif vertex_colors is not None:
            colors = torch.as_tensor(np.asarray(vertex_colors) if not isinstance(vertex_colors, torch.Tensor)
                                     else vertex_colors, device=self.device)
            colors = colors.to(verts.dtype) / 255.0 if colors.dtype == torch.uint8 else colors.to(verts.dtype)
            if colors.ndim not in (2, 3) or colors.shape[-2:] != (verts.shape[1], 3) \
                    or (colors.ndim == 3 and colors.shape[0] not in (1, verts.shape[0])):
                raise ValueError(f"vertex_colors must have shape (V, 3) or (N, V, 3) with V={verts.shape[1]}, "
                                 f"got {tuple(colors.shape)}.")
            normals, albedo = camera_normals_foreground(fg, verts, self.faces, extra_attributes=colors)
        else:
            normals = camera_normals_foreground(fg, verts, self.faces)
            albedo = normals.new_full((1, 3), SKIN_GREY)
        render = shade_foreground(normals, albedo, self.sh_light, fg.frame)
        return fg, depth, normals.clamp_(0, 1), render

    def render_textured(self, vertices, texture, uv, background=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain textured re-render (no shading), composited over an optional background.

        Used to re-render a photo on a moved mesh: pass the photo as ``texture`` and the vertices' original image
        positions as ``uv``.

        Args:
            vertices: `(N, V, 3)` image-space vertices.
            texture: `(3, Ht, Wt)` / `(Ht, Wt, 3)` (or batched `(N, ...)`) uint8 or float [0, 1].
            uv: `(V, 2)` texture pixel coordinates.
            background: optional `(N, H, W, 3)` or `(H, W, 3)` uint8 or float [0, 1]; black when None.

        Returns:
            ``(images (N, H, W, 3) float [0, 1], mask (N, H, W) bool)``.
        """
        verts = self._vertices(vertices)
        fg = self._foreground(verts)
        colors = self._sample(texture, interpolate_foreground(fg, self.faces, self._uv(uv, verts.shape[1])), fg)
        n, h, w = fg.shape
        if background is None:
            images = torch.zeros((n * h * w, 3), dtype=colors.dtype, device=self.device)
        else:
            bg = torch.as_tensor(np.asarray(background) if not isinstance(background, torch.Tensor) else background,
                                 device=self.device)
            bg = bg.to(colors.dtype) / 255.0 if bg.dtype == torch.uint8 else bg.to(colors.dtype)
            if bg.ndim == 3:
                bg = bg.unsqueeze(0)
            if bg.ndim != 4 or tuple(bg.shape[1:]) != (h, w, 3) or bg.shape[0] not in (1, n):
                raise ValueError(f"background must have shape (N, {h}, {w}, 3) or ({h}, {w}, 3), "
                                 f"got {tuple(bg.shape)}.")
            images = bg.expand(n, h, w, 3).reshape(n * h * w, 3).clone()
        images.index_copy_(0, fg.pixel_index, colors.clamp(0, 1))
        return images.view(n, h, w, 3), fg.mask()
