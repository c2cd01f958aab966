"""PLY files checked before open3d reads them: the body holds what the header declares (not truncated)."""

from __future__ import annotations

from pathlib import Path

from mimsdk.errors import DataError

PLY_TYPES = {
    "char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
    "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8,
}  # fmt: skip


def ply_header(path: Path) -> tuple[str, list[list], int]:
    """The format, the elements ``[name, count, bytes per item or None when it has list properties]`` and the
    offset of the body of a PLY file, from its header alone. DataError naming the file if it has none."""
    with path.open("rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise DataError(f"{path}: not a PLY file (no 'ply' ... 'end_header' header)")
    body = head.find(b"\n", end) + 1 or len(head)
    fmt, elements = "", []
    for line in head[:end].decode("ascii", "replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "format":
            fmt = words[1]
        elif len(words) >= 3 and words[0] == "element" and words[2].isdigit():
            elements.append([words[1], int(words[2]), 0])
        elif len(words) >= 3 and words[0] == "property" and elements:
            size = None if words[1] == "list" else PLY_TYPES.get(words[1])
            elements[-1][2] = None if size is None or elements[-1][2] is None else elements[-1][2] + size
    return fmt, elements, body


def check_ply(path: Path, rows: bool = True) -> int:
    """The vertices a PLY file declares, once its body is found to hold them: DataError naming the file if shorter.

    open3d reads a truncated PLY as the declared number of points, the missing ones zero, and only prints
    "RPly: Error reading ..." without the file's name; the header's counts and property types give the bytes
    (binary) or lines (ascii) the data needs, checked here before open3d reads it. A binary body is checked
    from the file's size alone; ``rows`` False skips counting an ascii body's lines (which reads the whole file).
    """
    fmt, elements, body = ply_header(path)
    vertices = next((count for name, count, _ in elements if name == "vertex"), 0)
    have = path.stat().st_size - body
    if fmt.startswith("binary"):
        need = 0
        for _, count, size in elements:  # the elements of known size up to the first with lists
            if size is None:
                break
            need += count * size
        if have < need:
            raise DataError(
                f"{path}: truncated: its header declares {vertices} vertices ({need} bytes of data), "
                f"the file holds {max(have, 0)} bytes after the header"
            )
    elif fmt == "ascii" and rows:
        need = sum(count for _, count, _ in elements)
        with path.open("rb") as f:
            f.seek(body)
            lines = sum(1 for line in f if line.strip())
        if lines < need:
            raise DataError(
                f"{path}: truncated: its header declares {need} rows ({vertices} vertices), the file holds {lines}"
            )
    return vertices
