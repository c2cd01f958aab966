"""Labels for files: a CSV of ``path,label`` rows, or class sub-folders.

Every adapter labels its files the same way, here. Class indices come from the
whole CSV, not from the files a folder happens to hold, so a training folder and
a held-out folder labelled by one CSV agree on what class 3 is.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from mimsdk.errors import DataError

PATH_COLUMNS = ("path", "file")  # "file" as in several public datasets' label lists
LABEL_COLUMN = "label"  # the column of labels unless another is named
# How another column is chosen, for the error naming a missing one (the documents adapter alone has the option).
CHOOSE_COLUMN = (
    "documents read another label column: data.options.label_column in a recipe, "
    "--label-column NAME for mimsdk probe and embed"
)


def read_label_csv(csv_path: str | Path, column: str = LABEL_COLUMN) -> dict[Path, str]:
    """Resolved path -> label, from a CSV with columns ``path`` (or ``file``; relative to the CSV's folder)
    and ``column``."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"labels file {csv_path} does not exist")
    # Names that are not UTF-8 read back as the surrogate escapes os.fsdecode gives the files themselves.
    with csv_path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        path_column = next((c for c in PATH_COLUMNS if c in fields), None)
        if path_column is None or column not in fields:
            hint = "" if path_column is None else f"; {CHOOSE_COLUMN}"
            raise DataError(f"labels file {csv_path} needs columns 'path' and '{column}'; found {fields}{hint}")
        return {(csv_path.parent / row[path_column]).resolve(): row[column] for row in reader}


def label_files(
    files: Sequence[Path], root: str | Path, labels_csv: str | Path | None = None, column: str = LABEL_COLUMN
) -> tuple[list[int], list[str]]:
    """Label index per file (-1 when unlabelled) and the class names.

    From ``labels_csv`` when given (every file must have a row); else from class
    sub-folders when every file sits in one (``root/<class>/...``); else unlabelled
    (as when ``root`` is itself the one file).
    """
    root = Path(root)
    if labels_csv:
        table = read_label_csv(labels_csv, column)
        names = [table.get(Path(f).resolve()) for f in files]
        missing = [f for f, n in zip(files, names) if n is None]
        if missing:
            raise DataError(f"{missing[0]} has no row in labels file {labels_csv} ({len(missing)} files missing)")
        classes = sorted(set(table.values()))
    elif root.is_dir() and files and all(Path(f).parent != root and Path(f) != root for f in files):
        names = [Path(f).relative_to(root).parts[0] for f in files]
        classes = sorted(set(names))
    else:
        return [-1] * len(files), []
    index = {c: i for i, c in enumerate(classes)}
    return [index[n] for n in names], classes
