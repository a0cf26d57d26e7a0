"""Whether a MetaImage (``.mha``, or ``.mhd`` with its data file) holds the bytes its header describes. SimpleITK
refuses one cut short, but in words that mislead ("Reason: No such file or directory" for an ``.mha`` that is
there, half of it); so its text header is read first and the data's length compared with what ``DimSize``,
``ElementType`` and ``ElementNumberOfChannels`` (or ``CompressedDataSize``) describe."""
from __future__ import annotations

import math
from pathlib import Path

from medsam_lite.io.image import ImageError

# Bytes of each MetaIO element type whose size does not depend on the platform.
ELEMENT_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                 "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
HEADER_LIMIT = 1 << 16  # a MetaImage header is a few hundred bytes of "Key = Value" lines


def _header(path: Path) -> tuple[dict[str, str], int] | None:
    """The header's fields and where its data starts (after the ElementDataFile line, which ends it)."""
    with open(path, "rb") as handle:
        head = handle.read(HEADER_LIMIT)
    fields, offset = {}, 0
    for line in head.split(b"\n"):
        offset += len(line) + 1
        key, equals, value = line.decode("latin-1").partition("=")
        if not equals:
            return None
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return fields, offset
    return None


def check_metaimage_length(path: Path) -> None:
    """ImageError when the MetaImage at ``path`` (or its data file) holds fewer bytes than its header describes;
    a header this cannot follow (a file list, a pattern, an element type of the platform's size) is left to
    SimpleITK."""
    parsed = _header(path)
    if parsed is None:
        return
    fields, offset = parsed
    compressed = fields.get("CompressedData", "False").lower() == "true"
    try:
        if compressed:
            described = int(fields["CompressedDataSize"])
        else:
            dims = [int(v) for v in fields["DimSize"].split()]
            described = math.prod(dims) * int(fields.get("ElementNumberOfChannels", "1")) * \
                ELEMENT_BYTES[fields["ElementType"]]
    except (KeyError, ValueError):
        return
    name = fields["ElementDataFile"]
    if name == "LOCAL":
        where, held = "the file", path.stat().st_size - offset
    elif name == "LIST" or "%" in name or " " in name:  # a list of files or a pattern: left to SimpleITK
        return
    else:
        data = path.parent / name
        if not data.is_file():
            raise ImageError(f"its data file {name} (ElementDataFile) is missing beside it")
        where, held = f"its data file {name}", data.stat().st_size
    if held < described:
        kind = "compressed data" if compressed else "data"
        raise ImageError(f"is cut short: its header describes {described:,} bytes of {kind}, {where} holds "
                         f"{max(held, 0):,} (a copy or download that stopped part-way)")
