"""Run a generated engine script's instance: read its arguments (`script_args`) and start the engine with them
(`VllmServer`), through vLLM's OpenAI server module (`python -m vllm.entrypoints.openai.api_server`, which takes
the arguments of `vllm serve`; the `vllm` console script of the CPU wheel stops at its own version lookup).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from ir.errors import UserError

log = logging.getLogger(__name__)


def script_args(script: str | Path, *argv: str, env: dict | None = None) -> list[str]:
    """What a generated script prints in its `args K [R]` / `router-args` modes, as an argument list.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "s.sh")
    >>> _ = open(path, "w").write('printf "%s\\\\n" --port "8000 x"')
    >>> script_args(path, "args", "0")
    ['--port', '8000 x']
    """
    proc = subprocess.run(["bash", str(script), *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)
    if proc.returncode:
        raise UserError(f"{script} {' '.join(argv)} failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout.splitlines()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def raise_group_priority(nice: int, pid: int | str = "self") -> bool:
    """Give the scheduling group of `pid` (its session's autogroup) the niceness `nice`. With the kernel's
    autogroup scheduling on (the default on desktop and many VM kernels) a process's own niceness only orders it
    within its session: a busy neighbour session still takes an equal share of the cores. Returns False where
    the kernel has no autogroups or the write is refused (lowering needs root)."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(int(nice)))
        return True
    except OSError:
        return False


class VllmServer:
    """A vLLM OpenAI server started from `args` (a generated instance's arguments, `--host/--port` included), in
    its own process group, logging to `log_path`; `with VllmServer(...) as server:` waits until it serves.

    `port` must be the one in `args` (the server is probed there on 127.0.0.1); `prefix` goes before the command
    (e.g. ["nice", "-n", "-10"]); `group_nice` also sets the niceness of the server's session group
    (`raise_group_priority`).
    """

    def __init__(self, python: str | Path, model: str | Path, args: list[str], port: int, log_path: str | Path,
                 env: dict | None = None, startup_s: float = 600.0, prefix: list[str] | None = None,
                 group_nice: int | None = None):
        self.group_nice = group_nice
        self.command = [*(prefix or []), str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                        *args]
        self.port, self.log_path, self.env, self.startup_s = port, Path(log_path), env or {}, startup_s
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> VllmServer:
        if _ready(f"{self.url}/v1/models"):
            raise UserError(f"port {self.port} already serves something; pick another port")
        handle = self.log_path.open("w")
        self.process = subprocess.Popen(self.command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, **self.env})
        handle.close()
        if self.group_nice is not None:
            raise_group_priority(self.group_nice, self.process.pid)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text().strip().splitlines()[-3:]
                raise UserError(f"vLLM exited with {self.process.returncode} while starting: {' | '.join(tail)}")
            if _ready(f"{self.url}/v1/models"):
                log.info("vLLM serves on %s", self.url)
                return self
            time.sleep(2.0)
        self.stop()
        raise UserError(f"vLLM did not come up within {self.startup_s:.0f} s (log: {self.log_path})")

    def stop(self) -> None:
        """SIGINT to the server's process group (the API server, its engine core and workers), SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=30)

    def __exit__(self, *exc) -> None:
        self.stop()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) each process of the server has used so far, by process name (the API
        server, its engine core, its workers: what vLLM names them), summed over processes of one name."""
        return process_tree_cpu_s(self.process.pid) if self.process is not None else {}


def process_tree_cpu_s(root: int) -> dict[str, float]:
    """CPU seconds of `root` and its descendants by process name, from /proc (empty where there is none).

    >>> cpu = process_tree_cpu_s(os.getpid()); isinstance(cpu, dict) and all(v >= 0 for v in cpu.values())
    True
    """
    children: dict[int, list[int]] = {}
    stats = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        stats[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    tree, frontier = {root}, [root]
    while frontier:
        found = [pid for pid in children.get(frontier.pop(), []) if pid not in tree]
        tree.update(found)
        frontier += found
    out: dict[str, float] = {}
    for pid in sorted(tree & stats.keys()):
        name, seconds = stats[pid]
        out[name] = out.get(name, 0.0) + seconds
    return out
