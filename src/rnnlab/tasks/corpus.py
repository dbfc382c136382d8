"""Where task data comes from: text files, CSV columns, and the defaults that need no download.

The default character-level corpus is real text that nobody here wrote: a fixed list of modules
from the Python standard library of the interpreter running rnnlab (found through ``sysconfig``),
concatenated in that order and capped at ``DEFAULT_CORPUS_CHARS`` characters. It therefore varies
slightly between Python versions; a run records its vocabulary so it can be sampled later anyway.

The default series is ``data/sunspots.csv`` (yearly sunspot numbers 1700-2008, public domain; see
``data/README.md``).
"""

from __future__ import annotations

import csv
import io
import math
import os
import sysconfig
from pathlib import Path

STDLIB_MODULES = (
    "textwrap.py", "string.py", "functools.py", "heapq.py", "bisect.py", "fractions.py",
    "statistics.py", "dataclasses.py", "contextlib.py", "argparse.py", "random.py", "shutil.py",
    "difflib.py", "pprint.py", "calendar.py", "collections/__init__.py", "csv.py", "enum.py",
)
DEFAULT_CORPUS_CHARS = 500_000
DATA = Path(__file__).parent / "data"
DEFAULT_SERIES = DATA / "sunspots.csv"
DEFAULT_COLUMN = "SUNACTIVITY"


def default_corpus() -> str:
    """The standard-library corpus (see the module docstring)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = [(root / name).read_text(encoding="utf-8") for name in STDLIB_MODULES if (root / name).is_file()]
    if not parts:
        raise ValueError(
            f"task.path: the default corpus needs the Python standard library's sources, but none of "
            f"{', '.join(STDLIB_MODULES[:3])}, ... is under {root}; pass a UTF-8 text file as task.path"
        )
    return "".join(parts)[:DEFAULT_CORPUS_CHARS]


def _read_bytes(label: str, path: str) -> bytes:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{label}: expected an existing file, got {path!r} (no such file)")
    if not p.is_file():
        raise ValueError(f"{label}: expected a file, got {path!r} (not a regular file)")
    data = p.read_bytes()
    if not data:
        raise ValueError(f"{label}: expected a non-empty file, got {path!r} (0 bytes)")
    return data


def read_text(path: str, label: str = "task.path") -> str:
    """A UTF-8 text file's contents; a missing, empty or non-UTF-8 file is a ValueError."""
    data = _read_bytes(label, path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{label}: expected UTF-8 text, got {path!r} with a byte {data[e.start]:#04x} at offset {e.start} "
            f"that is not UTF-8; convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None


def read_column(path: str, column: str, label: str = "task.path") -> list[float]:
    """The numbers in ``column`` of a CSV file with a header row, in file order."""
    text = read_text(path, label)
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if not header:
        raise ValueError(f"{label}: expected a CSV file with a header row, got {path!r} with none")
    names = [h.strip() for h in header]
    if column not in names:
        raise ValueError(f"task.column: expected one of the columns of {os.path.basename(path)} ({', '.join(names)}), got {column!r}")
    j = names.index(column)
    values = []
    for line, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        cell = row[j].strip() if j < len(row) else ""
        try:
            value = float(cell)
        except ValueError:
            raise ValueError(f"{label}: expected a number in column {column!r}, got {cell!r} on line {line} of {path!r}") from None
        if not math.isfinite(value):  # float() reads "nan" and "inf"; one would poison the normalisation
            raise ValueError(f"{label}: expected a finite number in column {column!r}, got {cell!r} on line {line} of {path!r}")
        values.append(value)
    return values
