"""Compositing for the geometric reenactment backend: the face re-rendered on the moved mesh is blended into the
source crop (a feathered mask, a low-frequency colour match on a band inside the mask's edge, and a multi-band
Laplacian blend); outside the face the head (hair, ears) moves rigidly with the head, as a 3D turn with a depth per
pixel (:class:`DepthMotion`: the face slides in front of the hair) or as the face's 2D similarity, the person's
warp fading smoothly to the still body, over a still background (what the head uncovers filled from around it);
results made on the face crop are pasted back into the full-size frame, touching only the pixels that changed.
numpy + OpenCV only, a few ms per 512x512 frame on one CPU core.
"""

from magicportrait.compositing.blend import feather_mask, laplacian_blend, match_colour
from magicportrait.compositing.fill import fill_from
from magicportrait.compositing.head_layers import HeadLayers, head_layers, person_weights
from magicportrait.compositing.head_motion import DepthMotion, head_depth
from magicportrait.compositing.paste_back import PasteBack
from magicportrait.compositing.warp import HeadFrame, head_follow, head_weight, rigid_head_maps, similarity_2d

__all__ = ["DepthMotion", "HeadFrame", "HeadLayers", "PasteBack", "feather_mask", "fill_from", "head_depth",
           "head_follow", "head_layers", "head_weight", "laplacian_blend", "match_colour", "person_weights",
           "rigid_head_maps", "similarity_2d"]
