"""Shared output helpers for CLI commands: JSON on stdout, rich tables, human byte/FLOP units."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table


def emit_json(obj) -> None:
    """Print one JSON object on stdout (and nothing else there)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def console() -> Console:
    return Console(highlight=False, soft_wrap=False, width=max(Console().width, 120))


def quiet() -> bool:
    """Whether the command runs under `planner --quiet` (only errors on stderr: no progress display)."""
    import click

    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("quiet"))


def progress_console() -> Console:
    """Where progress bars and spinners go: stderr, so stdout keeps only the answer (tables, JSON)."""
    return Console(stderr=True, highlight=False)


def working(message: str):
    """A transient spinner on stderr for long work (a terminal only; nothing under --quiet or in pipes)."""
    import contextlib

    out = progress_console()
    if quiet() or not out.is_terminal:
        return contextlib.nullcontext()
    return out.status(message)


def table(title: str, columns: list[str], rows: list[list[str]], right_from: int = 1) -> Table:
    """A rich table; columns from index `right_from` on are right-aligned (numbers)."""
    t = Table(title=title, title_justify="left", header_style="bold")
    for i, col in enumerate(columns):
        t.add_column(col, justify="right" if i >= right_from else "left")
    for row in rows:
        t.add_row(*row)
    return t


def human(value: float, unit: str = "", base: int = 1000) -> str:
    """1.5e9 -> '1.50 G'; bytes use base 1024 with 'B' units ('GiB')."""
    prefixes = ["", "K", "M", "G", "T", "P", "E"]
    v = float(value)
    i = 0
    while abs(v) >= base and i < len(prefixes) - 1:
        v /= base
        i += 1
    suffix = (prefixes[i] + ("i" if base == 1024 and i else "")) + unit
    return f"{v:.2f} {suffix}".rstrip() if i or v != int(v) else f"{int(v)} {unit}".rstrip()


def output_path(path: str, flag: str):
    """A file the command will write, checked before any work: a non-empty name in an existing, writable folder,
    not a folder or a symbolic link (`ir.fileio.check_writable`); UserError (one line) otherwise."""
    from ir.errors import UserError
    from ir.fileio import check_writable

    if not str(path).strip():
        raise UserError(f"{flag} names no file; give the path to write")
    return check_writable(path)


def report_folder(path: str):
    """A folder the command will write into, checked before any work: it is a writable folder, or the nearest
    existing folder above it is (it will be created)."""
    import os
    from pathlib import Path

    from ir.errors import UserError

    if not str(path).strip():
        raise UserError("--report names no folder; give the folder to write the report into")
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_symlink() or not existing.is_dir():
        raise UserError(f"cannot write the report into {folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the report into {folder}: {existing} is not writable")
    return folder


def check_cluster_text(spec: str | None) -> None:
    """A --cluster shorthand or list holds counts the planner can read (a run of more than 9 digits is no device
    count); file paths are read as files."""
    import os
    import re

    from ir.errors import UserError

    if spec is None or spec.lower().endswith((".yaml", ".yml")) or os.sep in spec:
        return
    from cost_models.cluster import MAX_DEVICES

    if re.search(r"\d{10,}", spec):
        raise UserError(f"cannot read cluster {spec[:60]!r}: a count of ten or more digits is far above the "
                        f"{MAX_DEVICES:,} devices the planner accepts")
