"""FLAME eyelid blend shapes (user-supplied): SMIRK's eyelid closures as two extra expression components.

FLAME 2020 cannot close its eyelids. SMIRK (and metrical-tracker, where the shapes come from) adds two per-vertex
offset fields, ``l_eyelid.npy`` and ``r_eyelid.npy`` (`(V, 3)` metres in FLAME's frame, one per eye), scaled by
SMIRK's ``eyelid_params`` in [0, 1] (0 as modelled, 1 closed). Both files are in SMIRK's ``assets/`` folder; pass
that folder as ``--flame-eyelids`` (or ``$MAGICPORTRAIT_FLAME_EYELIDS``).

We append them to the expression basis as its last two components ([left, right], like SMIRK's parameters), so
every stage that handles expressions handles eyelids too: FLAME codes from SMIRK carry their closures into the
rendered head, our own landmark fit solves for them, alignment transfers and smooths them, the motion editor
scales them. One difference from SMIRK's own FLAME, on purpose: SMIRK adds the offsets after the global rotation
(unrotated), we add them in the head's frame, so the lids turn with the head (the two agree for a frontal head;
at 30 degrees they differ by half the offset times the turn's sine, about 0.2 mm).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from magicportrait.errors import InputError
from magicportrait.heads.flame_loader import FlameAssets

EYELID_FILES = ("l_eyelid.npy", "r_eyelid.npy")  # SMIRK's eyelid_params order: [left, right]
NUM_EYELIDS = len(EYELID_FILES)
MAX_OFFSET_METRES = 0.05  # an eyelid moves millimetres; larger values are not eyelid blend shapes


def load_eyelid_blendshapes(folder: str | Path, num_vertices: int) -> np.ndarray:
    """`(V, 3, 2)` float32 eyelid offsets [left, right] from ``folder`` (FLAME frame, metres), checked against a
    FLAME model of ``num_vertices`` vertices."""
    folder = Path(folder)
    shapes = []
    for name in EYELID_FILES:
        path = folder / name
        if not path.is_file():
            raise InputError(f"FLAME eyelids: {path} is missing. Pass the folder holding {' and '.join(EYELID_FILES)} "
                             "(SMIRK's assets/ folder) with --flame-eyelids, or leave it out.")
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(f"FLAME eyelids: cannot read {path} as a numpy array ({error}).") from None
        values = np.asarray(values, np.float64)
        values = values[0] if values.ndim == 3 and values.shape[0] == 1 else values
        if values.shape != (num_vertices, 3):
            raise InputError(f"FLAME eyelids: {path} has shape {values.shape}, expected ({num_vertices}, 3) for this "
                             "FLAME model (the eyelid shapes are made for FLAME 2020's 5023 vertices).")
        if not np.all(np.isfinite(values)) or np.abs(values).max() > MAX_OFFSET_METRES:
            raise InputError(f"FLAME eyelids: {path} holds non-finite or implausibly large offsets "
                             f"(max {np.abs(values).max():.3g} m); expected per-vertex offsets of a few millimetres.")
        shapes.append(values)
    return np.stack(shapes, axis=2).astype(np.float32)


def with_eyelids(assets: FlameAssets, blendshapes: np.ndarray) -> FlameAssets:
    """``assets`` with the `(V, 3, 2)` eyelid shapes appended as the last two expression components."""
    expression = np.concatenate([assets.expression_dirs, blendshapes.astype(assets.expression_dirs.dtype)], axis=2)
    return dataclasses.replace(assets, expression_dirs=expression)
