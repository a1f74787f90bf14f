"""Safe loading of FLAME model files into plain numpy arrays (:class:`FlameAssets`).

Supported inputs:

- the official FLAME pickles: FLAME 2020 ``generic_model.pkl`` / ``male_model.pkl`` / ``female_model.pkl``,
  FLAME 2023 ``flame2023.pkl`` and FLAME 2023 Open. They are Python-2 pickles (read with ``latin1``) whose values
  are numpy arrays, ``scipy.sparse`` matrices (``J_regressor``) and, in FLAME 2020, ``chumpy.ch.Ch`` objects
  wrapping numpy arrays;
- ``.npz`` archives using FLAME's own key names (``v_template``, ``shapedirs``, ``posedirs``, ``J_regressor``,
  ``weights``, ``kintree_table``, ``f``), e.g. the partial FLAME 2023 Open model used by the tests.

Unpickling is restricted: :class:`_RestrictedUnpickler` resolves only the handful of globals those files need
(numpy array/dtype reconstruction, scipy sparse matrices, chumpy arrays) and maps the last two onto inert
stand-in classes that merely record their pickled state. Any other global (``os.system``, ``builtins.eval``, ...)
raises :class:`~magicportrait.errors.InputError` before anything is called, so loading a file never runs code
from it. Neither chumpy nor a particular scipy version is needed.

FLAME's frame: metres, y up, z toward the viewer (out of the face), x toward the subject's left.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from magicportrait.errors import InputError

FLAME_SHAPE_COMPONENTS = 300  # identity components of the full FLAME 2020 / 2023 models
FLAME_EXPRESSION_COMPONENTS = 100  # expression components of the full FLAME 2020 / 2023 models
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


# ----------------------------------------------------------------------------------------------------------------
# Restricted unpickling
# ----------------------------------------------------------------------------------------------------------------


class _PickledStandIn:
    """Inert placeholder for a pickled object of a foreign class: records constructor args and state, nothing else."""

    _source = "?"

    def __init__(self, *args, **kwargs) -> None:
        self._args = args
        self._kwargs = kwargs
        self._state = None

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls)
        instance._args = args
        instance._kwargs = kwargs
        instance._state = None
        return instance

    def __setstate__(self, state) -> None:
        self._state = state

    def state_dict(self) -> dict:
        """The pickled ``__dict__`` (a ``(dict, slots)`` state is merged), or ``{}``."""
        state = self._state
        merged: dict = {}
        if isinstance(state, tuple) and len(state) == 2 and all(isinstance(s, dict | type(None)) for s in state):
            for part in state:
                merged.update(part or {})
        elif isinstance(state, dict):
            merged.update(state)
        return merged


class _ChumpyStandIn(_PickledStandIn):
    """Stand-in for ``chumpy`` objects. A plain ``chumpy.ch.Ch`` keeps its value under ``x`` in its state."""

    _source = "chumpy"


class _SparseStandIn(_PickledStandIn):
    """Stand-in for a pickled ``scipy.sparse`` matrix; :meth:`to_dense` rebuilds it from its recorded state."""

    _source = "scipy.sparse"
    _format = "?"


class _CscStandIn(_SparseStandIn):
    _format = "csc"


class _CsrStandIn(_SparseStandIn):
    _format = "csr"


class _CooStandIn(_SparseStandIn):
    _format = "coo"


def _safe_codecs_encode(text, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` restricted to what Python 3 pickles of ``bytes`` (protocol < 3) use: str -> bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise InputError("Refusing to unpickle: unexpected use of _codecs.encode in the file.")
    return text.encode("latin1", errors)


def _safe_reconstructor(cls, base, state):
    """``copy_reg._reconstructor`` (protocol 0/1 pickles of new-style objects), only for the stand-in classes."""
    if not (isinstance(cls, type) and issubclass(cls, _PickledStandIn)) or base is not object:
        raise InputError(f"Refusing to unpickle: copy_reg._reconstructor of {cls!r} is not allowed.")
    instance = cls.__new__(cls)
    if state is not None:
        instance.__setstate__(state)
    return instance


def _numpy_global(module: str, name: str):
    """A numpy array/dtype reconstruction helper, looked up in numpy's 1.x or 2.x internal module."""
    if name in ("ndarray", "dtype"):
        return getattr(np, name)
    suffix = module.split(".", 2)[-1] if module.count(".") >= 2 else ""
    for base in ("numpy._core", "numpy.core"):
        try:
            target = __import__(f"{base}.{suffix}", fromlist=[name])
            return getattr(target, name)
        except (ImportError, AttributeError):
            continue
    raise InputError(f"Refusing to unpickle: cannot resolve {module}.{name} in this numpy.")


_NUMPY_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}
_SPARSE_MODULES = {"scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr",
                   "scipy.sparse.coo", "scipy.sparse._coo", "scipy.sparse._arrays"}
_SPARSE_CLASSES = {"csc_matrix": _CscStandIn, "csc_array": _CscStandIn, "csr_matrix": _CsrStandIn,
                   "csr_array": _CsrStandIn, "coo_matrix": _CooStandIn, "coo_array": _CooStandIn}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals FLAME files need; everything else raises :class:`InputError`."""

    def __init__(self, file, source: str) -> None:
        super().__init__(file, encoding="latin1", fix_imports=True)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_global(module, name)
        if module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
            return _SPARSE_CLASSES[name]
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStandIn
        if (module, name) in (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")):
            return _safe_reconstructor
        if (module, name) in (("__builtin__", "object"), ("builtins", "object")):
            return object
        if (module, name) == ("_codecs", "encode"):
            return _safe_codecs_encode
        raise InputError(f"{self._source}: refusing to unpickle the global '{module}.{name}'. FLAME files only "
                         "hold numpy arrays, scipy.sparse matrices and chumpy arrays; this file is not a FLAME "
                         "model (or it was tampered with) and was not loaded.")

    def persistent_load(self, pid):
        raise InputError(f"{self._source}: persistent ids are not allowed in a FLAME pickle.")


def restricted_unpickle(data: bytes, source: str = "<bytes>"):
    """Unpickle ``data`` with :class:`_RestrictedUnpickler` (latin1, Python-2 compatible)."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except InputError:
        raise
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError, ... from a damaged file
        raise InputError(f"{source}: not a readable FLAME pickle ({type(exc).__name__}: {exc}).") from exc


# ----------------------------------------------------------------------------------------------------------------
# Array extraction
# ----------------------------------------------------------------------------------------------------------------


def _to_numpy(value, key: str, source: str) -> np.ndarray:
    """A dense numpy array from a numpy array, scipy sparse matrix, sparse stand-in or chumpy stand-in."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, _SparseStandIn):
        return _sparse_to_dense(value, key, source)
    if isinstance(value, _ChumpyStandIn):
        state = value.state_dict()
        inner = state.get("x")
        if inner is None and len(value._args) == 1:
            inner = value._args[0]
        if inner is None:
            raise InputError(f"{source}: '{key}' is a chumpy expression without a stored value ('x'); "
                             "re-export the model with plain numpy arrays.")
        return _to_numpy(inner, key, source)
    if hasattr(value, "toarray") and callable(value.toarray):  # a real scipy.sparse object (e.g. from an npz)
        return np.asarray(value.toarray())
    if isinstance(value, list | tuple | int | float):
        return np.asarray(value)
    raise InputError(f"{source}: '{key}' holds an unsupported {type(value).__name__}, expected an array.")


def _sparse_to_dense(value: _SparseStandIn, key: str, source: str) -> np.ndarray:
    from scipy import sparse

    state = value.state_dict()
    shape = state.get("_shape", state.get("shape"))
    try:
        shape = tuple(int(s) for s in shape)
        if value._format == "coo":
            row = np.asarray(state.get("row", state.get("coords", [None])[0]))
            col = np.asarray(state.get("col", state.get("coords", [None, None])[1]))
            matrix = sparse.coo_matrix((np.asarray(state["data"]), (row, col)), shape=shape)
        else:
            cls = sparse.csc_matrix if value._format == "csc" else sparse.csr_matrix
            matrix = cls((np.asarray(state["data"]), np.asarray(state["indices"]), np.asarray(state["indptr"])),
                         shape=shape)
        return matrix.toarray()
    except Exception as exc:
        raise InputError(f"{source}: '{key}' is a damaged {value._format} sparse matrix ({exc}).") from exc


# ----------------------------------------------------------------------------------------------------------------
# Assets
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FlameAssets:
    """The arrays of a FLAME model, in FLAME's frame (metres, y up, z toward the viewer).

    Attributes:
        v_template: `(V, 3)` float32 neutral template.
        shape_dirs: `(V, 3, S)` float32 identity blend shapes (the first ``S`` chosen components).
        expression_dirs: `(V, 3, E)` float32 expression blend shapes (``E`` may be 0).
        posedirs: `(P, V * 3)` float32 pose correctives, ``P = 9 * (J - 1)``; row ``9 * (k - 1) + 3 * r + c``
            multiplies entry ``(r, c)`` of ``R_k - I`` for non-root joint ``k``; columns are vertex-major
            (``3 * v + axis``).
        J_regressor: `(J, V)` float32 dense joint regressor.
        parents: `(J,)` int64 kinematic parents, ``-1`` for the root; ``parents[k] < k``.
        lbs_weights: `(V, J)` float32 skinning weights.
        faces: `(F, 3)` int64 triangles.
        variant: "flame2020", "flame2023" (also FLAME 2023 Open), or "flame_partial" (a truncated identity basis
            without expressions, like the shared test asset) -- a best guess from the file contents.
        num_shape_available / num_expression_available: components present in the file.
        source: the file it came from.
    """

    v_template: np.ndarray
    shape_dirs: np.ndarray
    expression_dirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    parents: np.ndarray
    lbs_weights: np.ndarray
    faces: np.ndarray
    variant: str
    num_shape_available: int
    num_expression_available: int
    source: str = ""

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.J_regressor.shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.shape_dirs.shape[2])

    @property
    def num_expression(self) -> int:
        return int(self.expression_dirs.shape[2])

    @property
    def shapedirs(self) -> np.ndarray:
        """`(V, 3, S + E)` the chosen identity components followed by the chosen expression components."""
        return np.concatenate([self.shape_dirs, self.expression_dirs], axis=2)


def default_shape_split(num_columns: int) -> tuple[int, int]:
    """(shape, expression) component counts for a ``shapedirs`` with ``num_columns`` columns.

    The full FLAME 2020 and 2023 models have 300 identity + 100 expression columns. Fewer than 300 columns is a
    truncated identity basis without expressions (the partial model: 60 + 0). Otherwise the first 300 are
    identity and the rest expression. Pass ``num_shape_total`` to :func:`load_flame` to override.
    """
    if num_columns <= FLAME_SHAPE_COMPONENTS:
        return num_columns, 0
    return FLAME_SHAPE_COMPONENTS, num_columns - FLAME_SHAPE_COMPONENTS


def _read_raw(path: Path) -> tuple[dict, bool]:
    """The file's key -> value dict and whether it held chumpy objects."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}, False
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            raise InputError(f"{path}: not a readable .npz file ({exc}).") from exc
    if not head:
        raise InputError(f"{path}: the file is empty.")
    raw = restricted_unpickle(path.read_bytes(), str(path))
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a FLAME pickle holds a dict of arrays, this one holds a {type(raw).__name__}.")
    return raw, any(isinstance(v, _ChumpyStandIn) for v in raw.values())


def load_flame(path: str | os.PathLike, num_shape: int | None = None, num_expression: int | None = None,
               num_shape_total: int | None = None) -> FlameAssets:
    """Load a FLAME ``.pkl`` (2020, 2023, 2023 Open) or a FLAME-keyed ``.npz`` safely.

    Args:
        path: the model file.
        num_shape: identity components to keep (the first ones); all available when None.
        num_expression: expression components to keep; all available when None.
        num_shape_total: how many leading ``shapedirs`` columns are identity (the rest are expression);
            guessed from the column count when None (see :func:`default_shape_split`).

    Raises:
        InputError: missing/unreadable file, a pickle referencing anything beyond arrays, missing keys,
            inconsistent array shapes, or more components requested than the file has.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such FLAME model file. Download FLAME from https://flame.is.tue.mpg.de "
                         "and pass the path of generic_model.pkl / flame2023.pkl.")
    raw, has_chumpy = _read_raw(path)
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise InputError(f"{path}: not a FLAME model, missing key(s) {', '.join(missing)} "
                         f"(found: {', '.join(sorted(map(str, raw))) or 'none'}).")
    arrays = {k: _to_numpy(raw[k], k, str(path)) for k in REQUIRED_KEYS}

    def fail(message: str):
        raise InputError(f"{path}: inconsistent FLAME arrays: {message}.")

    v_template = arrays["v_template"]
    if v_template.ndim != 2 or v_template.shape[1] != 3 or v_template.shape[0] == 0:
        fail(f"v_template has shape {v_template.shape}, expected (V, 3)")
    num_vertices = v_template.shape[0]

    shapedirs = arrays["shapedirs"]
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (num_vertices, 3):
        fail(f"shapedirs has shape {shapedirs.shape}, expected ({num_vertices}, 3, K)")
    num_columns = shapedirs.shape[2]

    kintree = arrays["kintree_table"]
    if kintree.ndim != 2 or kintree.shape[0] != 2 or kintree.shape[1] == 0:
        fail(f"kintree_table has shape {kintree.shape}, expected (2, J)")
    num_joints = kintree.shape[1]
    parents = _parents_from_kintree(kintree, fail)

    J_regressor = arrays["J_regressor"]
    if J_regressor.shape != (num_joints, num_vertices):
        fail(f"J_regressor has shape {J_regressor.shape}, expected ({num_joints}, {num_vertices})")
    weights = arrays["weights"]
    if weights.shape != (num_vertices, num_joints):
        fail(f"weights has shape {weights.shape}, expected ({num_vertices}, {num_joints})")

    num_pose = 9 * (num_joints - 1)
    posedirs = arrays["posedirs"]
    if posedirs.shape == (num_vertices, 3, num_pose):
        posedirs = posedirs.reshape(num_vertices * 3, num_pose).T
    elif posedirs.shape != (num_pose, num_vertices * 3):
        fail(f"posedirs has shape {posedirs.shape}, expected ({num_vertices}, 3, {num_pose})")

    faces = arrays["f"]
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0:
        fail(f"f has shape {faces.shape}, expected (F, 3)")
    faces = faces.astype(np.int64)
    if faces.min() < 0 or faces.max() >= num_vertices:
        fail(f"face indices span [{faces.min()}, {faces.max()}], outside [0, {num_vertices})")

    for name, array in (("v_template", v_template), ("shapedirs", shapedirs), ("posedirs", posedirs),
                        ("J_regressor", J_regressor), ("weights", weights)):
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
            fail(f"{name} is not a finite numeric array")

    if num_shape_total is None:
        total_shape, total_expression = default_shape_split(num_columns)
    else:
        if not 0 <= num_shape_total <= num_columns:
            raise InputError(f"{path}: num_shape_total={num_shape_total} but shapedirs has {num_columns} columns.")
        total_shape, total_expression = num_shape_total, num_columns - num_shape_total
    num_shape = total_shape if num_shape is None else num_shape
    num_expression = total_expression if num_expression is None else num_expression
    if not 0 <= num_shape <= total_shape:
        raise InputError(f"{path}: asked for {num_shape} shape components, the model has {total_shape}.")
    if not 0 <= num_expression <= total_expression:
        raise InputError(f"{path}: asked for {num_expression} expression components, the model has "
                         f"{total_expression}.")

    if total_expression == 0 or total_shape < FLAME_SHAPE_COMPONENTS:
        variant = "flame_partial"
    elif has_chumpy:
        variant = "flame2020"
    else:
        variant = "flame2023"

    f32 = np.float32
    return FlameAssets(
        v_template=np.ascontiguousarray(v_template, dtype=f32),
        shape_dirs=np.ascontiguousarray(shapedirs[:, :, :num_shape], dtype=f32),
        expression_dirs=np.ascontiguousarray(shapedirs[:, :, total_shape:total_shape + num_expression], dtype=f32),
        posedirs=np.ascontiguousarray(posedirs, dtype=f32),
        J_regressor=np.ascontiguousarray(J_regressor, dtype=f32),
        parents=parents,
        lbs_weights=np.ascontiguousarray(weights, dtype=f32),
        faces=np.ascontiguousarray(faces),
        variant=variant,
        num_shape_available=int(total_shape),
        num_expression_available=int(total_expression),
        source=str(path),
    )


def _parents_from_kintree(kintree: np.ndarray, fail) -> np.ndarray:
    """`(J,)` int64 parents from a `(2, J)` kintree table (row 0 parents by joint id, row 1 joint ids)."""
    num_joints = kintree.shape[1]
    if not np.issubdtype(kintree.dtype, np.integer):
        if not np.all(np.isfinite(kintree)) or np.any(kintree != np.round(kintree)):
            fail("kintree_table is not integer")
    ids = kintree[1].astype(np.int64)
    if sorted(ids.tolist()) != list(range(num_joints)):
        fail(f"kintree_table joint ids {ids.tolist()} are not 0..{num_joints - 1}")
    order = np.argsort(ids)
    raw_parents = kintree[0][order]
    parents = np.full(num_joints, -1, np.int64)
    for joint in range(num_joints):
        parent = int(raw_parents[joint])
        if joint == 0:
            if 0 <= parent < num_joints:
                fail(f"the root joint has a parent ({parent})")
            continue
        if not 0 <= parent < joint:
            fail(f"joint {joint} has parent {parent}; parents must precede their children")
        parents[joint] = parent
    return parents
