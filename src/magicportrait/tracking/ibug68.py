"""The 68 iBUG / 300-W landmarks (the set FAN detects and DECA's crop is defined on) from MediaPipe's 478 points.

A fixed sparse linear map: every iBUG point is ``(1 - t) * p[a] + t * p[b]`` for two consecutive points ``a, b`` of
a MediaPipe contour. We derived it ourselves (FAN is not available) from MediaPipe's own contour lists
(``FACEMESH_*`` connections) and its canonical face, seen from the front (x, y), by sampling each iBUG contour at
equal arc length along the matching MediaPipe contour, as the 300-W annotation rules place the points:

- jaw 0-16: the face oval's lower half, from its widest point on the image left through the chin (the lowest
  oval point) to its widest point on the image right, 17 points;
- eyebrows 17-21 and 22-26: the upper edge of each ``FACEMESH_*_EYEBROW``, 5 points each, left to right;
- nose bridge 27-30: the nose ridge of ``FACEMESH_NOSE`` from between the eyes (168) to the tip (4), 4 points;
  lower nose 31-35: its alar-base chain 98-97-2-326-327, left to right;
- eyes 36-41 and 42-47: each eye's loop; its corners at the loop's extreme x, two points on the upper lid at 1/3
  and 2/3 of its length (left to right) and two on the lower lid (right to left);
- lips 48-59: ``FACEMESH_LIPS``' outer loop, corners at its extreme x, 5 points on the upper lip, 5 on the lower;
  60-67: its inner loop, 3 and 3.

"Left" is the image's left (the subject's right). DECA's crop only uses the box around the 68 points, so what
matters most are the jaw's ends and chin and the brows' tops; the map is continuous in the MediaPipe points.
"""

from __future__ import annotations

from functools import cache

import numpy as np

NUM_IBUG = 68
NOSE_RIDGE = (168, 6, 197, 195, 5, 4)
LOWER_NOSE = (98, 97, 2, 326, 327)


def ibug68_from_mediapipe(landmarks: np.ndarray) -> np.ndarray:
    """`(..., 478, D)` MediaPipe landmarks -> `(..., 68, D)` iBUG landmarks (any D, e.g. x, y or x, y, z)."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    return np.einsum("kn,...nd->...kd", ibug68_weights(), landmarks)


@cache
def ibug68_weights() -> np.ndarray:
    """`(68, 478)`: each row's two non-zero weights sum to 1 (read-only, shared)."""
    from magicportrait.heads.mediapipe_mesh import load_canonical_face
    from magicportrait.heads.mediapipe_topology import mediapipe_connections

    frontal = load_canonical_face()[0][:, :2]  # model frame: x to the image right, y down
    connections = mediapipe_connections()
    brows = sorted((_upper_chain(connections[name], frontal) for name in ("FACEMESH_RIGHT_EYEBROW",
                                                                         "FACEMESH_LEFT_EYEBROW")),
                   key=lambda chain: frontal[chain, 0].mean())
    eyes = sorted((_loop(connections[name]) for name in ("FACEMESH_RIGHT_EYE", "FACEMESH_LEFT_EYE")),
                  key=lambda loop: frontal[loop, 0].mean())
    outer_lips, inner_lips = sorted(_components(connections["FACEMESH_LIPS"]),
                                    key=lambda loop: -np.ptp(frontal[loop, 0]))
    samples = (_along(_jaw(frontal, _loop(connections["FACEMESH_FACE_OVAL"])), 17, frontal)
               + [sample for chain in brows for sample in _along(chain, 5, frontal)]
               + _along(np.array(NOSE_RIDGE), 4, frontal) + _along(np.array(LOWER_NOSE), 5, frontal)
               + [sample for loop in eyes for sample in _around(loop, 4, frontal)]
               + _around(outer_lips, 7, frontal) + _around(inner_lips, 5, frontal))
    weights = np.zeros((NUM_IBUG, len(frontal)))
    for row, (a, b, t) in enumerate(samples):
        weights[row, a] += 1.0 - t
        weights[row, b] += t
    weights.setflags(write=False)
    return weights


def _components(edges) -> list[np.ndarray]:
    """Each connected component of undirected ``edges`` as an ordered vertex path or cycle."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(int(a), []).append(int(b))
        neighbours.setdefault(int(b), []).append(int(a))
    unvisited, components = set(neighbours), []
    while unvisited:
        ends = [v for v in unvisited if len(neighbours[v]) == 1]
        start = min(ends) if ends else min(unvisited)
        order, previous = [start], None
        while True:
            following = [n for n in neighbours[order[-1]] if n != previous and n in unvisited and n not in order]
            if not following:
                break
            previous = order[-1]
            order.append(following[0])
        unvisited -= set(order)
        components.append(np.array(order))
    return components


def _loop(edges) -> np.ndarray:
    (loop,) = _components(edges)
    return loop


def _upper_chain(edges, frontal: np.ndarray) -> np.ndarray:
    """The brow's upper edge (of its two chains, the one higher in the image), left to right."""
    chain = min(_components(edges), key=lambda path: frontal[path, 1].mean())
    return chain if frontal[chain[0], 0] < frontal[chain[-1], 0] else chain[::-1]


def _jaw(frontal: np.ndarray, oval: np.ndarray) -> np.ndarray:
    """The oval from its leftmost point through the chin to its rightmost point."""
    oval = np.roll(oval, -int(np.argmin(frontal[oval, 0])))
    right = int(np.argmax(frontal[oval, 0]))
    one_way, other_way = oval[:right + 1], np.concatenate([oval[:1], oval[right:][::-1]])
    return max((one_way, other_way), key=lambda path: frontal[path, 1].max())


def _arc_splits(loop: np.ndarray, frontal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A closed contour cut at its extreme x into the upper and the lower arc, both left to right."""
    loop = np.roll(loop, -int(np.argmin(frontal[loop, 0])))
    right = int(np.argmax(frontal[loop, 0]))
    first, second = loop[:right + 1], np.concatenate([loop[right:], loop[:1]])[::-1]
    return (first, second) if frontal[first, 1].mean() < frontal[second, 1].mean() else (second, first)


def _around(loop: np.ndarray, per_arc: int, frontal: np.ndarray) -> list[tuple[int, int, float]]:
    """iBUG's order around an eye or a lip: the left corner, the upper arc to the right corner, back below."""
    upper, lower = _arc_splits(loop, frontal)
    return _along(upper, per_arc, frontal) + _along(lower, per_arc, frontal)[::-1][1:-1]


def _along(path: np.ndarray, count: int, frontal: np.ndarray) -> list[tuple[int, int, float]]:
    """``count`` points at equal arc length along a vertex path (its two ends included), as (a, b, t)."""
    steps = np.linalg.norm(np.diff(frontal[path], axis=0), axis=1)
    lengths = np.concatenate([[0.0], np.cumsum(steps)])
    samples = []
    for target in np.linspace(0.0, lengths[-1], count):
        segment = min(int(np.searchsorted(lengths, target, side="right")) - 1, len(steps) - 1)
        t = (target - lengths[segment]) / steps[segment] if steps[segment] > 0 else 0.0
        samples.append((int(path[segment]), int(path[segment + 1]), float(np.clip(t, 0.0, 1.0))))
    return samples
