"""Triangles and landmark groups of MediaPipe's face mesh, derived from the edges the package ships.

``FACEMESH_TESSELATION`` lists the 1322 undirected edges of the 468-point mesh (each triangle's three edges).
Every triangle is a 3-clique of that edge graph; a few 3-cliques are not triangles (three edges borrowed from
three neighbouring triangles). On this manifold mesh an edge borders at most two triangles, so the spurious
cliques are exactly those whose three edges each appear in three cliques.
"""

from __future__ import annotations

import collections
import itertools
from functools import lru_cache

import numpy as np

from magicportrait.errors import DependencyError

NUM_MESH_POINTS = 468
IRIS_POINTS = tuple(range(468, 478))


def mediapipe_connections() -> dict[str, frozenset]:
    try:
        from mediapipe.python.solutions import face_mesh_connections as connections
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DependencyError(
            "mediapipe is not installed. Run: pip install --no-deps mediapipe==0.10.21 "
            "(or bash scripts/setup.sh)."
        ) from exc
    return {name: getattr(connections, name) for name in dir(connections) if name.startswith("FACEMESH_")}


def triangles_from_edges(edges: set[tuple[int, int]]) -> np.ndarray:
    """All triangles (sorted vertex triples) of a manifold triangle mesh given its undirected edges."""
    edges = {tuple(sorted(edge)) for edge in edges}
    neighbours = collections.defaultdict(set)
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    cliques = {tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]}
    edge_use = collections.Counter(edge for tri in cliques for edge in itertools.combinations(tri, 2))
    triangles = [tri for tri in cliques if not all(edge_use[e] > 2 for e in itertools.combinations(tri, 2))]
    return np.array(sorted(triangles), dtype=np.int64)


def orient_consistently(triangles: np.ndarray) -> np.ndarray:
    """Flip triangles so that neighbours traverse their shared edge in opposite directions (breadth-first)."""
    triangles = triangles.copy()
    edge_to_faces = collections.defaultdict(list)
    for face, tri in enumerate(triangles):
        for a, b in itertools.combinations(sorted(tri), 2):
            edge_to_faces[(a, b)].append(face)
    oriented = np.zeros(len(triangles), dtype=bool)
    for seed in range(len(triangles)):
        if oriented[seed]:
            continue
        oriented[seed] = True
        queue = collections.deque([seed])
        while queue:
            face = queue.popleft()
            directed = {(triangles[face][i], triangles[face][(i + 1) % 3]) for i in range(3)}
            for a, b in directed:
                for other in edge_to_faces[tuple(sorted((a, b)))]:
                    if oriented[other]:
                        continue
                    other_directed = {(triangles[other][i], triangles[other][(i + 1) % 3]) for i in range(3)}
                    if (a, b) in other_directed:  # same direction: flip the neighbour
                        triangles[other] = triangles[other][[0, 2, 1]]
                    oriented[other] = True
                    queue.append(other)
    return triangles


def face_normals_z(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """z component of cross(v1 - v0, v2 - v0) per triangle (negative = facing the camera in image space)."""
    v0, v1, v2 = (vertices[triangles[:, i]] for i in range(3))
    return np.cross(v1 - v0, v2 - v0)[:, 2]


@lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """`(852, 3)` int64 triangles of the 468-point face mesh, consistently wound (orientation fixed later)."""
    triangles = triangles_from_edges(set(mediapipe_connections()["FACEMESH_TESSELATION"]))
    return orient_consistently(triangles)


@lru_cache(maxsize=1)
def landmark_groups() -> dict[str, np.ndarray]:
    """Point indices of the named regions (lips, eyes, eyebrows, irises, face oval, nose)."""
    groups = {}
    for name, edges in mediapipe_connections().items():
        if name in ("FACEMESH_TESSELATION", "FACEMESH_CONTOURS"):
            continue
        groups[name.removeprefix("FACEMESH_").lower()] = np.array(sorted({i for edge in edges for i in edge}))
    return groups


# Closed loops around the mesh's holes, corner first (upper lid / lip from corner to corner, then back below).
RIGHT_EYE_LOOP = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
LEFT_EYE_LOOP = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
INNER_LIP_LOOP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)


def strip_triangles(loop: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """Triangulate a closed, roughly convex loop by zig-zagging between its two sides, starting at loop[0].

    Used to close the eye holes of the face mesh (and, on duplicated vertices, the mouth cavity) without
    adding vertices.
    """
    loop = list(loop)
    left, right = 1, len(loop) - 1
    triangles = [(loop[0], loop[left], loop[right])]
    while right - left > 1:
        if len(triangles) % 2:
            triangles.append((loop[left], loop[left + 1], loop[right]))
            left += 1
        else:
            triangles.append((loop[left], loop[right - 1], loop[right]))
            right -= 1
    return np.array(triangles, dtype=np.int64)


def orient_like(triangles: np.ndarray, vertices: np.ndarray, toward_camera: bool = True) -> np.ndarray:
    """Wind each triangle so its normal faces the camera (z < 0) in the given frontal pose (or away)."""
    facing_away = face_normals_z(vertices, triangles) > 0
    flip = facing_away if toward_camera else ~facing_away
    triangles = triangles.copy()
    triangles[flip] = triangles[flip][:, [0, 2, 1]]
    return triangles
