"""The CVPR 2025 interactive 3D challenge layout, read without trusting pickles.

There ``boxes`` is a list of dicts ``{z_min, z_max, z_mid, z_mid_x_min, z_mid_y_min, z_mid_x_max, z_mid_y_max}``
(one per class; class i is label i + 1), which ``np.savez`` stores as a pickled object array; ``clicks``,
``clicks_order`` (pickled too) and ``prev_pred`` (the previous prediction, (D, H, W)) may be there, and
``boxes`` may be missing. The pickle is read by an unpickler that admits only what such an array is made of
(numpy's array reconstruction, dtypes and scalars, and plain dicts, lists, strings and numbers): a crafted
file cannot run code.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np

from medsam_lite.core.case import LARGEST_COORDINATE
from medsam_lite.io.npy_header import read_npy_header

BOX_KEYS = ("z_min", "z_max", "z_mid", "z_mid_x_min", "z_mid_y_min", "z_mid_x_max", "z_mid_y_max")
# The globals a pickled numpy object array of plain Python values refers to; nothing else is admitted.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class UnsafePickle(ValueError):
    """A pickle that refers to something other than numpy arrays of plain values."""


class _PlainValuesUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickle(f"it refers to {module}.{name}, which a list of box dicts never does; not loaded")
        return super().find_class(module, name)


def _check_plain(value, depth: int = 0) -> None:
    """Raise UnsafePickle unless ``value`` is made of dicts, lists, strings, numbers and numeric arrays."""
    if depth > 16:
        raise UnsafePickle("it is nested deeper than box dicts are")
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            for item in value.ravel():
                _check_plain(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnsafePickle(f"it holds a dict key of type {type(key).__name__}")
            _check_plain(item, depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, depth + 1)
        return
    if value is None or isinstance(value, (str, bool, int, float, np.number, np.bool_)):
        return
    raise UnsafePickle(f"it holds a {type(value).__name__}")


MAX_OBJECT_BYTES = 64 << 20  # an object array's pickle as stored: 65,535 box dicts take about 10 MB


def read_object_array(path: str | Path, name: str) -> np.ndarray:
    """The object array ``name`` of the .npz at ``path``, unpickled with only plain values admitted.

    Raises UnsafePickle (a ValueError) for anything else, and ValueError for a malformed member."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as handle:
        size = archive.getinfo(f"{name}.npy").file_size
        if size > MAX_OBJECT_BYTES:  # a pickle of repeated references unpacks far beyond its few compressed MB
            raise ValueError(f"{name} unpacks to {size / 2**20:,.0f} MiB, more than the {MAX_OBJECT_BYTES >> 20} MiB "
                             f"a list of boxes needs; not loaded")
        _, dtype = read_npy_header(handle)
        if not dtype.hasobject:
            raise ValueError(f"{name} is not an object array")
        try:
            value = _PlainValuesUnpickler(handle).load()
        except UnsafePickle:
            raise
        except Exception as exc:  # a truncated or malformed pickle
            raise ValueError(f"{name} cannot be unpickled: {exc}") from exc
    _check_plain(value)
    return value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)


def boxes_from_dicts(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2025 box dicts -> ((N, 6) int64 ``[x_min, y_min, z_min, x_max, y_max, z_max]``, (N,) int64 z_mid).

    Raises ValueError naming the box and what is wrong with it."""
    boxes, middles = [], []
    for i, item in enumerate(np.asarray(items, dtype=object).ravel()):
        if not isinstance(item, dict):
            raise ValueError(f"box {i} is a {type(item).__name__}, not a dict with keys {', '.join(BOX_KEYS)}")
        missing = [k for k in BOX_KEYS if k not in item]
        if missing:
            raise ValueError(f"box {i} lacks {', '.join(missing)} (has: {', '.join(map(str, item)) or 'nothing'})")
        values = {}
        for key in BOX_KEYS:
            value = item[key]
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not abs(float(value)) <= LARGEST_COORDINATE or float(value) != int(value):  # NaN fails <=
                raise ValueError(f"box {i} has {key} = {value!r}; expected an integer index")
            values[key] = int(value)
        if not values["z_min"] <= values["z_mid"] <= values["z_max"]:
            raise ValueError(f"box {i} has z_mid {values['z_mid']} outside z_min..z_max "
                             f"{values['z_min']}..{values['z_max']}")
        boxes.append([values["z_mid_x_min"], values["z_mid_y_min"], values["z_min"],
                      values["z_mid_x_max"], values["z_mid_y_max"], values["z_max"]])
        middles.append(values["z_mid"])
    return np.array(boxes, dtype=np.int64).reshape(-1, 6), np.array(middles, dtype=np.int64)
