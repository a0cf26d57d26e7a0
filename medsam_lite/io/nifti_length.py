"""Whether a NIfTI file holds all the voxels its header describes. SimpleITK's NIfTI reader fills a file cut short
with zeros and says nothing (a ``.nii`` or ``.nii.gz`` cut in half read as a volume whose second half is 0; its
NRRD and MetaImage readers do raise), so a copy or download that stopped part-way would be segmented as if the
scan ended in black. The header's length is compared with the file's: for ``.nii`` the file size; for ``.nii.gz``
the gzip trailer's uncompressed size (modulo 2**32), and where that disagrees (a truncated stream, or several
gzip members) the stream itself, decompressed to its end."""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

from medsam_lite.io.image import ImageError

CUT_SHORT = "a copy or download that stopped part-way; SimpleITK would read the missing voxels as 0"


def _described_bytes(head: bytes) -> int | None:
    """vox_offset + voxel bytes from the first 540 bytes of a NIfTI-1 or NIfTI-2 header; None if it is neither."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:  # NIfTI-1
            dims = struct.unpack(order + "8h", head[40:56])
            bitpix = struct.unpack(order + "h", head[72:74])[0]
            offset = int(struct.unpack(order + "f", head[108:112])[0])
        elif len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:  # NIfTI-2
            bitpix = struct.unpack(order + "h", head[14:16])[0]
            dims = struct.unpack(order + "8q", head[16:80])
            offset = struct.unpack(order + "q", head[168:176])[0]
        else:
            continue
        rank = dims[0] if 1 <= dims[0] <= 7 else 0
        if rank == 0 or bitpix <= 0 or any(d < 1 for d in dims[1:rank + 1]):
            return None  # a header SimpleITK itself refuses, with its own words
        return offset + math.prod(dims[1:rank + 1]) * bitpix // 8
    return None


def _stream_length(handle: BinaryIO, described: int) -> int:
    """Bytes a gzip stream decompresses to; ImageError when it ends before its end-of-stream marker."""
    total = 0
    try:
        with gzip.GzipFile(fileobj=handle) as stream:
            while chunk := stream.read(1 << 22):
                total += len(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ImageError(f"is cut short: its header describes {described:,} bytes and its gzip stream ends before "
                         f"its end ({CUT_SHORT})") from exc
    return total


def check_nifti_length(path: Path) -> None:
    """ImageError when the NIfTI file at ``path`` holds fewer bytes than its header describes."""
    compressed = path.name.lower().endswith(".gz")
    with open(path, "rb") as raw:
        try:
            head = gzip.GzipFile(fileobj=raw).read(540) if compressed else raw.read(540)
            described = _described_bytes(head)
        except (OSError, EOFError, zlib.error, ValueError, OverflowError):  # SimpleITK says what is wrong with it
            return
        if described is None:
            return
        if not compressed:
            held = raw.seek(0, 2)
        else:
            raw.seek(-4, 2)
            if struct.unpack("<I", raw.read(4))[0] == described % 2**32:  # the trailer's length agrees
                return
            raw.seek(0)
            held = _stream_length(raw, described)
    if held < described:
        raise ImageError(f"is cut short: its header describes {described:,} bytes, the file holds {held:,} ({CUT_SHORT})")
