"""Files the planner writes: atomic, with the user's umask, fsynced, never through a symbolic link, no
temporary file left on SIGTERM or after a writer killed outright; codegen's verify gate in the Python API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import planner
from codegen import codegen
from ir.errors import UserError
from ir.fileio import Terminated, write_atomic
from planner.cli import main


def test_sigterm_during_a_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "p.json"

    def fsync_then_terminated(fd):  # SIGTERM arrives while the data are being flushed
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "fsync", fsync_then_terminated)
    with pytest.raises(Terminated):
        write_atomic(target, "{}")
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is only there while writing


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".p.json.{int(dead.stdout)}.0badc0de.tmp"  # what SIGKILL mid-write leaves
    stale.write_text("{")
    write_atomic(tmp_path / "p.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def test_mode_follows_the_umask_or_the_replaced_file(tmp_path):
    old = os.umask(0o077)
    try:
        assert write_atomic(tmp_path / "a", "x").stat().st_mode & 0o777 == 0o600
        assert write_atomic(tmp_path / "b.sh", "x", executable=True).stat().st_mode & 0o777 == 0o700
    finally:
        os.umask(old)
    (tmp_path / "c").write_text("old")
    (tmp_path / "c").chmod(0o644)
    assert write_atomic(tmp_path / "c", "new").stat().st_mode & 0o777 == 0o644


def test_symbolic_links_are_not_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"):
        write_atomic(tmp_path / "link", "x")
    assert victim.read_text() == "keep" and (tmp_path / "link").is_symlink()
    write_atomic(tmp_path / "link", "x", replace_symlink=True)  # only when asked
    assert not (tmp_path / "link").is_symlink() and victim.read_text() == "keep"


def test_failed_plan_with_a_report_writes_no_plan_file(tmp_path, capsys):
    out = tmp_path / "p.json"
    (tmp_path / "report_is_a_file").write_text("x")
    code = main(["plan", "tiny-llama", "--cluster", "2xcpu", "--workload", "train", "--batch", "8", "--seq-len", "32",
                 "-o", str(out), "--report", str(tmp_path / "report_is_a_file" / "r")])
    assert code == 2 and not out.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_python_codegen_verifies_unless_told_not_to(tmp_path):
    plan = planner.plan("tiny-llama", "2xcpu", "decode", batch=4, input_len=64)
    data = plan.to_dict()
    data["predicted"]["max_batch"] = 10 * data["predicted"]["max_batch"]
    with pytest.raises(UserError, match=r"does not verify.*predicted\.max_batch"):
        planner.codegen(data, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    with pytest.raises(UserError, match="only verified plans"):
        codegen(data, tmp_path / "no_verifier")
    written = planner.codegen(data, tmp_path / "unverified", verify=False)
    readme = next(p for p in written if p.name == "README.md").read_text()
    assert readme.startswith("> **NOT VERIFIED")
    assert {"README.md", "launch.sh", "run_plan.py"} <= {p.name for p in planner.codegen(plan, tmp_path / "ok")}
