"""Reading ``.npy`` headers (of ``.npz`` members) without numpy loading their data: shape and dtype, enough to
estimate what a case needs before it is read."""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from typing import IO

import numpy as np

from medsam_lite.core.case import CaseError


def read_npy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header at the start of ``handle``, which is left at the start of the data.

    Raises ValueError for a malformed header."""
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(handle)
    return tuple(int(n) for n in shape), np.dtype(dtype)


@dataclass
class ArrayHeader:
    """Shape and dtype of one array of an .npz, read from its .npy header without the data."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: a crafted shape cannot overflow


def read_npz_headers(path: str | os.PathLike[str], names: tuple[str, ...] = ("imgs", "boxes")) -> dict[str, ArrayHeader]:
    """Headers of the arrays ``names`` found in the .npz at ``path`` (missing ones are left out).

    Raises CaseError when the file is no readable zip or a header is malformed."""
    headers: dict[str, ArrayHeader] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            for name in names:
                if f"{name}.npy" not in members:
                    continue
                with archive.open(f"{name}.npy") as handle:
                    headers[name] = ArrayHeader(*read_npy_header(handle))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CaseError(f"cannot read as .npz (truncated or not an npz file): {exc}") from exc
    return headers
