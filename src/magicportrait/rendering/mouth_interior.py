"""The inside of an opening mouth where the portrait shows none: a shaded cavity with a teeth and tongue hint.

A closed-mouth portrait has no teeth to show when the driving mouth opens. A flat dark fill reads as a hole; a real
mouth is lit near the lips and dark deeper in, shows a band of upper teeth under the upper lip and the tongue low
in the back. These are drawn procedurally in mouth coordinates carried by the vertices of the mouth opening:
``side`` from -1 (one corner) to 1 (the other) and ``lower`` from 0 on the upper lip to 1 on the lower lip, with
the opening's height in pixels, so the picture scales with the mouth and follows it as it turns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MouthInterior", "TEETH_HEIGHT"]

TEETH_HEIGHT = 0.1
"""Height of the upper-teeth band below the upper lip, as a fraction of the mouth's width (at most half the
opening)."""

TEETH_COLOUR = (0.86, 0.83, 0.76)
"""Teeth in the light of a face of median skin luminance TEETH_REFERENCE_LUMINANCE (scaled with the face's)."""
TEETH_REFERENCE_LUMINANCE = 0.5
CAVITY_RIM, CAVITY_CORE = 1.7, 0.35
"""The cavity's colour next to the lips and deep inside, as multiples of the given cavity colour."""
TONGUE = (2.6, 1.5, 1.5)
"""The tongue's colour as a multiple of the cavity colour (redder and lighter than the cavity)."""


def _smoothstep(edge0: float | torch.Tensor, edge1: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """0 at ``edge0``, 1 at ``edge1`` (either order), smooth in between."""
    t = ((x - edge0) / (edge1 - edge0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _boundary_walk(faces: np.ndarray) -> np.ndarray:
    """The vertices of the outer boundary of a strip of triangles in walking order (any winding)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    neighbours: dict[int, list[int]] = {}
    for a, b in unique[counts == 1].tolist():
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    start = min(neighbours)
    loop, previous, vertex = [start], -1, start
    while True:
        following = [n for n in neighbours[vertex] if n != previous]
        if not following or following[0] == start:
            break
        previous, vertex = vertex, following[0]
        loop.append(vertex)
        if len(loop) > len(neighbours):
            raise ValueError("The mouth's triangles do not form one strip.")
    return np.array(loop, np.int64)


@dataclass
class MouthInterior:
    """Mouth coordinates of the opening's vertices and the colours of the procedural interior.

    Attributes:
        faces: `(M, 3)` the triangles across the opening.
        side: `(V,)` -1 .. 1 from one mouth corner to the other (only the opening's vertices matter).
        lower: `(V,)` 0 on the upper lip, 1 on the lower lip, 0.5 at the corners.
        corners: the two corner vertices.
        cavity: `(3,)` RGB in [0, 1] of the cavity (lit as CAVITY_RIM near the lips, CAVITY_CORE inside).
        teeth: `(3,)` RGB in [0, 1] of the teeth hint.
    """

    faces: torch.Tensor
    side: torch.Tensor
    lower: torch.Tensor
    corners: tuple[int, int]
    cavity: torch.Tensor
    teeth: torch.Tensor

    @classmethod
    def from_faces(cls, faces: torch.Tensor, template_vertices: np.ndarray, cavity_colour,
                   skin_colour) -> MouthInterior:
        """From the opening's triangles and a shape of the mesh whose lips do not touch (model frame, y down): the
        corners are the opening's left- and rightmost vertices, the upper lip the higher of the two arcs of its
        boundary between them."""
        device = faces.device
        rest = np.asarray(template_vertices, np.float64)
        loop = _boundary_walk(faces.cpu().numpy())
        start, end = sorted((int(np.argmin(rest[loop, 0])), int(np.argmax(rest[loop, 0]))))
        arcs = loop[start + 1:end], np.concatenate([loop[end + 1:], loop[:start]])
        first, second = int(loop[start]), int(loop[end])
        if rest[first, 0] > rest[second, 0]:
            first, second = second, first
        a, b = rest[first, :2], rest[second, :2]
        side = np.zeros(len(rest), np.float32)
        lower = np.zeros(len(rest), np.float32)
        span = b - a
        side[loop] = 2 * ((rest[loop, :2] - a) @ span) / max(float(span @ span), 1e-12) - 1
        upper_arc, lower_arc = sorted(arcs, key=lambda arc: rest[arc, 1].mean() if len(arc) else 0.0)
        lower[lower_arc] = 1.0
        lower[[first, second]] = 0.5
        luminance = float(np.dot(np.asarray(skin_colour, np.float64), [0.299, 0.587, 0.114]))
        teeth = np.asarray(TEETH_COLOUR) * np.clip(luminance / TEETH_REFERENCE_LUMINANCE, 0.6, 1.0)
        return cls(faces=faces, side=torch.as_tensor(side, device=device),
                   lower=torch.as_tensor(lower, device=device), corners=(first, second),
                   cavity=torch.as_tensor(np.asarray(cavity_colour, np.float32), device=device),
                   teeth=torch.as_tensor(teeth.astype(np.float32), device=device))

    def openings(self, verts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(N, V)` the opening's height in pixels at each of its vertices and `(N,)` the mouth's width."""
        lower = self.lower[self.faces]  # (M, 3)
        upper_weight, lower_weight = (lower <= 0.5).float(), (lower >= 0.5).float()
        corners = verts[:, self.faces, :2]  # (N, M, 3, 2)

        def mean(weight: torch.Tensor) -> torch.Tensor:
            return (corners * weight[None, :, :, None]).sum(2) / weight.sum(1).clamp_min(1)[None, :, None]

        height = (mean(lower_weight) - mean(upper_weight)).norm(dim=-1)  # (N, M)
        per_vertex = verts.new_zeros(verts.shape[:2])
        count = verts.new_zeros(verts.shape[1])
        index = self.faces.reshape(-1)
        per_vertex.index_add_(1, index, height.repeat_interleave(3, dim=1))
        count.index_add_(0, index, torch.ones_like(index, dtype=verts.dtype))
        width = (verts[:, self.corners[1], :2] - verts[:, self.corners[0], :2]).norm(dim=-1)
        return per_vertex / count.clamp_min(1), width

    def colours(self, corners: torch.Tensor, bary: torch.Tensor, height: torch.Tensor,
                width: torch.Tensor) -> torch.Tensor:
        """`(K, 3)` interior colours of mouth pixels on ``corners`` `(K, 3)` at ``bary``; ``height`` `(K,)` the
        opening there in pixels, ``width`` `(K,)` the mouth's width."""
        side = (self.side[corners] * bary).sum(1)
        lower = (self.lower[corners] * bary).sum(1)
        below_upper, above_lower = lower * height, (1 - lower) * height  # pixels from each lip
        glow = torch.exp(-torch.minimum(below_upper, above_lower) / (0.25 * height + 0.5))
        rim, core = self.cavity * CAVITY_RIM, self.cavity * CAVITY_CORE
        colour = (core + (rim - core) * glow[:, None]) * (1 - 0.5 * side[:, None] ** 2)
        # the tongue: a soft ellipse resting on the lower lip, across the middle of the mouth
        radius = (side / 0.65) ** 2 + (above_lower / (0.5 * height + 1e-3)) ** 2
        tongue = 0.85 * _smoothstep(1.0, 0.55, radius)
        tongue_colour = self.cavity * torch.as_tensor(TONGUE, device=colour.device) * (0.6 + 0.4 * glow[:, None])
        colour = colour + tongue[:, None] * (tongue_colour - colour)
        # the upper teeth: a band under the upper lip, fading toward the corners and shadowed by the lip
        band = torch.minimum(TEETH_HEIGHT * width, 0.5 * height)
        teeth = _smoothstep(band + 1.25, band - 1.25, below_upper) * _smoothstep(0.8, 0.4, side.abs())
        shade = (0.55 + 0.45 * (1 - side ** 2)) * (1 - 0.4 * torch.exp(-below_upper / 1.5))
        colour = colour + teeth[:, None] * (self.teeth * shade[:, None] - colour)
        return colour
