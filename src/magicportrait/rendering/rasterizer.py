"""Vectorised pure-PyTorch triangle rasteriser (orthographic; vertices already in image space).

Conventions (see :mod:`magicportrait`): x right and y down in pixels, z into the scene in the same units
(smaller z = nearer). Pixel ``(row j, col i)`` has its centre at ``(i + 0.5, j + 0.5)``. The projection is
orthographic, like the official MagicPortrait release (PyTorch3D, blur 0, one face per pixel, no perspective
correction), so barycentrics are the screen-space ones.

Coverage rule: a pixel is covered by a triangle when its centre lies inside the triangle or within
:data:`EDGE_EPS` pixels outside one of its edges (an inclusive test: two triangles that share an edge leave no
crack, and a pixel centre exactly on the shared edge is claimed by both; the z-buffer then picks one).
Zero-area (and non-finite) triangles are ignored; triangles are clipped to the image; both windings are drawn
unless ``cull_backfaces``. The z-buffer keeps the smallest z; equal depths go to the larger face index.

Algorithm (no Python loop over triangles or pixels; the batch is one pass):

1. per triangle (all frames at once, float64): signed area, edge lines as unit-normal signed distances, the
   z plane, and the pixel bounding box clipped to the image;
2. per scan line of every bounding box: the exact span of pixel centres inside the three half-planes
   (so candidates are the covered pixels themselves, not the whole box);
3. the spans are expanded with ``repeat_interleave`` (no padding to the largest triangle) in chunks of at most
   ``max_chunk`` pixels (bounded memory for huge triangles / images); each candidate gets a 64-bit key
   ``(order-preserving bits of float32 z) << 32 | (F - 1 - face)`` that one ``scatter_reduce('amin')`` per
   chunk reduces into a per-pixel buffer: this is the depth test and the tie-break in one operation;
4. ``pix_to_face`` is decoded in place from the key buffer; for the winning face of each covered pixel the
   barycentrics and depth are evaluated from per-triangle affine coefficients (computed in float64, relative to
   the triangle's bounding-box origin so float32 keeps full precision).

Depth ordering uses float32 resolution (also for float64 input); ``zbuf`` and ``bary`` are in the input dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

EDGE_EPS = 1e-5
"""Tolerance of the inclusive edge test, in pixels (signed distance of a pixel centre to an edge line)."""

AREA_EPS = 1e-10
"""Triangles whose doubled screen area ``|cross(v1 - v0, v2 - v0).z|`` is at most this (pixels^2) are skipped."""

MAX_CHUNK = 1 << 21
"""Default upper bound on candidate pixels processed at once (memory: ~50 bytes per candidate)."""

MAX_ROWS = 1 << 18
"""Default upper bound on scan lines (triangle rows) set up at once (memory: ~200 bytes per row)."""

_EMPTY_KEY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF

__all__ = ["AREA_EPS", "EDGE_EPS", "MAX_CHUNK", "MAX_ROWS", "Foreground", "Fragments", "interpolate", "rasterize",
           "rasterize_foreground"]


@dataclass(frozen=True, eq=False)
class Foreground:
    """The covered pixels of a rasterised batch in compact form (K covered pixels, all frames).

    This is what the shaders work on (they touch only covered pixels); :class:`Fragments` holds the same data as
    full `(N, H, W)` images.

    Attributes:
        shape: (N, H, W).
        pixel_index: `(K,)` int64 ascending flat pixel indices ``n*H*W + j*W + i``.
        frame: `(K,)` int64 batch index ``n`` of each covered pixel.
        face: `(K,)` int64 visible face (index into ``faces``).
        bary: `(K, 3)` barycentric weights of the face's vertices at the pixel centre (>= 0, sum 1).
        zbuf: `(K,)` z of the visible surface at the pixel centre.
    """

    shape: tuple[int, int, int]
    pixel_index: torch.Tensor
    frame: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    zbuf: torch.Tensor

    @property
    def num_pixels(self) -> int:
        return int(self.pixel_index.numel())

    def scatter(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Place `(K, ...)` per-covered-pixel values into an `(N, H, W, ...)` image filled with ``fill``."""
        n, h, w = self.shape
        out = torch.full((n * h * w, *values.shape[1:]), fill, dtype=values.dtype, device=values.device)
        out.index_copy_(0, self.pixel_index, values)
        return out.view(n, h, w, *values.shape[1:])

    def mask(self) -> torch.Tensor:
        """`(N, H, W)` bool, True on covered pixels."""
        n, h, w = self.shape
        out = torch.zeros(n * h * w, dtype=torch.bool, device=self.pixel_index.device)
        return out.index_fill_(0, self.pixel_index, True).view(n, h, w)

    def to_fragments(self) -> Fragments:
        """The same rasterisation as full images."""
        frags = Fragments(pix_to_face=self.scatter(self.face, -1), bary=self.scatter(self.bary),
                          zbuf=self.scatter(self.zbuf, float("inf")))
        object.__setattr__(frags, "_foreground", self)
        return frags


@dataclass(frozen=True, eq=False)
class Fragments:
    """Result of :func:`rasterize` for a batch of N frames of size (H, W) (PyTorch3D-like, one face per pixel).

    Attributes:
        pix_to_face: `(N, H, W)` int64, index into ``faces`` (0..F-1, the same for every frame) of the visible
            face, -1 where no triangle covers the pixel.
        bary: `(N, H, W, 3)` float, screen-space barycentric coordinates of the pixel centre in the visible
            face (weights of its vertices ``faces[f, 0..2]``, >= 0, summing to 1); 0 where empty.
            (Screen-space barycentrics: the projection is orthographic.)
        zbuf: `(N, H, W)` float, z of the visible surface at the pixel centre; +inf where empty.
    """

    pix_to_face: torch.Tensor
    bary: torch.Tensor
    zbuf: torch.Tensor
    _foreground: Foreground | None = field(default=None, init=False, repr=False)

    @property
    def mask(self) -> torch.Tensor:
        """`(N, H, W)` bool, True where some triangle covers the pixel."""
        return self.pix_to_face >= 0

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, H, W)."""
        return tuple(self.pix_to_face.shape)

    def foreground(self) -> Foreground:
        """The covered pixels in compact form (cached)."""
        if self._foreground is None:
            n, h, w = self.pix_to_face.shape
            idx = torch.nonzero(self.pix_to_face.reshape(-1) >= 0).squeeze(1)
            fg = Foreground(shape=(n, h, w), pixel_index=idx, frame=torch.div(idx, h * w, rounding_mode="floor"),
                            face=self.pix_to_face.reshape(-1)[idx], bary=self.bary.reshape(-1, 3)[idx],
                            zbuf=self.zbuf.reshape(-1)[idx])
            object.__setattr__(self, "_foreground", fg)
        return self._foreground


def as_foreground(fragments: Fragments | Foreground) -> Foreground:
    """The compact form of :class:`Fragments` (or a :class:`Foreground` unchanged)."""
    return fragments if isinstance(fragments, Foreground) else fragments.foreground()


def _as_float_tensor(x, device=None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, device=device)
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t


def _empty_foreground(n: int, h: int, w: int, dtype: torch.dtype, device) -> Foreground:
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    return Foreground(shape=(n, h, w), pixel_index=empty, frame=empty, face=empty,
                      bary=torch.zeros((0, 3), dtype=dtype, device=device),
                      zbuf=torch.zeros(0, dtype=dtype, device=device))


def _check_inputs(vertices, faces, image_size):
    verts = _as_float_tensor(vertices)
    if verts.ndim == 2:
        verts = verts.unsqueeze(0)
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"vertices must have shape (N, V, 3), got {tuple(verts.shape)}.")
    faces = torch.as_tensor(np.asarray(faces) if not isinstance(faces, torch.Tensor) else faces)
    faces = faces.to(device=verts.device, dtype=torch.int64)
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}.")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts.shape[1]):
        raise ValueError(f"faces index vertices outside 0..{verts.shape[1] - 1}.")
    h, w = (int(s) for s in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive (H, W), got {image_size}.")
    return verts, faces, h, w


def rasterize(vertices, faces, image_size: tuple[int, int], *, cull_backfaces: bool = False,
              max_chunk: int = MAX_CHUNK, max_rows: int = MAX_ROWS) -> Fragments:
    """Rasterise a batch of triangle meshes sharing one topology.

    Args:
        vertices: `(N, V, 3)` (or `(V, 3)`) float32/float64 tensor or array, image space (x right, y down, z into
            the scene; pixels). Other dtypes are converted to float32.
        faces: `(F, 3)` integer vertex indices.
        image_size: (H, W) in pixels.
        cull_backfaces: skip triangles whose normal ``cross(v1 - v0, v2 - v0)`` has z >= 0 (facing away from the
            camera, which looks along +z).
        max_chunk: at most about this many candidate pixels are processed at once (bounds the memory).
        max_rows: at most about this many triangle scan lines are set up at once (bounds the memory).

    Returns:
        :class:`Fragments` on the device and in the float dtype of ``vertices``.
    """
    return rasterize_foreground(vertices, faces, image_size, cull_backfaces=cull_backfaces,
                                max_chunk=max_chunk, max_rows=max_rows).to_fragments()


def rasterize_foreground(vertices, faces, image_size: tuple[int, int], *, cull_backfaces: bool = False,
                         max_chunk: int = MAX_CHUNK, key_buffer: torch.Tensor | None = None,
                         max_rows: int = MAX_ROWS) -> Foreground:
    """:func:`rasterize`, returning only the covered pixels (:class:`Foreground`; no full-size images).

    ``key_buffer``: optional int64 scratch tensor of at least N*H*W elements (on the vertices' device) that is
    reused for the z-buffer instead of allocating one (its content is overwritten). ``max_rows`` bounds the scan
    lines set up at once (triangles are drawn in groups beyond that).
    """
    verts, faces, h, w = _check_inputs(vertices, faces, image_size)
    dtype, device = verts.dtype, verts.device
    n, num_v = verts.shape[:2]
    num_f = faces.shape[0]
    hw = h * w
    if n == 0 or num_f == 0:
        return _empty_foreground(n, h, w, dtype, device)

    f64 = torch.float64
    eps = EDGE_EPS
    # ---- 1. per-triangle set-up (T = N*F triangles), float64
    tri = verts.to(f64)[:, faces].reshape(n * num_f, 3, 3)  # (T, corner, xyz)
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]  # (T, 3)
    x0, x1, x2 = x.unbind(1)
    y0, y1, y2 = y.unbind(1)
    area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)  # = z of cross(v1-v0, v2-v0)
    valid = torch.isfinite(tri).all(2).all(1) & (area2.abs() > AREA_EPS)
    if cull_backfaces:
        valid &= area2 < 0

    def _pix_range(lo_f, hi_f, size):
        lo = torch.ceil(torch.nan_to_num(lo_f - 0.5 - eps).clamp(-1, size)).long().clamp_min(0)
        hi = torch.floor(torch.nan_to_num(hi_f - 0.5 + eps).clamp(-1, size)).long().clamp_max(size - 1)
        return lo, hi

    i_lo, i_hi = _pix_range(x.amin(1), x.amax(1), w)
    j_lo, j_hi = _pix_range(y.amin(1), y.amax(1), h)
    valid &= (i_hi >= i_lo) & (j_hi >= j_lo)
    tri_ids = torch.nonzero(valid).squeeze(1)
    if tri_ids.numel() == 0:
        return _empty_foreground(n, h, w, dtype, device)
    # from here on only the drawable triangles (index into tri_ids)
    x, y, z, area2 = x[tri_ids], y[tri_ids], z[tri_ids], area2[tri_ids].unsqueeze(1)
    i_lo, i_hi, j_lo, j_hi = i_lo[tri_ids], i_hi[tri_ids], j_lo[tri_ids], j_hi[tri_ids]
    # edge k is opposite corner k, from corner k+1 to corner k+2; E_k(p) = cross(b - a, p - a).z
    order_a, order_b = [1, 2, 0], [2, 0, 1]
    xa, ya, xb, yb = x[:, order_a], y[:, order_a], x[:, order_b], y[:, order_b]
    ex, ey = xb - xa, yb - ya
    ea, eb, ec = -ey, ex, ey * xa - ex * ya  # E_k(p) = ea*px + eb*py + ec; barycentric w_k = E_k / area2
    # signed distance to each edge line, positive towards the inside
    norm = torch.sqrt(ex * ex + ey * ey).clamp_min(1e-300) * torch.sign(area2)
    da, db, dc = ea / norm, eb / norm, ec / norm
    # barycentrics and z as affine functions of the pixel offset (di, dj) from the bounding-box origin pixel
    ox = (i_lo.to(f64) + 0.5).unsqueeze(1)
    oy = (j_lo.to(f64) + 0.5).unsqueeze(1)
    wa, wb = ea / area2, eb / area2
    wc = (ea * ox + eb * oy + ec) / area2  # w_k at the origin pixel centre
    za, zb, zc = (wa * z).sum(1), (wb * z).sum(1), (wc * z).sum(1)

    if key_buffer is not None and key_buffer.dtype == torch.int64 and key_buffer.numel() >= n * hw \
            and key_buffer.device == device:
        keybuf = key_buffer.view(-1)[: n * hw].fill_(_EMPTY_KEY)
    else:
        keybuf = torch.full((n * hw,), _EMPTY_KEY, dtype=torch.int64, device=device)
    max_chunk = max(int(max_chunk), w)
    inf = torch.tensor(float("inf"), dtype=f64, device=device)

    def draw(tris: slice) -> None:
        """Steps 2 and 3 for a group of drawable triangles (all of them, unless there are very many rows)."""
        # ---- 2. scan lines: exact span of covered pixel centres per row (float64)
        num_rows = j_hi[tris] - j_lo[tris] + 1
        row_count = int(num_rows.sum())
        row_tri = torch.repeat_interleave(num_rows, output_size=row_count)
        row_start = torch.cumsum(num_rows, 0) - num_rows
        dj = torch.arange(row_count, device=device) - row_start[row_tri]
        row_tri += tris.start
        yc = (j_lo[row_tri] + dj).to(f64) + 0.5
        ra = da[row_tri]
        rc = db[row_tri] * yc.unsqueeze(1) + dc[row_tri]  # distance = ra * px + rc along the row
        q = (-eps - rc) / torch.where(ra == 0, torch.ones_like(ra), ra)
        x_min = torch.where(ra > 0, q, -inf).amax(1)
        x_max = torch.where(ra < 0, q, inf).amin(1)
        blocked = ((ra == 0) & (rc < -eps)).any(1)
        lo = torch.ceil(torch.nan_to_num((x_min - 0.5).clamp(-1, w))).long()
        hi = torch.floor(torch.nan_to_num((x_max - 0.5).clamp(-1, w))).long()
        lo = torch.maximum(lo, i_lo[row_tri])
        hi = torch.minimum(hi, i_hi[row_tri])
        span = torch.where(blocked, torch.zeros_like(lo), (hi - lo + 1).clamp_min(0))
        keep = torch.nonzero(span).squeeze(1)
        if keep.numel() == 0:
            return
        span, lo, row_tri, dj = span[keep], lo[keep], row_tri[keep], dj[keep]
        global_tri = tri_ids[row_tri]
        frame = torch.div(global_tri, num_f, rounding_mode="floor")
        face = global_tri - frame * num_f
        # per-row tables for the candidate pass
        z_first = (za[row_tri] * (lo - i_lo[row_tri]) + zb[row_tri] * dj + zc[row_tri]).to(torch.float32)
        z_step = za[row_tri].to(torch.float32)
        span_end = torch.cumsum(span, 0)
        span_start = span_end - span
        pix_offset = frame * hw + (j_lo[row_tri] + dj) * w + lo - span_start  # pixel = candidate + offset[row]
        # low 32 bits of the key: 0xFFFFFFFE - face (a depth tie goes to the larger face index)
        low_bits = _LOW32 - 1 - face
        del ra, rc, q, x_min, x_max, blocked, hi, keep, global_tri, frame, face, yc, dj, lo, row_tri

        # ---- 3. candidates in chunks: one scatter_reduce('amin') of (z, face) keys per chunk
        total = int(span_end[-1])
        if total <= max_chunk:
            bounds = [0, span.numel()]
        else:
            cuts = torch.arange(max_chunk, total, max_chunk, device=device, dtype=span_end.dtype)
            bounds = sorted({0, *torch.searchsorted(span_end, cuts).add_(1).tolist(), span.numel()})
        for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
            c0 = int(span_start[r0])
            c1 = int(span_end[r1 - 1])
            rid = torch.repeat_interleave(span[r0:r1], output_size=c1 - c0)
            cand = torch.arange(c0, c1, device=device)
            pix = cand + pix_offset[r0:r1][rid]
            step = (cand - span_start[r0:r1][rid]).to(torch.float32)
            zc32 = torch.addcmul(z_first[r0:r1][rid], z_step[r0:r1][rid], step)
            bits = zc32.view(torch.int32)
            bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # order-preserving: float compare == int compare
            key = (bits.to(torch.int64) << 32) | low_bits[r0:r1][rid]
            keybuf.scatter_reduce_(0, pix, key, reduce="amin")
            del rid, cand, pix, step, zc32, bits, key

    # the row stage is bounded too: groups of triangles with at most ~max_rows scan lines
    rows_end = torch.cumsum(j_hi - j_lo + 1, 0)
    total_rows = int(rows_end[-1])
    if total_rows <= max_rows:
        draw(slice(0, tri_ids.numel()))
    else:
        cuts = torch.arange(max_rows, total_rows, max_rows, device=device, dtype=rows_end.dtype)
        bounds = sorted({0, *torch.searchsorted(rows_end, cuts).add_(1).tolist(), tri_ids.numel()})
        for t0, t1 in zip(bounds[:-1], bounds[1:], strict=True):
            draw(slice(t0, t1))

    # ---- 4. winners: decode the face, then barycentrics and depth of the covered pixels
    pixel_index = torch.nonzero(keybuf != _EMPTY_KEY).squeeze(1)
    win_face = (_LOW32 - 1) - (keybuf[pixel_index] & _LOW32)
    win_frame = torch.div(pixel_index, hw, rounding_mode="floor")
    rem = pixel_index - win_frame * hw
    row = torch.div(rem, w, rounding_mode="floor")
    col = rem - row * w
    # drawable-triangle index of each winner: inverse map of tri_ids
    inverse = torch.full((n * num_f,), -1, dtype=torch.int64, device=device)
    inverse[tri_ids] = torch.arange(tri_ids.numel(), device=device)
    t = inverse[win_frame * num_f + win_face]
    table = torch.stack([wa[:, 0], wb[:, 0], wc[:, 0], wa[:, 1], wb[:, 1], wc[:, 1], za, zb, zc,
                         i_lo.to(f64), j_lo.to(f64)], dim=1).to(dtype)  # (T', 11), local (di, dj) coordinates
    g = table.index_select(0, t)  # (K, 11)
    di = col.to(dtype) - g[:, 9]
    dj = row.to(dtype) - g[:, 10]
    b0 = torch.addcmul(torch.addcmul(g[:, 2], g[:, 0], di), g[:, 1], dj)
    b1 = torch.addcmul(torch.addcmul(g[:, 5], g[:, 3], di), g[:, 4], dj)
    depth = torch.addcmul(torch.addcmul(g[:, 8], g[:, 6], di), g[:, 7], dj)
    # >= -EDGE_EPS / (triangle height) before the clamp, so the sum stays 1 within ~1e-5 (not renormalised)
    bary = torch.stack([b0, b1, 1 - b0 - b1], 1).clamp_min_(0)
    return Foreground(shape=(n, h, w), pixel_index=pixel_index, frame=win_frame, face=win_face, bary=bary,
                      zbuf=depth)


def interpolate(fragments: Fragments | Foreground, faces, vertex_attributes) -> torch.Tensor:
    """Interpolate per-vertex attributes with the fragments' barycentrics.

    Args:
        fragments: from :func:`rasterize` (or :func:`rasterize_foreground`).
        faces: `(F, 3)` the faces that were rasterised.
        vertex_attributes: `(N, V, C)` (or `(V, C)`, shared by all frames) tensor or array.

    Returns:
        `(N, H, W, C)` in the attributes' float dtype (float32 for non-float input); 0 on empty pixels.
    """
    fg = as_foreground(fragments)
    attrs = _as_float_tensor(vertex_attributes, device=fg.pixel_index.device)
    return fg.scatter(interpolate_foreground(fg, faces, attrs))


def interpolate_foreground(fragments: Fragments | Foreground, faces, vertex_attributes: torch.Tensor) -> torch.Tensor:
    """Like :func:`interpolate` but only at the covered pixels: `(K, C)` in ``Foreground`` order."""
    fg = as_foreground(fragments)
    attrs = vertex_attributes
    faces = torch.as_tensor(faces, device=fg.pixel_index.device).long()
    if attrs.ndim == 3 and attrs.shape[0] == 1:
        attrs = attrs[0]
    if attrs.ndim == 2:
        rows = faces.index_select(0, fg.face).view(-1)
    elif attrs.ndim == 3:
        if attrs.shape[0] != fg.shape[0]:
            raise ValueError(f"vertex_attributes batch {attrs.shape[0]} != fragments batch {fg.shape[0]}.")
        rows = (faces.index_select(0, fg.face) + (fg.frame * attrs.shape[1]).unsqueeze(1)).view(-1)
        attrs = attrs.reshape(-1, attrs.shape[-1])
    else:
        raise ValueError(f"vertex_attributes must have shape (N, V, C) or (V, C), got {tuple(attrs.shape)}.")
    vals = attrs.index_select(0, rows).view(-1, 3, attrs.shape[-1])  # (K, corner, C)
    bary = fg.bary.to(vals.dtype)
    out = vals[:, 0] * bary[:, 0:1]
    out.addcmul_(vals[:, 1], bary[:, 1:2])
    return out.addcmul_(vals[:, 2], bary[:, 2:3])
