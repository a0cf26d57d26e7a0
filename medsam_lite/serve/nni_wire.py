"""nnInteractive's packed-array wire format (its ``SERVER_CLIENT.md``; written from the format, not its code):
``b"NNIA"``, version 1, codec id (1 zstd, 2 lz4), ndim, dtype name, int64 shape, then chunks of blosc2-compressed
bytes, each preceded by its uncompressed and compressed lengths. The declared size is checked against the
service's voxel limit before anything is decompressed, and every chunk's frame against its declared length."""
from __future__ import annotations

import struct

import numpy as np

from medsam_lite.serve.uploads import UploadError

MAGIC = b"NNIA"
VERSION = 1
CHUNK = 1 << 30  # blosc2 takes at most 2 GiB - 1 per call
ZSTD, LZ4 = 1, 2
DTYPES = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64", "float16", "float32", "float64",
          "bool"}


def require_blosc2():
    try:
        import blosc2
    except ImportError as exc:
        raise UploadError(501, "this server cannot read nnInteractive's arrays: blosc2 is not installed here "
                               "(pip install blosc2, or medsam-lite[viewers])") from exc
    return blosc2


def read_header(buf: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, offset of the chunk count); UploadError 400 for anything malformed."""
    if len(buf) < 8:
        raise UploadError(400, "the packed array is shorter than its header")
    magic, version, codec, ndim, name_len = struct.unpack_from("<4sBBBB", buf, 0)
    if magic != MAGIC or version != VERSION or codec not in (ZSTD, LZ4):
        raise UploadError(400, f"not an nnInteractive packed array (magic {magic!r}, version {version}, codec {codec})")
    offset = 8 + name_len
    name = buf[8:offset].decode("ascii", "replace")
    if name not in DTYPES:
        raise UploadError(400, f"the packed array's dtype {name!r} is not one of {', '.join(sorted(DTYPES))}")
    if len(buf) < offset + 8 * ndim + 4:
        raise UploadError(400, "the packed array is shorter than its header")
    shape = struct.unpack_from(f"<{ndim}q", buf, offset)
    if any(d < 0 for d in shape):
        raise UploadError(400, f"the packed array declares a negative size {shape}")
    return np.dtype(name), tuple(int(d) for d in shape), offset + 8 * ndim


def unpack(buf: bytes, max_voxels: int) -> np.ndarray:
    """Packed bytes -> array; 413 when it declares more than ``max_voxels`` elements (checked first)."""
    dtype, shape, offset = read_header(buf)
    count = int(np.prod(shape, dtype=object))
    if count > max_voxels:
        raise UploadError(413, f"the image is {shape}: {count:,} voxels, more than the {max_voxels:,} this service "
                               f"accepts (--max-pixels)")
    blosc2 = require_blosc2()
    out = np.empty(count, dtype=dtype)
    view, total, written = memoryview(buf), count * dtype.itemsize, 0
    (chunks,) = struct.unpack_from("<I", buf, offset)
    offset += 4
    for _ in range(chunks):
        if len(buf) < offset + 16:
            raise UploadError(400, "the packed array ends inside a chunk header")
        ulen, clen = struct.unpack_from("<QQ", buf, offset)
        offset += 16
        if written + ulen > total or ulen % dtype.itemsize or len(buf) < offset + clen:
            raise UploadError(400, "the packed array's chunks do not match its declared shape")
        frame = view[offset:offset + clen]
        try:
            if blosc2.get_cbuffer_sizes(frame)[0] != ulen:
                raise UploadError(400, "a chunk's compressed frame does not match its declared length")
            blosc2.decompress2(frame, dst=out[written // dtype.itemsize:(written + ulen) // dtype.itemsize])
        except UploadError:
            raise
        except Exception as exc:  # blosc2 raises RuntimeError/ValueError for a corrupt frame
            raise UploadError(400, f"a chunk of the packed array could not be decompressed: {exc}") from exc
        written += ulen
        offset += clen
    if written != total:
        raise UploadError(400, f"the packed array holds {written:,} bytes; its shape {shape} needs {total:,}")
    return out.reshape(shape)


def pack(array: np.ndarray) -> bytes:
    """Array -> packed bytes (zstd level 3, no filter: label masks compress best so)."""
    blosc2 = require_blosc2()
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    name = array.dtype.name.encode("ascii")
    parts = [struct.pack(f"<4sBBBB{len(name)}s", MAGIC, VERSION, ZSTD, array.ndim, len(name), name),
             struct.pack(f"<{array.ndim}q", *array.shape)]
    raw = memoryview(array).cast("B") if array.size else memoryview(b"")
    chunks = (raw.nbytes + CHUNK - 1) // CHUNK
    parts.append(struct.pack("<I", chunks))
    for i in range(chunks):
        piece = raw[i * CHUNK:min((i + 1) * CHUNK, raw.nbytes)]
        frame = blosc2.compress2(piece, typesize=array.dtype.itemsize, codec=blosc2.Codec.ZSTD, clevel=3,
                                 filters=[blosc2.Filter.NOFILTER])
        parts += [struct.pack("<QQ", piece.nbytes, len(frame)), frame]
    return b"".join(parts)
