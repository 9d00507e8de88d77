"""Reading and writing the MiniMalloc benchmark CSV format (`id,lower,upper,size[,offset]`).

Bad input raises `UserError` with one line naming the file and line. The capacity comes from the
caller or else from the digits in the file name (`A.1048576.csv`).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from ir.errors import UserError
from ir.fileio import write_atomic
from passes.buffer_packing.model import Buffer, PackingInstance, PackingSolution

COLUMNS = ("id", "lower", "upper", "size")


def capacity_from_name(path: str | Path) -> int | None:
    """The number between dots in a file name, as in `A.1048576.csv`; None when there is none.

    >>> capacity_from_name("bench/A.1048576.csv"), capacity_from_name("input.csv")
    (1048576, None)
    """
    match = re.search(r"\.(\d+)\.csv$", Path(path).name)
    return int(match.group(1)) if match else None


def _int(text: str | None, column: str, where: str) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        raise UserError(f"{where}: column {column} must be an integer, got {text!r}") from None


def _parse_rows(rows: csv.DictReader, name: str) -> list[Buffer]:
    missing = [c for c in COLUMNS if c not in (rows.fieldnames or [])]
    if missing:
        raise UserError(f"{name}, line 1: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
    buffers: list[Buffer] = []
    seen: dict[str, int] = {}
    for row in rows:
        where = f"{name}, line {rows.line_num}"
        ident = (row["id"] or "").strip()
        if not ident:
            raise UserError(f"{where}: empty id")
        if ident in seen:
            raise UserError(f"{where}: duplicate id {ident} (first on line {seen[ident]})")
        seen[ident] = rows.line_num
        lower, upper, size = (_int(row[c], c, where) for c in ("lower", "upper", "size"))
        if upper <= lower:
            raise UserError(f"{where}: buffer {ident} has upper {upper} <= lower {lower}; lifetimes are [lower, upper)")
        if size < 0:
            raise UserError(f"{where}: buffer {ident} has negative size {size}")
        buffers.append(Buffer(ident, lower, upper, size))
    return buffers


def parse_csv(text: str, name: str = "<csv>", capacity: int | None = None) -> PackingInstance:
    """A packing instance from CSV text; UserError naming `name` and the line on bad input.

    >>> parse_csv("id,lower,upper,size\\nb1,0,3,4\\n", capacity=8).buffers
    (Buffer(id='b1', lower=0, upper=3, size=4),)
    """
    buffers = _parse_rows(csv.DictReader(io.StringIO(text)), name)
    if capacity is not None:
        if capacity < 0:
            raise UserError(f"{name}: capacity must be >= 0, got {capacity:,}")
        for b in buffers:
            if b.size > capacity:
                raise UserError(f"{name}: buffer {b.id} needs {b.size:,} bytes; capacity is {capacity:,}")
    return PackingInstance(tuple(buffers), capacity)


def read_csv(path: str | Path, capacity: int | None = None) -> PackingInstance:
    """Read `path`; the capacity is `capacity`, else the number in the file name, else None (minimise).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "tiny.16.csv"
    >>> _ = p.write_text("id,lower,upper,size\\nb1,0,3,4\\n")
    >>> read_csv(p).capacity
    16
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: cannot read it ({exc})") from None
    if capacity is None:
        capacity = capacity_from_name(file)
    return parse_csv(text, str(file), capacity)


def format_csv(instance: PackingInstance, solution: PackingSolution) -> str:
    """CSV text with columns id,lower,upper,size,offset in input order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*COLUMNS, "offset"])
    for b in instance.buffers:
        writer.writerow([b.id, b.lower, b.upper, b.size, solution.offsets[b.id]])
    return out.getvalue()


def write_csv(path: str | Path, instance: PackingInstance, solution: PackingSolution) -> Path:
    """Write the packing atomically (never a half-written file); returns the path written."""
    return write_atomic(path, format_csv(instance, solution))
