"""On-disk cache of captured graphs, so repeated commands and sweeps never re-capture.

Key: a hash of the graph format (`ir.serialize.GRAPH_FORMAT`), the planner, torch and transformers
versions, the model's identity (preset values
or the config file's bytes), batch, sequence length and dtype. Factories and in-memory modules
are never cached (their code can change without their name changing).

Location: `$AOT_PLANNER_CACHE` if set (``off`` disables the cache), else
`~/.cache/aot-planner/graphs`. Entries are written atomically; a corrupt entry is ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib import metadata
from pathlib import Path

from ir.graph import Graph

log = logging.getLogger(__name__)


def cache_dir() -> Path | None:
    setting = os.environ.get("AOT_PLANNER_CACHE", "")
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    return Path(setting) if setting else Path.home() / ".cache" / "aot-planner" / "graphs"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def model_identity(model) -> str | None:
    """A string naming exactly what would be captured, or None when it cannot be cached."""
    if not isinstance(model, str):
        return None
    ref = model.strip()
    path = Path(ref)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        from ir.config_checks import read_config_json

        read_config_json(path)  # the config's schema holds before any graph cached for it is used
        return "config:" + hashlib.sha256(path.read_bytes()).hexdigest()
    if ":" in ref or ref.endswith(".json"):
        return None
    from planner.presets import get_preset

    try:
        preset = get_preset(ref)
    except Exception:  # unknown names are reported by the capture path itself
        return None
    return f"preset:{preset.name}:{json.dumps(preset.values, sort_keys=True)}"


def cache_key(identity: str, batch: int, seq_len: int | None, dtype: str) -> str:
    from ir.serialize import GRAPH_FORMAT

    parts = [identity, str(batch), str(seq_len), dtype, GRAPH_FORMAT, _version("aot-planner"), _version("torch"),
             _version("transformers")]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def load(key: str) -> Graph | None:
    folder = cache_dir()
    if folder is None:
        return None
    path = folder / f"{key}.json"
    if not path.is_file():
        return None
    from ir.serialize import graph_from_dict

    try:
        return graph_from_dict(json.loads(path.read_text()))
    except Exception as exc:  # a stale or corrupt entry is just a miss
        log.info("ignoring cache entry %s: %s", path, exc)
        return None


def store(key: str, graph: Graph) -> None:
    folder = cache_dir()
    if folder is None:
        return
    from ir.fileio import write_atomic
    from ir.serialize import dumps

    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / f"{key}.json", dumps(graph))
    except Exception as exc:  # a read-only home must not break planning
        log.info("graph cache not written: %s", exc)
