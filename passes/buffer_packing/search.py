"""Exact depth-first search for a packing within a fixed capacity (MiniMalloc's ideas, our code).

The search only builds *canonical* solutions: buffers are placed in non-decreasing offset order,
each at the lowest offset its already placed time-neighbours allow ("bottom-left"), ties broken by
a static preorder. Every packing can be compacted into one of these, so the search is complete.
Pruning, all sound (Moffitt, "MiniMalloc", ASPLOS 2023):
- spatial inference: in every time section, the remaining buffers must fit above both the current
  offset and the lowest offset any of them can still take;
- dominance: a buffer is never placed at or above the top some other unplaced buffer could reach
  by dropping into a gap below (that buffer would belong lower in the canonical order);
- decomposition: once no unplaced buffer crosses a section boundary, the two sides are solved
  independently, and each side's verdict is memoised by its buffers and their lowest offsets.
Buffers live during the whole horizon are stacked at the bottom first (a swap argument shows this
loses nothing). `solve_within` restarts the search round-robin over three static preorders with a
doubling node limit, so one unlucky order cannot eat the whole time budget.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import TypeVar

from passes.buffer_packing.heuristics import overlap_lists
from passes.buffer_packing.model import Buffer, sections_of

log = logging.getLogger(__name__)

T = TypeVar("T")
_SLICE = 256  # nodes a search runs before it gives the next one its turn  # nodes between two looks at the clock


class _Search:
    """One depth-first search over buffers relabelled 0..n-1 in preorder (lower index = preferred)."""

    def __init__(self, buffers: list[Buffer], ranges: list[tuple[int, int]], n_sections: int, capacity: int,
                 keys: str, ov: list[list[int]]):
        n = len(buffers)
        sizes = [b.size for b in buffers]
        self.sz, self.rng, self.cap, self.keys = sizes, ranges, capacity, keys
        self.width = [b.upper - b.lower for b in buffers]
        self.rank = list(range(n))  # preorder position of each buffer within its current partition
        self.secbufs: list[list[int]] = [[] for _ in range(n_sections)]  # buffers live in section s
        for i, (a, b) in enumerate(ranges):
            for s in range(a, b):
                self.secbufs[s].append(i)
        # ov[i]: buffers live at some time together with i
        self.ov = ov
        self.total0 = [sum(sizes[j] for j in bufs) for bufs in self.secbufs]
        self.cuts0 = [0] * max(n_sections - 1, 0)
        for a, b in ranges:
            for k in range(a, b - 1):
                self.cuts0[k] += 1
        self.total: list[int] = []  # unplaced bytes per section
        self.cuts: list[int] = []  # cuts[k]: unplaced buffers alive in both sections k and k + 1
        self.mo: list[int] = []  # lowest offset each buffer can still take (top of its placed neighbours)
        self.off: list[int] = []  # current offset, -1 while unplaced
        self.sol = [-1] * n  # last offset written for each buffer; complete after a success
        self.memo: dict[tuple, dict[int, int] | None] = {}
        self.nodes = 0

    def run(self) -> Generator[None, None, bool]:
        """The search as a generator: it yields every few hundred nodes so that several searches can
        take turns; its return value is True with `sol` filled, or False when no packing exists."""
        n = len(self.sz)
        self.total, self.cuts, self.mo, self.off = list(self.total0), list(self.cuts0), [0] * n, [-1] * n
        everyone = list(range(len(self.sz)))
        cut_points = [k + 1 for k, c in enumerate(self.cuts) if c == 0]
        return (yield from self._split(everyone, 0, len(self.secbufs), cut_points))

    def _node(self, unplaced: list[int], p0: int, p1: int, last_off: int, last_rank: int) -> Generator:
        """Place the next buffer of the partition of sections [p0, p1); True when all got placed.

        `unplaced` is in preorder; the last buffer placed had offset `last_off`, preorder `last_rank`."""
        if not unplaced:
            return True
        self.nodes += 1
        if self.nodes % _SLICE == 0:
            yield
        mo, sz, cap, rank = self.mo, self.sz, self.cap, self.rank
        min_top = min([mo[i] + sz[i] for i in unplaced])  # dominance: nobody may start at or above it
        # spatial inference, monotone part: every section's remaining bytes must fit above the new
        # offset (in the new buffer's own sections: above its top, which is the same inequality)
        highest = min(min_top - 1, cap - max(self.total[p0:p1]))
        cands = [i for i in unplaced if last_off <= mo[i] <= highest]
        cands.sort(key=mo.__getitem__)
        for c in cands:
            o = mo[c]
            if (o == last_off and rank[c] < last_rank) or o + sz[c] > cap:
                continue  # not canonical (equal offsets go in preorder), or does not fit
            found = yield from self._try(c, unplaced, p0, p1)
            if found:
                return True
            if found is None:
                return False  # c had no unplaced neighbour: any other choice would fail the same way
        return False

    def _try(self, c: int, unplaced: list[int], p0: int, p1: int) -> Generator:
        """Place buffer c at its lowest offset, check, recurse, undo; None: failed and c is "hatless"."""
        mo, off, total, sz = self.mo, self.off, self.total, self.sz
        o = mo[c]
        s_c = sz[c]
        h = o + s_c
        a, b = self.rng[c]
        off[c] = o
        self.sol[c] = o
        for k in range(a, b):
            total[k] -= s_c
        raised = []
        hatless = True
        for j in self.ov[c]:
            if off[j] < 0:
                hatless = False
                if mo[j] < h:
                    raised.append((j, mo[j]))
                    mo[j] = h
        found = False
        if self._witnesses_ok(a, b, h, raised):
            found = yield from self._descend(c, unplaced, p0, p1, o)
        for j, old in reversed(raised):
            mo[j] = old
        for k in range(a, b):
            total[k] += s_c
        off[c] = -1
        return None if hatless and not found else found

    def _witnesses_ok(self, a: int, b: int, h: int, raised: list[tuple[int, int]]) -> bool:
        """Every touched section still has an unplaced buffer low enough for the rest to fit above it."""
        rng, total, cap, mo, off, secbufs = self.rng, self.total, self.cap, self.mo, self.off, self.secbufs
        lo, hi = a, b
        for j, _ in raised:
            ja, jb = rng[j]
            if ja < lo:
                lo = ja
            if jb > hi:
                hi = jb
        for s in range(lo, hi):
            t = total[s]
            if t == 0 or (t + h <= cap and not a <= s < b):
                continue  # empty, unchanged, or a raised buffer can start at h
            thr = cap - t
            for k in secbufs[s]:
                if off[k] < 0 and mo[k] <= thr:
                    break
            else:
                return False
        return True

    def _descend(self, c: int, unplaced: list[int], p0: int, p1: int, o: int) -> Generator:
        """Recurse after placing c: split the partition where no unplaced buffer crosses any more."""
        a, b = self.rng[c]
        cuts = self.cuts
        cut_points = []
        for k in range(a, b - 1):
            cuts[k] -= 1
            if cuts[k] == 0 and p0 <= k < p1 - 1:
                cut_points.append(k + 1)
        rest = [j for j in unplaced if j != c]
        try:
            if cut_points:
                return (yield from self._split(rest, p0, p1, cut_points))
            return (yield from self._node(rest, p0, p1, o, self.rank[c]))
        finally:
            for k in range(a, b - 1):
                cuts[k] += 1

    def _preorder(self, members: list[int], p0: int, p1: int) -> None:
        """Sort a partition's buffers by the letters of `keys`, each descending, and record ranks:
        T = most unplaced bytes in one of the buffer's sections, W = lifetime, A = lifetime x size."""
        total, rng, sz, width, keys = self.total, self.rng, self.sz, self.width, self.keys

        def key(j: int) -> tuple[int, ...]:
            a, b = rng[j]
            value = {"T": max(total[max(a, p0):min(b, p1)]), "W": width[j], "A": width[j] * sz[j]}
            return (*(-value[k] for k in keys), j)

        members.sort(key=key)
        for r, j in enumerate(members):
            self.rank[j] = r

    def _split(self, rest: list[int], p0: int, p1: int, cut_points: list[int]) -> Generator:
        """Solve independent time slices one after the other; memoise each slice's verdict."""
        bounds = [p0, *cut_points, p1]
        groups: list[list[int]] = [[] for _ in range(len(bounds) - 1)]
        g = 0
        for j in sorted(rest, key=lambda j: self.rng[j][0]):
            while self.rng[j][0] >= bounds[g + 1]:
                g += 1
            groups[g].append(j)
        saved = [self.rank[j] for j in rest]  # sub-partitions re-rank their buffers; undo that after
        try:
            return (yield from self._solve_groups(groups, bounds))
        finally:
            for j, r in zip(rest, saved):
                self.rank[j] = r

    def _solve_groups(self, groups: list[list[int]], bounds: list[int]) -> Generator:
        for g, members in enumerate(groups):
            if not members:
                continue
            self._preorder(members, bounds[g], bounds[g + 1])
            key = (tuple(members), tuple(self.mo[j] for j in members))
            if key in self.memo:
                known = self.memo[key]
                if known is None:
                    return False
                for j, v in known.items():
                    self.sol[j] = v
                continue
            ok = yield from self._node(members, bounds[g], bounds[g + 1], 0, -1)
            self.memo[key] = {j: self.sol[j] for j in members} if ok else None
            if not ok:
                return False
        return True


_PREORDERS = ("TWA", "WAT", "TAW")  # static tie-break orders tried round-robin (MiniMalloc's three)


def _preorder(buffers: list[Buffer], ranges: list[tuple[int, int]], totals: list[int], keys: str) -> list[int]:
    """Buffer positions sorted by the letters of `keys`, each descending: T = most bytes live in any of
    the buffer's sections, W = lifetime, A = lifetime x size; ties by position."""
    def key(i: int) -> tuple[int, ...]:
        b = buffers[i]
        a, z = ranges[i]
        value = {"T": max(totals[a:z]), "W": b.upper - b.lower, "A": (b.upper - b.lower) * b.size}
        return (*(-value[k] for k in keys), i)

    return sorted(range(len(buffers)), key=key)


def _bottom_stack(buffers: list[Buffer]) -> tuple[list[Buffer], list[Buffer]]:
    """Split off buffers that overlap every other one: they can be stacked at offset 0 upward."""
    stack: list[Buffer] = []
    rest = list(buffers)
    while rest:
        first_end = min(b.upper for b in rest)
        last_start = max(b.lower for b in rest)
        full = [b for b in rest if b.lower < first_end and b.upper > last_start]
        if not full:
            break
        full.sort(key=lambda b: (-b.size, b.id))
        stack.extend(full)
        chosen = {id(b) for b in full}
        rest = [b for b in rest if id(b) not in chosen]
    return stack, rest


def solve_within(buffers: list[Buffer], capacity: int, deadline: float) -> tuple[str, dict[str, int]]:
    """Exact search for offsets below `capacity` until `deadline` (time.monotonic()).

    Returns ("feasible", offsets), ("infeasible", {}) when the search proved none exists, or
    ("unknown", {}) when the deadline came first.

    >>> import time
    >>> bufs = [Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 4), Buffer("c", 2, 4, 4)]
    >>> solve_within(bufs, 8, time.monotonic() + 5)
    ('feasible', {'b': 0, 'a': 4, 'c': 4})
    >>> solve_within(bufs, 7, time.monotonic() + 5)[0]
    'infeasible'
    """
    stack, rest = _bottom_stack(buffers)
    base = sum(b.size for b in stack)
    if base > capacity or any(b.size > capacity - base for b in rest):
        return "infeasible", {}
    offsets, top = {}, 0
    for b in stack:
        offsets[b.id], top = top, top + b.size
    if not rest:
        return "feasible", offsets
    secs = sections_of(rest)
    ranges = list(secs.ranges)
    totals = [0] * secs.count
    for b, (a, z) in zip(rest, ranges):
        for s in range(a, z):
            totals[s] += b.size
    searches = []
    ov = overlap_lists(rest)
    for keys in _PREORDERS:
        order = _preorder(rest, ranges, totals, keys)
        where = {i: pos for pos, i in enumerate(order)}
        ov_here = [sorted(where[j] for j in ov[i]) for i in order]
        search = _Search([rest[i] for i in order], [ranges[i] for i in order], secs.count, capacity - base, keys,
                         ov_here)
        searches.append((keys, order, search))
    status, found = _run_deep(lambda: _take_turns(searches, deadline), depth=4 * len(rest))
    if status == "feasible":
        offsets.update({b.id: base + off for b, off in zip(rest, found)})
        return "feasible", offsets
    return status, {}


def _take_turns(searches: list[tuple[str, list[int], _Search]], deadline: float) -> tuple[str, list[int]]:
    """Run the searches in equal turns of _SLICE nodes, in a fixed order (deterministic), until one
    finishes or the deadline passes; offsets come back in the caller's buffer order."""
    runs = [(keys, order, search, search.run()) for keys, order, search in searches]
    try:
        while time.monotonic() < deadline:
            for keys, order, search, gen in runs:
                try:
                    next(gen)
                except StopIteration as done:
                    log.debug("search with preorder %s: %s after %d nodes", keys, done.value, search.nodes)
                    if not done.value:
                        return "infeasible", []
                    found = [0] * len(order)
                    for pos, i in enumerate(order):
                        found[i] = search.sol[pos]
                    return "feasible", found
    finally:
        for *_, gen in runs:
            gen.close()
    return "unknown", []


_STACK_BYTES = 512 * 1024 * 1024  # address space reserved for the search thread (touched only as used)


def _run_deep(work: Callable[[], T], depth: int) -> T:
    """Run `work` in a thread with a big stack and a recursion limit above `depth` frames: the search
    recurses once per placed buffer (a few frames each), far deeper than Python's default allows."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    old_limit, old_stack = sys.getrecursionlimit(), threading.stack_size()
    sys.setrecursionlimit(max(old_limit, depth + 1000))
    try:
        threading.stack_size(_STACK_BYTES)
        thread = threading.Thread(target=target, name="buffer-packing-search")
        thread.start()
    finally:
        threading.stack_size(old_stack)
    try:
        thread.join()
    finally:
        sys.setrecursionlimit(old_limit)
    if errors:
        raise errors[0]
    return result[0]
