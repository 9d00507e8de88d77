"""Atomic file output: write to a temporary file in the same folder, fsync it, then rename it over the target.

A crash, Ctrl-C or SIGTERM never leaves a half-written plan, CSV or report behind:
- the temporary file is removed on any exception, KeyboardInterrupt included, and on SIGTERM (while a write
  runs in the main thread, SIGTERM raises `Terminated` so that the cleanup runs, then the process exits 143);
- a temporary file left by a process that was killed outright (SIGKILL) is removed by the next write of the
  same file (its name carries the writer's pid; only files of pids no longer running are removed);
- the file gets the mode the user's umask gives a new file (0o666 & ~umask; 0o777 & ~umask for scripts), or
  keeps the mode of the file it replaces; its data reach the disk (fsync) before the rename, and the folder's
  entry after it;
- a target that is a symbolic link is refused (renaming over it would replace the link, not write where it
  points): the user removes it or names another path, or the caller passes `replace_symlink=True`.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import stat
import threading
from pathlib import Path

from ir.errors import UserError

_UMASK_LOCK = threading.Lock()


class Terminated(BaseException):
    """SIGTERM arrived while a file was being written (raised so that cleanup runs; exit status 143)."""

    exit_code = 128 + signal.SIGTERM


def current_umask() -> int:
    """The process umask (read by setting and restoring it, under a lock).

    >>> 0 <= current_umask() <= 0o777
    True
    """
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _mode_for(target: Path, executable: bool) -> int:
    try:
        info = target.stat()
        if stat.S_ISREG(info.st_mode):
            mode = stat.S_IMODE(info.st_mode)
            return mode | (0o111 & ~current_umask()) if executable else mode
    except OSError:
        pass
    return (0o777 if executable else 0o666) & ~current_umask()


def _check_target(target: Path, folder: Path, replace_symlink: bool) -> None:
    if not str(target).strip() or not target.name:
        raise UserError("the output file name is empty; give a file name")
    if target.is_symlink() and not replace_symlink:
        raise UserError(f"cannot write {target}: it is a symbolic link (to {os.readlink(target)}); remove it or "
                        f"give another path (the planner does not write through or replace links)")
    if not folder.is_dir():
        raise UserError(f"cannot write {target}: folder {folder} does not exist; create it first")
    if target.is_dir():
        raise UserError(f"cannot write {target}: it is a folder; give a file name")
    if target.exists() and not target.is_file():
        raise UserError(f"cannot write {target}: it is not a regular file")


def check_writable(path: str | Path, replace_symlink: bool = False) -> Path:
    """UserError (one line) unless `path` can be written by `write_atomic`: its folder exists and is writable,
    it is no folder, device or symbolic link. Lets a command refuse before doing any work.

    >>> check_writable("/nonexistent-folder/p.json")
    Traceback (most recent call last):
    ir.errors.UserError: cannot write /nonexistent-folder/p.json: folder /nonexistent-folder does not exist; create it first
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    _check_target(target, folder, replace_symlink)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {target}: folder {folder} is not writable")
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale(folder: Path, name: str) -> None:
    """Temporary files of this target left by writers that no longer run (killed outright)."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.(\d+)\.[0-9a-f]+\.tmp$")
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = pattern.match(entry.name)
            if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


@contextlib.contextmanager
def _sigterm_raises():
    """While writing in the main thread, SIGTERM raises `Terminated` (cleanup runs) instead of killing at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_atomic(path: str | Path, data: str | bytes, *, executable: bool = False,
                 replace_symlink: bool = False) -> Path:
    """Write `data` to `path` atomically (see the module docstring); UserError if the folder is missing or not
    writable, or the path is a folder or a symbolic link.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> write_atomic(p, "hi").read_text()
    'hi'
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    _check_target(target, folder, replace_symlink)
    _remove_stale(folder, target.name)
    payload = data if isinstance(data, bytes) else data.encode("utf-8")
    tmp = folder / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with _sigterm_raises():
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as exc:
            raise UserError(f"cannot write {target}: {exc.strerror}") from None
        try:
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(payload)
                    fh.flush()
                    os.fchmod(fh.fileno(), _mode_for(target, executable))
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except OSError as exc:
                raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    _sync_folder(folder)
    return target


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
