"""Container checks before any decoding: the sizes an AVI (RIFF), MP4/MOV (ISO BMFF) or MKV/WebM (Matroska)
file declares against the bytes it holds, and an MP4 whose header holds no frames."""

from __future__ import annotations

import struct
from pathlib import Path


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """ISO BMFF boxes (MP4, MOV) between ``start`` and ``end`` of ``data``: (type, payload start, box end)."""
    boxes = []
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        header = 8
        if size == 1 and start + 16 <= end:
            size, header = struct.unpack(">Q", data[start + 8 : start + 16])[0], 16
        elif size == 0:
            size = end - start
        if size < header:
            break
        boxes.append((kind, start + header, start + size))
        start += size
    return boxes


def _mp4_problem(path: Path, size: int) -> str | None:
    """A truncated MP4/MOV (a top-level box runs past the end) or one whose video track holds no frames."""
    with path.open("rb") as f:
        top, offset = [], 0
        while offset + 8 <= size:  # walk the top-level boxes by seeking: mdat is never read
            f.seek(offset)
            head = f.read(16)
            length, kind = struct.unpack(">I4s", head[:8])
            if length == 1 and len(head) == 16:
                length = struct.unpack(">Q", head[8:16])[0]
            elif length == 0:
                length = size - offset
            if length < 8:
                return None  # not a box structure we understand: leave the verdict to the decoder
            if offset + length > size:
                return (
                    f"truncated: its '{kind.decode('latin-1')}' box runs to byte {offset + length}, "
                    f"the file ends at {size}"
                )
            top.append((kind, offset, length))
            offset += length
        moov = next(((o, n) for k, o, n in top if k == b"moov"), None)
        if moov is None or moov[1] > 64 << 20:
            return None
        f.seek(moov[0])
        data = f.read(moov[1])
    inside = _boxes(data, 8, len(data))
    if any(k == b"moof" for k, _, _ in top) or any(k == b"mvex" for k, _, _ in inside):
        return None  # a fragmented MP4 keeps its samples in fragments, not in the header's tables
    tracks = [(x, y) for k, x, y in inside if k == b"trak"]
    if not tracks:
        return "its MP4 header holds no track: an empty video (0 frames)"
    for a, b in tracks:
        mdia = next(((x, y) for k, x, y in _boxes(data, a, b) if k == b"mdia"), None)
        if mdia is None:
            continue
        inner = _boxes(data, *mdia)
        hdlr = next(((x, y) for k, x, y in inner if k == b"hdlr"), None)
        if hdlr is None or data[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
            continue
        minf = next(((x, y) for k, x, y in inner if k == b"minf"), None)
        stbl = next(((x, y) for k, x, y in _boxes(data, *minf) if k == b"stbl"), None) if minf else None
        stsz = next(((x, y) for k, x, y in _boxes(data, *stbl) if k in (b"stsz", b"stz2")), None) if stbl else None
        if stsz is not None and stsz[0] + 12 <= stsz[1]:
            if struct.unpack(">I", data[stsz[0] + 8 : stsz[0] + 12])[0] == 0:
                return "its video track holds no frames (0 frames)"
    return None


def container_problem(path: Path) -> str | None:
    """What the container's own sizes say is wrong, before any decoding: a RIFF (AVI) or ISO BMFF (MP4, MOV)
    file shorter than its header declares (truncated; decoders would conceal the missing frames), an MP4 whose
    header holds no frames, or a Matroska (MKV, WebM) segment running past the end. None if nothing is."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(64)
    if head[:4] == b"RIFF" and len(head) >= 12:
        declared = struct.unpack("<I", head[4:8])[0] + 8
        if declared > size:
            return f"truncated: its RIFF header declares {declared} bytes, the file holds {size}"
        return None
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return _mp4_problem(path, size)
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska or WebM
        return _matroska_problem(path, size)
    return None


def _vint(data: bytes, at: int, strip: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``at``: (value, length), the marker bit stripped for sizes."""
    if at >= len(data) or data[at] == 0:
        return None
    length = 8 - data[at].bit_length() + 1
    if at + length > len(data):
        return None
    value = int.from_bytes(data[at : at + length], "big")
    if strip:
        value &= (1 << (7 * length)) - 1
        if value == (1 << (7 * length)) - 1:
            return -1, length  # unknown size (a live stream)
    return value, length


def _matroska_problem(path: Path, size: int) -> str | None:
    with path.open("rb") as f:
        head = f.read(4096)
    header_size = _vint(head, 4, True)
    if header_size is None:
        return None
    segment = 4 + header_size[1] + header_size[0]
    seg_id = _vint(head, segment, False)
    if seg_id is None or head[segment : segment + seg_id[1]] != b"\x18\x53\x80\x67":
        return None
    seg_size = _vint(head, segment + seg_id[1], True)
    if seg_size is None or seg_size[0] < 0:
        return None
    declared = segment + seg_id[1] + seg_size[1] + seg_size[0]
    if declared > size:
        return f"truncated: its Matroska segment declares {declared} bytes, the file holds {size}"
    return None
