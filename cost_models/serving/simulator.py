"""Iteration-level discrete-event simulation of continuous batching on serving instances.

One instance runs iterations back to back while it has work (Orca/vLLM continuous batching); what an
iteration carries is the policy's (`policies`), its time is `IterationCost`'s. Events: arrivals, the
end of each iteration, completions. Stretches of decode-only iterations (no prompt can be admitted)
are advanced in one step: with n running sequences holding S cached tokens, step j costs
A + B (S + n + j n) (A: linear layers at n tokens, B: decode attention per cached token), so k steps
cost k (A + B (S + n)) + B n k (k - 1) / 2 and the step at which the next arrival lands solves a
quadratic; k is also bounded by the next completion and the KV capacity. This makes a run
O(arrivals + prefill iterations + completions), not O(decode steps).

KV cache: `kv_capacity_tokens` of the instance in blocks of `block_size` tokens (vLLM: 16). A resident
request holds ceil(tokens / block_size) blocks; the simulator charges the upper bound
(tokens + resident x (block_size - 1)) / block_size, so the exact vLLM block count never exceeds what
is charged. A prompt is admitted only when its blocks fit with one decode step of every running request
and vLLM's watermark of 1% of the blocks to spare (otherwise it waits, FCFS: no overtaking; the spare
room guarantees decode progress, so preemption cannot livelock);
when a decode step would overflow, the most recently admitted running request is preempted and
recomputed later (vLLM's default recompute preemption). A request whose prompt and output cannot fit
in an empty cache is rejected (its times are NaN), as vLLM rejects prompts longer than the cache.

Determinism: no randomness here; the workload carries the seed.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from cost_models.serving.iteration_cost import IterationCost, causal_pairs
from cost_models.serving.policies import DecodeOnly, Layered, PrefillFirst, group_sizes, groups_for
from cost_models.serving.workload import Workload

BLOCK_SIZE = 16


@dataclass
class SimResult:
    """Per-request times (s) and instance totals of one simulation."""

    workload: Workload
    first_token_s: np.ndarray
    finish_s: np.ndarray
    gpus: int
    busy_s: float = 0.0  # GPU-seconds / gpus of iterations
    compute_bound_s: float = 0.0
    iterations: int = 0
    preemptions: int = 0
    rejected: int = 0
    max_kv_blocks: int = 0
    kv_capacity_blocks: int = 0
    expert_bytes: float = 0.0
    kv_transfer_s: float = 0.0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    power: dict = field(default_factory=dict)  # {"tdp_w", "idle_w"} per GPU
    max_tbt_s: np.ndarray | None = None  # per request: longest gap between two of its output tokens


class _Instance:
    """State of one instance during a run (kept in plain attributes for speed)."""

    def __init__(self, cost: IterationCost, policy, w: Workload, block_size: int):
        self.cost, self.policy, self.w = cost, policy, w
        self.arr = w.arrival_s.tolist()
        self.need = w.prompt_tokens.tolist()  # tokens to (re)compute before decoding
        self.left = (w.output_tokens - 1).tolist()  # decode steps after the first token
        self.total = [p + o for p, o in zip(self.need, w.output_tokens.tolist())]
        n = len(self.arr)
        self.first = [math.nan] * n
        self.finish = [math.nan] * n
        self.bs = block_size
        self.cap = (cost.kv_capacity_tokens // block_size) * block_size
        self.watermark = (self.cap // 100 // block_size) * block_size  # vLLM: 1% of the blocks kept free
        self.now, self.step, self.nxt = 0.0, 0, 0
        self.heap: list = []  # (finish step, request)
        self.alive = [False] * n
        self.join_step = [0] * n
        self.join_ctx = [0] * n
        self.stack: list = []  # running requests in admission order (lazy)
        self.waiting: deque = deque()
        self.n = self.S = 0  # running decodes, their cached tokens
        self.reserved = self.resident_prefill = 0  # KV held by prompts being prefilled
        self.done_count = 0
        self.ev_end: list = []  # end time of each iteration (or decode stretch)
        self.ev_gap: list = []  # its longest iteration
        self.r = SimResult(w, np.empty(0), np.empty(0), cost.gpus, kv_capacity_blocks=self.cap // block_size,
                           power={"tdp_w": cost.tdp_w, "idle_w": cost.idle_w})

    # -- KV accounting -------------------------------------------------------------------------
    def charged(self, extra_tokens: int = 0, extra_requests: int = 0) -> int:
        return self.S + self.reserved + extra_tokens + (self.n + self.resident_prefill + extra_requests) * (self.bs - 1)

    def fits(self, tokens: int) -> bool:
        """Admission: the prompt's blocks plus one step of every running decode plus the watermark."""
        return self.charged(tokens + self.n, 1) + self.watermark <= self.cap

    def note_kv(self) -> None:
        blocks = -(-self.charged() // self.bs)
        if blocks > self.r.max_kv_blocks:
            self.r.max_kv_blocks = blocks

    # -- request state -------------------------------------------------------------------------
    def arrive(self) -> None:
        arr, nxt, now = self.arr, self.nxt, self.now
        while nxt < len(arr) and arr[nxt] <= now:
            if self.total[nxt] + self.bs + self.watermark > self.cap:
                self.r.rejected += 1
                self.done_count += 1
            else:
                self.waiting.append(nxt)
            nxt += 1
        self.nxt = nxt

    def join(self, i: int, ctx: int) -> None:
        """Request i holds `ctx` cached tokens and decodes its remaining steps."""
        if math.isnan(self.first[i]):
            self.first[i] = self.now
        if self.left[i] <= 0:
            self.finish[i] = self.now
            self.done_count += 1
            return
        self.alive[i] = True
        self.join_step[i], self.join_ctx[i] = self.step, ctx
        heapq.heappush(self.heap, (self.step + self.left[i], i))
        self.stack.append(i)
        self.n += 1
        self.S += ctx

    def complete(self) -> None:
        heap, step = self.heap, self.step
        while heap and heap[0][0] <= step:
            end, i = heapq.heappop(heap)
            if not self.alive[i] or end != self.join_step[i] + self.left[i]:
                continue  # preempted, or the entry of an earlier admission of a request preempted and re-admitted
            self.alive[i] = False
            self.S -= self.join_ctx[i] + step - self.join_step[i]
            self.n -= 1
            self.finish[i] = self.now
            self.done_count += 1

    def preempt(self) -> bool:
        """Evict the most recently admitted running request (recompute later); False if none."""
        while self.stack:
            i = self.stack.pop()
            if not self.alive[i]:
                continue
            ctx = self.join_ctx[i] + self.step - self.join_step[i]
            self.alive[i] = False
            self.left[i] = self.join_step[i] + self.left[i] - self.step
            self.S -= ctx
            self.n -= 1
            self.need[i] = ctx
            self.waiting.appendleft(i)
            self.r.preemptions += 1
            return True
        return False

    # -- iterations ----------------------------------------------------------------------------
    def account(self, t: float, tokens: int, expert_bytes: float) -> None:
        self.now += t
        self.ev_end.append(self.now)
        self.ev_gap.append(t)
        r = self.r
        r.busy_s += t
        r.compute_bound_s += min(self.cost.compute_bound(tokens), t)
        r.iterations += 1
        r.expert_bytes += expert_bytes

    def decode_run(self, bound_by_arrival: bool) -> None:
        """Advance k decode-only iterations at once (see the module docstring)."""
        while self.heap and not self.alive[self.heap[0][1]]:
            heapq.heappop(self.heap)
        n, cost = self.n, self.cost
        room = self.cap - self.charged()
        if room < n:
            self.preempt()
            return
        k = min(self.heap[0][0] - self.step, room // n) if self.fast_forward else 1
        a = cost.linear(n, n) + cost.overhead_s
        b = cost.decode_attention_per_token(n)
        base = a + b * (self.S + n)
        if bound_by_arrival and self.nxt < len(self.arr):
            dt = self.arr[self.nxt] - self.now
            q = b * n / 2.0
            lin = base - q
            k_arr = dt / lin if q <= 0 else (-lin + math.sqrt(lin * lin + 4 * q * dt)) / (2 * q)
            k = max(1, min(k, math.ceil(k_arr - 1e-12)))
        t = k * base + b * n * k * (k - 1) / 2.0
        self.now += t
        self.ev_end.append(self.now)
        self.ev_gap.append(base + b * n * (k - 1))  # the longest (last) step of the stretch
        r = self.r
        r.busy_s += t
        r.compute_bound_s += min(cost.compute_bound(n), base) * k
        r.iterations += k
        r.decode_tokens += n * k
        r.expert_bytes += k * cost.moe.bytes_read(n)
        self.step += k
        self.S += n * k
        self.note_kv()
        self.complete()

    def make_room(self) -> None:
        """Preempt until the running decodes can each add one token."""
        while self.n and self.charged(self.n) > self.cap and self.preempt():
            pass

    def idle(self) -> None:
        if self.nxt < len(self.arr):
            self.now = max(self.now, self.arr[self.nxt])


def _prefill_first(st: _Instance) -> bool:
    """One prefill-only iteration if a prompt can be admitted; False otherwise."""
    pol, w = st.policy, st.waiting
    batch, tokens, pairs = [], 0, 0.0
    while w and len(batch) + st.n < pol.max_num_seqs:
        i = w[0]
        need = st.need[i]
        if (batch and tokens + need > pol.max_batched_tokens) or not st.fits(need):
            break
        w.popleft()
        batch.append(i)
        tokens += need
        pairs += causal_pairs(need, 0)
        st.reserved += need
        st.resident_prefill += 1
    if not batch:
        return False
    st.note_kv()
    st.account(st.cost.time(prefill_tokens=tokens, prefill_pairs=pairs, prompts_done=len(batch)), tokens,
               st.cost.moe.bytes_read(tokens))
    st.r.prefill_tokens += tokens
    st.reserved -= tokens
    st.resident_prefill -= len(batch)
    for i in batch:
        st.join(i, st.need[i])
    return True


def _chunked(st: _Instance, active: list) -> bool:
    """One mixed iteration: all decodes plus prompt chunks up to the token budget."""
    pol, cost = st.policy, st.cost
    st.make_room()
    room = pol.budget - st.n
    chunks = []  # (request, chunk tokens, done before)
    k = 0
    while room > 0:
        if k < len(active):
            i = active[k]
            k += 1
        elif st.waiting and st.n + len(active) < pol.max_num_seqs and st.fits(st.need[st.waiting[0]]):
            i = st.waiting.popleft()
            active.append(i)
            k += 1
            st.reserved += st.need[i]
            st.resident_prefill += 1
            st.done_pf[i] = 0
        else:
            break
        q = min(st.need[i] - st.done_pf[i], room)
        chunks.append((i, q, st.done_pf[i]))
        room -= q
    if not chunks:
        return False
    n = st.n
    tokens = sum(q for _, q, _ in chunks)
    pairs = sum(causal_pairs(q, d) for _, q, d in chunks)
    kv_read = sum(d for _, _, d in chunks)
    finished = [i for i, q, d in chunks if q + d == st.need[i]]
    st.note_kv()
    t = cost.time(n, st.S, tokens, pairs, kv_read, len(finished))
    st.account(t, n + tokens, cost.moe.bytes_read(n + tokens))
    st.r.prefill_tokens += tokens
    st.r.decode_tokens += n
    if n:
        st.step += 1
        st.S += n
    for i, q, d in chunks:
        st.done_pf[i] = d + q
    for i in finished:
        active.remove(i)
        st.reserved -= st.need[i]
        st.resident_prefill -= 1
        st.join(i, st.need[i])
    st.complete()
    return True


def _layered_round(st: _Instance) -> bool:
    """Admit whole prompts and run their G layer-group iterations, each with all running decodes."""
    pol, cost = st.policy, st.cost
    batch, tokens, pairs = [], 0, 0.0
    while st.waiting and len(batch) + st.n < pol.max_num_seqs:
        i = st.waiting[0]
        need = st.need[i]
        if (batch and tokens + need > pol.max_prefill_tokens) or not st.fits(need):
            break
        st.waiting.popleft()
        batch.append(i)
        tokens += need
        pairs += causal_pairs(need, 0)
        st.reserved += need
        st.resident_prefill += 1
    if not batch:
        return False
    sizes = group_sizes(cost.num_blocks, pol.groups or groups_for(tokens, cost.num_blocks))
    moe = cost.moe
    moe_per_block = moe.moe_layers / max(cost.num_blocks, 1)
    st.note_kv()
    for g, blocks in enumerate(sizes):
        st.make_room()
        n = st.n
        t = cost.layered_time(n, st.S, tokens, pairs, blocks, g == 0, g == len(sizes) - 1, len(batch))
        experts = moe.bytes_read(n, (cost.num_blocks - blocks) * moe_per_block) + \
            moe.bytes_read(n + tokens, blocks * moe_per_block)
        st.account(t, n + tokens * blocks // max(cost.num_blocks, 1), experts)
        st.r.decode_tokens += n
        if n:
            st.step += 1
            st.S += n
        st.complete()
    st.r.prefill_tokens += tokens
    st.reserved -= tokens
    st.resident_prefill -= len(batch)
    for i in batch:
        st.join(i, st.need[i])
    return True


def _decode_only(st: _Instance) -> bool:
    """Disaggregated decode instance: arrived requests join with their transferred KV."""
    joined = False
    while st.waiting and st.n < st.policy.max_num_seqs and st.fits(st.need[st.waiting[0]]):
        i = st.waiting.popleft()
        st.join(i, st.need[i])
        joined = True
    return joined


def simulate_instance(cost: IterationCost, policy, w: Workload, block_size: int = BLOCK_SIZE,
                      fast_forward: bool = True) -> SimResult:
    """Run `w` through one instance under `policy`; per-request first-token and finish times.
    `fast_forward=False` steps decode-only iterations one by one (the slow reference).

    >>> import planner, numpy as np
    >>> from cost_models.cluster import parse_cluster
    >>> from cost_models.estimate_context import make_context
    >>> from cost_models.parallel_config import Options
    >>> from cost_models.serving.workload import fixed
    >>> from cost_models.serving.policies import Chunked
    >>> g = planner.capture("tiny-llama", seq_len=64)
    >>> cost = IterationCost(make_context(g, parse_cluster("1xH100-SXM"), Options(input_len=64, dp=1)))
    >>> r = simulate_instance(cost, Chunked(64), fixed(20, 100, 8, rate=50.0))
    >>> bool(np.all(r.finish_s >= r.first_token_s))
    True
    """
    st = _Instance(cost, policy, w, block_size)
    st.done_pf = {}
    st.fast_forward = fast_forward
    active: list = []
    step_fn = {PrefillFirst: _prefill_first, Layered: _layered_round, DecodeOnly: _decode_only}.get(type(policy))
    total = len(st.arr)
    while st.done_count < total:
        st.arrive()
        ran = _chunked(st, active) if step_fn is None else step_fn(st)
        if ran:
            continue
        if st.n:
            st.decode_run(bound_by_arrival=not st.waiting)
        elif not st.waiting and not active:
            st.idle()
        else:  # waiting prompts cannot fit while nothing runs: only possible if the cache is tiny
            raise RuntimeError("serving simulator stalled: a waiting prompt cannot be admitted into an empty cache")
    st.r.first_token_s = np.array(st.first)
    st.r.finish_s = np.array(st.finish)
    st.r.max_tbt_s = max_gaps(np.array(st.ev_end), np.array(st.ev_gap), st.r.first_token_s, st.r.finish_s)
    return st.r


def max_gaps(ends: np.ndarray, gaps: np.ndarray, first: np.ndarray, finish: np.ndarray) -> np.ndarray:
    """Per request, the longest iteration ending in (first, finish]: its worst time between tokens.
    A sparse table answers each range-max in O(1) (numpy, O(E log E) to build).

    >>> max_gaps(np.array([1., 2., 3.]), np.array([1., 5., 1.]), np.array([0.5, 2.0]), np.array([3.0, 3.0])).tolist()
    [5.0, 1.0]
    """
    out = np.full(len(first), np.nan)
    if not len(ends):
        return out
    lo = np.searchsorted(ends, np.nan_to_num(first, nan=np.inf), "right")
    hi = np.searchsorted(ends, np.nan_to_num(finish, nan=-np.inf), "right")
    ok = hi > lo
    table = [gaps]
    while (1 << len(table)) <= len(gaps):
        prev, half = table[-1], 1 << (len(table) - 1)
        table.append(np.maximum(prev[:-half], prev[half:]))
    length = hi[ok] - lo[ok]
    level = np.floor(np.log2(length)).astype(int)
    width = 1 << level
    result = np.empty(len(length))
    for lv in np.unique(level):
        m = level == lv
        a, b = lo[ok][m], hi[ok][m] - width[m]
        result[m] = np.maximum(table[lv][a], table[lv][b])
    out[ok] = result
    return out
