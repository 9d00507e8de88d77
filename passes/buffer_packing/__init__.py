"""Static buffer packing: offsets for buffers with fixed lifetimes so that buffers live at the same time
never share an address (the "dynamic storage allocation" problem, as in MiniMalloc's benchmarks).

`pack(instance, config)` is the entry point: greedy heuristics, then an exact canonical search
(`search`), with a CP-SAT model (`cpsat`) as fallback for small instances. `verify_packing` checks
any answer. CSV in the MiniMalloc format: `read_csv`, `write_csv`.
"""

from passes.buffer_packing.cpsat import solve_cpsat
from passes.buffer_packing.csvio import capacity_from_name, parse_csv, read_csv, write_csv
from passes.buffer_packing.heuristics import best_fit, best_heuristic, greedy_by_size
from passes.buffer_packing.model import (
    Buffer,
    PackingConfig,
    PackingInstance,
    PackingSolution,
    peak_of,
    verify_packing,
)
from passes.buffer_packing.pack import pack
from passes.buffer_packing.search import solve_within

__all__ = [
    "Buffer",
    "PackingConfig",
    "PackingInstance",
    "PackingSolution",
    "best_fit",
    "best_heuristic",
    "capacity_from_name",
    "greedy_by_size",
    "pack",
    "parse_csv",
    "peak_of",
    "read_csv",
    "solve_cpsat",
    "solve_within",
    "verify_packing",
    "write_csv",
]
