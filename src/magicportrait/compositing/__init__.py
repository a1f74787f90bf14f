"""Compositing for the geometric reenactment backend: the face re-rendered on the moved mesh is blended into the
source crop (a feathered mask, a low-frequency colour match on a band inside the mask's edge, and a multi-band
Laplacian blend), everything outside the face (hair, ears, neck, background) is moved by a smooth 2D warp driven by
the head's motion so nothing tears, and results made on the face crop are pasted back into the full-size frame,
touching only the pixels that changed. numpy + OpenCV only, a few ms per 512x512 frame on one CPU core.
"""

from magicportrait.compositing.blend import feather_mask, laplacian_blend, match_colour
from magicportrait.compositing.paste_back import PasteBack
from magicportrait.compositing.warp import head_motion_maps, similarity_2d

__all__ = ["PasteBack", "feather_mask", "head_motion_maps", "laplacian_blend", "match_colour", "similarity_2d"]
