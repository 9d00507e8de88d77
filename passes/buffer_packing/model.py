"""Data types of static buffer packing and the checks that do not depend on a solver.

A buffer is live during the half-open time interval [lower, upper) and needs `size` bytes; a
packing gives every buffer an offset so that buffers live at the same time occupy disjoint address
ranges [offset, offset + size) below the capacity. This module owns the frozen value types, the
liveness lower bound (most bytes live at one time), the verifier and the time "sections" (maximal
intervals during which the set of live buffers does not change) that the solvers work on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["optimal", "feasible", "infeasible", "unknown"]


@dataclass(frozen=True)
class Buffer:
    """One buffer: live during [lower, upper) (upper exclusive), `size` bytes."""

    id: str
    lower: int
    upper: int
    size: int


@dataclass(frozen=True)
class PackingInstance:
    """Buffers to pack and the address capacity in bytes (None: minimise the peak instead).

    >>> inst = PackingInstance((Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 4)), capacity=8)
    >>> inst.liveness_lower_bound()
    8
    """

    buffers: tuple[Buffer, ...]
    capacity: int | None = None

    def liveness_lower_bound(self) -> int:
        """The most bytes live at any one time: no packing can have a smaller peak."""
        events: dict[int, int] = {}
        for b in self.buffers:
            events[b.lower] = events.get(b.lower, 0) + b.size
            events[b.upper] = events.get(b.upper, 0) - b.size
        live = best = 0
        for t in sorted(events):
            live += events[t]
            best = max(best, live)
        return best


@dataclass(frozen=True)
class PackingConfig:
    """Search options: wall-clock limit in seconds, random seed, CP-SAT worker threads."""

    time_limit_s: float = 10.0
    seed: int = 0
    workers: int = 1  # one worker keeps CP-SAT deterministic
    use_cpsat: bool = True  # let `pack` try the CP-SAT model when the search gives up on a small instance
    cpsat_max_buffers: int = 60  # the CP-SAT fallback is only tried up to this many buffers


@dataclass(frozen=True)
class PackingSolution:
    """Offsets by buffer id, the resulting peak (highest offset + size) and how they were found."""

    offsets: dict[str, int] = field(hash=False)
    peak_bytes: int
    lower_bound_bytes: int
    status: Status
    solve_time_s: float
    method: str

    @property
    def found(self) -> bool:
        """True when every buffer has an offset."""
        return self.status in ("optimal", "feasible")


def peak_of(instance: PackingInstance, offsets: dict[str, int]) -> int:
    """Highest address used (offset + size) over all buffers; 0 for no buffers."""
    return max((offsets[b.id] + b.size for b in instance.buffers), default=0)


def verify_packing(instance: PackingInstance, offsets: dict[str, int]) -> list[str]:
    """All violations of a packing, one message each; an empty list means the packing is valid.

    >>> inst = PackingInstance((Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 4)), capacity=8)
    >>> verify_packing(inst, {"a": 0, "b": 4})
    []
    >>> verify_packing(inst, {"a": 0, "b": 2})
    ['buffers a and b are both live at time 1 and overlap in addresses [2, 4)']
    """
    problems = []
    for b in instance.buffers:
        if b.id not in offsets:
            problems.append(f"buffer {b.id} has no offset")
        elif offsets[b.id] < 0:
            problems.append(f"buffer {b.id} has a negative offset {offsets[b.id]:,}")
        elif instance.capacity is not None and offsets[b.id] + b.size > instance.capacity:
            end = offsets[b.id] + b.size
            problems.append(f"buffer {b.id} ends at {end:,}, beyond the capacity {instance.capacity:,}")
    placed = sorted((b for b in instance.buffers if b.id in offsets), key=lambda b: (b.lower, b.id))
    active: list[Buffer] = []
    for b in placed:  # sweep over start times; `active` holds buffers still live at b.lower
        active = [a for a in active if a.upper > b.lower]
        lo, hi = offsets[b.id], offsets[b.id] + b.size
        for a in active:
            a_lo, a_hi = offsets[a.id], offsets[a.id] + a.size
            if a_lo < hi and lo < a_hi:
                problems.append(
                    f"buffers {a.id} and {b.id} are both live at time {b.lower} and overlap "
                    f"in addresses [{max(lo, a_lo)}, {min(hi, a_hi)})"
                )
        active.append(b)
    return problems


@dataclass(frozen=True)
class Sections:
    """Time split into sections: `ranges[i]` = (first, last + 1) section of buffer i."""

    times: tuple[int, ...]  # section k is [times[k], times[k + 1])
    ranges: tuple[tuple[int, int], ...]

    @property
    def count(self) -> int:
        return max(len(self.times) - 1, 0)


def sections_of(buffers: tuple[Buffer, ...] | list[Buffer]) -> Sections:
    """Sections of the distinct start/end times, and the section range of each buffer.

    >>> sections_of([Buffer("a", 0, 4, 1), Buffer("b", 2, 6, 1)]).ranges
    ((0, 2), (1, 3))
    """
    times = sorted({b.lower for b in buffers} | {b.upper for b in buffers})
    index = {t: k for k, t in enumerate(times)}
    return Sections(tuple(times), tuple((index[b.lower], index[b.upper]) for b in buffers))
