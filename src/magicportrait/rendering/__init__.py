"""Rendering: a vectorised pure-PyTorch rasteriser and MagicPortrait's guidance maps (depth, normal, render).

Vertices are in image space (x right, y down, z into the scene; pixels) and projected orthographically.
"""

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
from .renderer import SKIN_GREY, GuidanceMaps, GuidanceRenderer
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
    "DEFAULT_SH_LIGHT",
    "EDGE_EPS",
    "MAX_CHUNK",
    "MAX_ROWS",
    "SH_CONSTANTS",
    "SKIN_GREY",
    "Foreground",
    "Fragments",
    "GuidanceMaps",
    "GuidanceRenderer",
    "as_foreground",
    "as_texture",
    "camera_normals",
    "depth_map",
    "interpolate",
    "lambertian_shading",
    "normal_map",
    "rasterize",
    "rasterize_foreground",
    "sample_texture",
    "shaded_map",
    "sh_basis",
    "sh_shading",
    "vertex_normals",
]
