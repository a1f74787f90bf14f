"""Where the tests find the data in ``../shared`` beside the project (tests that need it skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
"""The project's root (this file is in tests/)."""
SHARED = PROJECT.parent / "shared"
PARTIAL_MODEL = SHARED / "assets/flame2023-open-partial/flame2023_open_partial.npz"
VECTORS = Path(os.environ.get("MAGICPORTRAIT_VECTORS", SHARED / "vectors/official-tiny"))
MANIFEST = Path(os.environ.get("MAGICPORTRAIT_MANIFEST", SHARED / "reference/official-state-dict-manifest.json"))

needs_partial_flame = pytest.mark.skipif(not PARTIAL_MODEL.is_file(),
                                         reason=f"shared partial FLAME model not found at {PARTIAL_MODEL}")
DECA_VECTORS = SHARED / "vectors/deca-tiny"
SMIRK_VECTORS = SHARED / "vectors/smirk-tiny"
