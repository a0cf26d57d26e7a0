"""Reading the header of an ``.npy`` stream (an ``.npz`` member) without numpy loading its data."""
from __future__ import annotations

from typing import IO

import numpy as np


def read_npy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header at the start of ``handle``, which is left at the start of the data.

    Raises ValueError for a malformed header."""
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(handle)
    return tuple(int(n) for n in shape), np.dtype(dtype)
