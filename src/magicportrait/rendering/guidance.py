"""The guidance stage's renderers: the three maps of an aligned head, coloured as the source asks.

:class:`AppearanceRenderer` renders with a :class:`~magicportrait.types.RenderAppearance` (FLAME: estimated
albedo + SH light, or a UV texture); its depth and normal maps are those of :class:`~.renderer.GuidanceRenderer`
for the same (welded) mesh, and a UV texture is looked up through per-corner uv faces on the welded mesh's
rasterisation, so seams get the welded normals. :func:`render_guidance` picks the renderer for a
:class:`~magicportrait.types.SourceFace` and streams the maps of a head track chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from magicportrait.errors import InputError
from magicportrait.heads import HeadModel
from magicportrait.types import GUIDANCE_NAMES, GuidanceMaps, HeadTrack, RenderAppearance, SourceFace, quantize_unit

from .rasterizer import interpolate_foreground, rasterize_foreground
from .renderer import GuidanceRenderer
from .shading import (
    as_texture,
    camera_normals_foreground,
    depth_foreground,
    sample_texture_foreground,
    shade_foreground,
)


class AppearanceRenderer:
    """GuidanceRenderer wrapper that applies a RenderAppearance (handles unwelding/normals).

    Depth and normal maps are exactly :class:`~.renderer.GuidanceRenderer`'s for the welded mesh; the render map
    uses the appearance's light and its vertex albedo, or its texture looked up through ``uv_faces`` on the same
    rasterisation (so normals stay welded across UV seams).
    """

    def __init__(self, faces, appearance: RenderAppearance, image_size: tuple[int, int] = (512, 512),
                 device: str | torch.device = "cpu") -> None:
        self.appearance = appearance
        self.renderer = GuidanceRenderer(faces, image_size=image_size, sh_light=appearance.sh_light, device=device)
        self.device = self.renderer.device
        self._texture = self._uv = self._uv_faces = None
        if appearance.textured:
            if appearance.uv_faces.shape != tuple(self.renderer.faces.shape):
                raise InputError(f"the appearance's uv_faces {appearance.uv_faces.shape} do not match the mesh's "
                                 f"faces {tuple(self.renderer.faces.shape)}.")
            if appearance.uv_faces.min() < 0 or appearance.uv_faces.max() >= len(appearance.uv):
                raise InputError("the appearance's uv_faces index outside its uv.")
            self._texture = as_texture(appearance.texture, device=self.device)
            self._uv = torch.as_tensor(appearance.uv, device=self.device)
            self._uv_faces = torch.as_tensor(appearance.uv_faces, device=self.device)

    def _vertices(self, vertices) -> torch.Tensor:
        verts = torch.as_tensor(np.asarray(vertices) if not isinstance(vertices, torch.Tensor) else vertices,
                                device=self.device).to(torch.float32)
        verts = verts.unsqueeze(0) if verts.ndim == 2 else verts
        if verts.ndim != 3 or verts.shape[-1] != 3:
            raise ValueError(f"vertices must have shape (N, V, 3), got {tuple(verts.shape)}.")
        albedo = self.appearance.vertex_albedo
        if not self.appearance.textured and albedo is not None and albedo.shape[0] != verts.shape[1]:
            raise ValueError(f"the appearance has {albedo.shape[0]} vertex albedos, the mesh has {verts.shape[1]} "
                             "vertices.")
        return verts

    def _textured_foreground(self, verts: torch.Tensor):
        """Foreground and `(K,)` depth, `(K, 3)` clamped normal and `(K, 3)` render of the covered pixels."""
        faces = self.renderer.faces
        fg = rasterize_foreground(verts, faces, self.renderer.image_size, cull_backfaces=self.renderer.cull_backfaces)
        depth = depth_foreground(fg, verts)
        normals = camera_normals_foreground(fg, verts, faces)
        uv = interpolate_foreground(fg, self._uv_faces, self._uv)
        albedo = sample_texture_foreground(self._texture, uv, fg.frame).to(normals.dtype)
        render = shade_foreground(normals, albedo, self.renderer.sh_light, fg.frame)
        return fg, depth, normals.clamp_(0, 1), render

    def render(self, vertices) -> GuidanceMaps:
        """Depth, normal and render maps of `(N, V, 3)` image-space vertices (see GuidanceRenderer.render)."""
        verts = self._vertices(vertices)
        if not self.appearance.textured:
            return self.renderer.render(verts, vertex_colors=self.appearance.vertex_albedo)
        fg, depth, normal, render = self._textured_foreground(verts)
        return GuidanceMaps(depth=fg.scatter(depth), normal=fg.scatter(normal), render=fg.scatter(render),
                            mask=fg.mask())

    def render_uint8(self, vertices) -> dict[str, np.ndarray]:
        """``{'depth', 'normal', 'render'}`` as `(N, H, W, 3)` uint8, like GuidanceRenderer.render_uint8."""
        verts = self._vertices(vertices)
        if not self.appearance.textured:
            return self.renderer.render_uint8(verts, vertex_colors=self.appearance.vertex_albedo)
        fg, depth, normal, render = self._textured_foreground(verts)
        maps = {"depth": depth[:, None].expand(-1, 3), "normal": normal, "render": render}
        return {name: fg.scatter(quantize_unit(values)).cpu().numpy() for name, values in maps.items()}


def guidance_renderer(head_model: HeadModel, source: SourceFace, device: str | torch.device = "cpu"):
    """The renderer of ``source``'s guidance maps and its colouring arguments.

    With an appearance (FLAME) the render map uses its albedo and SH light; the open geometry's vertices are the
    landmarks, so the source crop itself is their texture.
    """
    size = source.size
    if source.appearance is not None:
        return AppearanceRenderer(head_model.faces, source.appearance, image_size=(size, size), device=device), {}
    renderer = GuidanceRenderer(head_model.faces, image_size=(size, size), device=device)
    return renderer, {"texture": source.crop, "uv": source.track.landmarks[0, :, :2]}


def render_guidance(head_model: HeadModel, source: SourceFace, head: HeadTrack, chunk_size: int = 4,
                    device: str | torch.device = "cpu") -> Iterator[dict[str, np.ndarray]]:
    """Yield dicts of `(n, size, size, 3)` uint8 maps (:data:`~magicportrait.types.GUIDANCE_NAMES`), chunk by chunk,
    of ``head``'s frames (a head track in ``source``'s crop space)."""
    renderer, colouring = guidance_renderer(head_model, source, device)
    for start in range(0, head.num_frames, chunk_size):
        chunk = head.select(slice(start, start + chunk_size))
        yield renderer.render_uint8(head_model.posed_vertices(chunk), **colouring)


class RenderedGuidance:
    """Random access to the guidance maps of a head track, rendered on demand (nothing written to disk).

    Frames are rendered in the same fixed chunks as :func:`render_guidance` (``chunk_size`` frames from frame 0),
    so every frame's maps are bit for bit those that ``guide`` writes to its PNGs. The last few chunks are kept, so
    the diffusion generator, which reads a window's frames once per map, renders each window once per step.
    """

    def __init__(self, head_model: HeadModel, source: SourceFace, head: HeadTrack, chunk_size: int = 4,
                 device: str | torch.device = "cpu", cached_frames: int = 32) -> None:
        self.head_model, self.head, self.chunk_size = head_model, head, chunk_size
        self.renderer, self.colouring = guidance_renderer(head_model, source, device)
        self.max_chunks = max(2, -(-cached_frames // chunk_size))
        self._chunks: dict[int, dict[str, np.ndarray]] = {}
        self.num_frames = head.num_frames

    def _chunk(self, number: int) -> dict[str, np.ndarray]:
        if number in self._chunks:
            self._chunks[number] = self._chunks.pop(number)  # most recently used last
            return self._chunks[number]
        start = number * self.chunk_size
        frames = self.head.select(slice(start, start + self.chunk_size))
        maps = self.renderer.render_uint8(self.head_model.posed_vertices(frames), **self.colouring)
        self._chunks[number] = maps
        while len(self._chunks) > self.max_chunks:
            self._chunks.pop(next(iter(self._chunks)))
        return maps

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """uint8 frames ``start..stop-1`` of map ``name``, `(stop - start, H, W, 3)`."""
        if not 0 <= start <= stop <= self.num_frames:
            raise IndexError(f"frames {start}..{stop - 1} outside 0..{self.num_frames - 1}")
        parts = []
        for number in range(start // self.chunk_size, -(-stop // self.chunk_size)):
            first = number * self.chunk_size
            parts.append(self._chunk(number)[name][max(start - first, 0):stop - first])
        return np.concatenate(parts)

    def frame(self, index: int) -> list[np.ndarray]:
        """The maps of one frame, in :data:`~magicportrait.types.GUIDANCE_NAMES` order."""
        return [self.read(name, index, index + 1)[0] for name in GUIDANCE_NAMES]

    def loaders(self) -> dict[str, object]:
        """map name -> ``loader(start, stop)``, as the diffusion generator reads guidance."""
        return {name: (lambda start, stop, name=name: self.read(name, start, stop)) for name in GUIDANCE_NAMES}
