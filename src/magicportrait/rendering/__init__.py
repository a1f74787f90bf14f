"""Rendering: a vectorised pure-PyTorch rasteriser and MagicPortrait's guidance maps (depth, normal, render).

``renderer`` draws the maps of a mesh; ``appearance`` estimates the render map's albedo and light from a portrait;
``guidance`` renders an aligned head track's maps as the source asks; ``texture_transfer`` re-renders a photo on a
moved mesh (the geometric generator).

Vertices are in image space (x right, y down, z into the scene; pixels) and projected orthographically.
"""

from .appearance import (
    AppearanceConfig,
    estimate_appearance,
    face_oval_loop,
    face_region_mask,
    fit_texture_appearance,
    polygon_mask,
    source_appearance,
)
from .guidance import AppearanceRenderer, RenderedGuidance, guidance_renderer, render_guidance
from .rasterizer import (
    AREA_EPS,
    EDGE_EPS,
    MAX_CHUNK,
    MAX_ROWS,
    Foreground,
    Fragments,
    as_foreground,
    interpolate,
    rasterize,
    rasterize_foreground,
)
from .renderer import SKIN_GREY, GuidanceRenderer
from .shading import (
    DEFAULT_SH_LIGHT,
    SH_CONSTANTS,
    as_texture,
    camera_normals,
    depth_map,
    lambertian_shading,
    normal_map,
    sample_texture,
    sh_basis,
    sh_shading,
    shaded_map,
    vertex_normals,
)

__all__ = [
    "AREA_EPS",
    "AppearanceConfig",
    "AppearanceRenderer",
    "DEFAULT_SH_LIGHT",
    "EDGE_EPS",
    "MAX_CHUNK",
    "MAX_ROWS",
    "SH_CONSTANTS",
    "SKIN_GREY",
    "Foreground",
    "Fragments",
    "RenderedGuidance",
    "GuidanceRenderer",
    "as_foreground",
    "as_texture",
    "camera_normals",
    "depth_map",
    "estimate_appearance",
    "face_oval_loop",
    "face_region_mask",
    "fit_texture_appearance",
    "guidance_renderer",
    "interpolate",
    "lambertian_shading",
    "normal_map",
    "polygon_mask",
    "rasterize",
    "rasterize_foreground",
    "render_guidance",
    "sample_texture",
    "shaded_map",
    "source_appearance",
    "sh_basis",
    "sh_shading",
    "vertex_normals",
]
