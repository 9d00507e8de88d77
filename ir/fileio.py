"""Atomic file output: write to a temporary file in the same folder, then rename over the target.

A crash or Ctrl-C never leaves a half-written plan, CSV or report behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ir.errors import UserError


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to `path` atomically; UserError if the folder is missing or not writable.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> write_atomic(p, "hi").read_text()
    'hi'
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"cannot write {target}: folder {folder} does not exist; create it first")
    if target.is_dir():
        raise UserError(f"cannot write {target}: it is a folder; give a file name")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8", "newline": "\n"})) as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
