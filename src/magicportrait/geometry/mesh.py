"""Mesh-topology helpers shared by head models and renderers: boundary loops, mirror vertices, the graph
Laplacian and unwelding along UV seams. Pure numpy / scipy; faces are `(F, 3)` vertex indices."""

from __future__ import annotations

import numpy as np

from magicportrait.errors import InputError


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """The closed boundary loops of a triangle mesh (edges used by one face), each in walking order."""
    faces = np.asarray(faces, np.int64)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected, counts = np.unique(np.sort(edges, axis=1), axis=0, return_counts=True)
    single = {tuple(e) for e in undirected[counts == 1]}
    following = {int(a): int(b) for a, b in edges if (min(a, b), max(a, b)) in single}
    loops, visited = [], set()
    for start in following:
        if start in visited:
            continue
        loop, vertex = [], start
        while vertex not in visited and vertex in following:
            visited.add(vertex)
            loop.append(vertex)
            vertex = following[vertex]
        if vertex == start and len(loop) >= 3:
            loops.append(np.array(loop, np.int64))
    return loops


def mirror_vertices(rest_vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """`(V,)` index of each vertex's left/right mirror (x reflected about the mean x) in a rest shape, -1 if none.

    The nearest vertex to the reflected position counts when it is within 1.5 median edge lengths (model meshes
    such as FLAME are only nearly symmetric).
    """
    from scipy.spatial import cKDTree

    rest = np.asarray(rest_vertices, np.float64)
    reflected = rest.copy()
    reflected[:, 0] = 2.0 * rest[:, 0].mean() - rest[:, 0]
    edges = rest[faces[:, [1, 2, 0]]] - rest[faces]
    tolerance = 1.5 * float(np.median(np.linalg.norm(edges, axis=2)))
    distance, index = cKDTree(rest).query(reflected)
    return np.where(distance <= tolerance, index, -1)


def graph_laplacian(faces: np.ndarray, num_vertices: int):
    """Combinatorial graph Laplacian ``D - A`` of the mesh's edges (scipy sparse, CSC)."""
    import scipy.sparse as sp

    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    adjacency = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_vertices, num_vertices))
    degree = sp.diags(np.asarray(adjacency.sum(axis=1)).ravel())
    return (degree - adjacency).tocsc()


def unweld(faces, uv_faces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One new vertex per distinct (vertex, vt) corner pair.

    Args:
        faces: `(F, 3)` mesh faces.
        uv_faces: `(F, 3)` texture-coordinate faces (``ft``), corner for corner.

    Returns:
        ``(new_faces (F, 3), vertex_map (Nu,), vt_map (Nu,))``: the faces over the new vertices, and the mesh
        vertex and the vt index of each new vertex.
    """
    f = np.asarray(faces, np.int64)
    ft = np.asarray(uv_faces, np.int64)
    if f.shape != ft.shape:
        raise InputError(f"the texture space's ft {ft.shape} does not match the mesh's faces {f.shape}.")
    pairs = np.stack([f.reshape(-1), ft.reshape(-1)], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return inverse.reshape(f.shape), unique[:, 0], unique[:, 1]
