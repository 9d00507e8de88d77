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

Engine defaults modelled (vLLM v1 and SGLang, both on by default):
- prefix caching (`prefix_cache.PrefixCache`): for workloads with shared prefixes (`Workload.block_hashes`),
  a request reuses the cached blocks of its longest cached prefix; its prefill starts after them (the chunk
  attends to them: `causal_pairs(q, cached)`), shared blocks are charged once, unreferenced ones are evicted
  LRU when the room is needed. Not for layered prefill (no engine runs it) or decode-only instances;
- the KV cache an engine is given: the cost model's free memory, at most what `max_num_seqs` requests of the
  workload's longest request can use plus vLLM's 1% watermark (`kv_cache_tokens`; the rest could only
  hold evictable prefixes), which is what the generated launch scripts pin (`--kv-cache-memory-bytes`);
- chunked prefill (vLLM v1's scheduler): decodes and prompt chunks share the token budget, so at most
  min(max_num_seqs, budget) requests run (vLLM requires max_num_batched_tokens >= max_num_seqs);
- the engine's KV block size (`engine_block_size`: an engine profile's, else vLLM's default, 128 on CPUs and
  16 on GPUs) and a fixed request latency outside the iterations (`cost.request_latency_s`: HTTP,
  tokenization, streaming back; from a measured engine profile, else 0): a request reaches the scheduler
  that long after it arrives.

Determinism: no randomness here; the workload carries the seed.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from cost_models.serving.iteration_cost import IterationCost
from cost_models.serving.policies import DecodeOnly, Layered
from cost_models.serving.prefix_cache import PrefixCache
from cost_models.serving.workload import Workload

BLOCK_SIZE = 16  # KV block tokens: vLLM's default on GPUs
CPU_BLOCK_SIZE = 128  # vLLM's default on CPUs (its CPU attention kernels need a multiple of 32)


def engine_block_size(cost) -> int:
    """The KV block size an engine uses with `cost`'s instance: the engine profile's, else vLLM's default for the
    device (128 on CPUs, 16 on GPUs)."""
    block = getattr(cost, "block_size", None)
    if block:
        return int(block)
    ctx = getattr(cost, "ctx", None)
    return CPU_BLOCK_SIZE if ctx is not None and ctx.device.kind == "cpu" else BLOCK_SIZE
WATERMARK = 0.01  # vLLM keeps 1% of the KV blocks free when admitting prompts


def kv_cache_tokens(capacity_tokens: int, max_num_seqs: int, context_tokens: int | None,
                    block_size: int = BLOCK_SIZE) -> int:
    """KV tokens an instance gives its engine: the free memory's `capacity_tokens`, at most `max_num_seqs`
    requests of `context_tokens` each in whole blocks plus the watermark (None: no bound).

    >>> kv_cache_tokens(10**7, 256, 1000), kv_cache_tokens(5000, 256, 1000)
    (260672, 5000)
    """
    if not context_tokens:
        return capacity_tokens
    blocks = max_num_seqs * -(-context_tokens // block_size)
    return min(capacity_tokens, (blocks + math.ceil(blocks * WATERMARK / (1 - WATERMARK)) + 1) * block_size)


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
    token_iterations: int = 0  # iterations that output at least one token (what vLLM's iteration_tokens counts)
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
    scheduled_s: np.ndarray | None = None  # per request: start of the iteration that first took it in (vLLM's stamp)
    prefix_hit_tokens: int = 0  # prompt tokens served from the prefix cache (not computed)
    prompt_tokens_admitted: int = 0  # prompt tokens of every admission (with recomputations)

    @property
    def prefix_hit_rate(self) -> float:
        """Share of admitted prompt tokens served from the prefix cache."""
        return self.prefix_hit_tokens / self.prompt_tokens_admitted if self.prompt_tokens_admitted else 0.0


class _Instance:
    """State of one instance during a run (kept in plain attributes for speed)."""

    def __init__(self, cost: IterationCost, policy, w: Workload, block_size: int, prefix_caching: bool):
        self.cost, self.policy, self.w = cost, policy, w
        self.arr = (w.arrival_s + getattr(cost, "request_latency_s", 0.0)).tolist()
        self.need = w.prompt_tokens.tolist()  # tokens to (re)compute before decoding
        self.prompt = w.prompt_tokens.tolist()
        self.left = (w.output_tokens - 1).tolist()  # decode steps after the first token
        self.total = [p + o for p, o in zip(self.need, w.output_tokens.tolist())]
        n = len(self.arr)
        self.first = [math.nan] * n
        self.scheduled = [math.nan] * n
        self.finish = [math.nan] * n
        self.bs = block_size
        limit = kv_cache_tokens(cost.kv_capacity_tokens, getattr(policy, "max_num_seqs", 0), w.context_tokens,
                                block_size)
        self.cap = (limit // block_size) * block_size
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
        self.done_pf: dict = {}  # request -> prompt tokens computed (or served from cache) so far
        self.ev_end: list = []  # end time of each iteration (or decode stretch)
        self.ev_gap: list = []  # its longest iteration
        self.active: list = []  # chunked prefill: requests with part of their prompt computed, in order
        self.chains = w.prefix_chains() if prefix_caching else None
        self.cache = PrefixCache(w.hash_block_tokens, block_size) if self.chains is not None else None
        self.held: dict = {}  # request -> cache nodes it holds
        self.shared = 0  # KV tokens held once in the cache minus those counted in the holders' contexts
        self.r = SimResult(w, np.empty(0), np.empty(0), cost.gpus, kv_capacity_blocks=self.cap // block_size,
                           power={"tdp_w": cost.tdp_w, "idle_w": cost.idle_w})

    # -- KV accounting -------------------------------------------------------------------------
    def charged(self, extra_tokens: int = 0, extra_requests: int = 0) -> int:
        return self.S + self.reserved + self.shared + extra_tokens + \
            (self.n + self.resident_prefill + extra_requests) * (self.bs - 1)

    def fits(self, tokens: int) -> bool:
        """Admission: the prompt's blocks plus one step of every running decode plus the watermark."""
        return self.charged(tokens + self.n, 1) + self.watermark <= self.cap

    def note_kv(self) -> None:
        charged = self.charged()
        blocks = -(-charged // self.bs)
        if blocks > self.r.max_kv_blocks:
            self.r.max_kv_blocks = blocks
        if self.cache is not None:
            self.cache.evict(self.cap - charged)

    # -- prefix cache --------------------------------------------------------------------------
    def admit(self, i: int, limit_tokens: int | None = None) -> bool:
        """Take waiting request i into prefill if its uncached prompt fits the KV cache (and `limit_tokens`,
        when given, bounds the tokens left to compute); its cached prefix counts as computed."""
        need, hit, new = self.need[i], 0, 0
        cache = self.cache
        if cache is not None:
            chain = self.chains[i]
            k = cache.hit_nodes(chain, self.prompt[i]) if chain else 0
            hit = k * cache.block_tokens
            new = cache.new_tokens(chain[:k]) if k else 0
        if (limit_tokens is not None and need - hit > limit_tokens) or not self.fits(need - hit + new):
            return False
        if hit:
            nodes = self.chains[i][:k]
            cache.hold(nodes)
            self.held[i] = nodes
            self.shared += new - hit
        self.reserved += need
        self.resident_prefill += 1
        self.done_pf[i] = hit
        if self.scheduled[i] != self.scheduled[i]:  # nan: first admission (a preempted request keeps its stamp)
            self.scheduled[i] = self.now
        self.r.prefix_hit_tokens += hit
        self.r.prompt_tokens_admitted += min(need, self.prompt[i])
        return True

    def prefilled(self, i: int) -> None:
        """Request i's prompt is computed: leave prefill and cache its prompt blocks."""
        self.reserved -= self.need[i]
        self.resident_prefill -= 1
        cache = self.cache
        if cache is not None and self.chains[i]:
            held = self.held.get(i, [])
            nodes = self.chains[i][len(held):cache.cacheable_nodes(self.chains[i], self.prompt[i])]
            if nodes:
                self.shared += cache.new_tokens(nodes) - len(nodes) * cache.block_tokens
                cache.hold(nodes)
                self.held[i] = held + nodes
        self.join(i, self.need[i])

    def release(self, i: int) -> None:
        nodes = self.held.pop(i, None)
        if nodes:
            before = self.cache.held_tokens
            self.cache.release(nodes)
            self.shared += self.cache.held_tokens - before + len(nodes) * self.cache.block_tokens

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
            if self.held:
                self.release(i)
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
            if self.held:
                self.release(i)

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
            if self.held:
                self.release(i)
            self.waiting.appendleft(i)
            self.r.preemptions += 1
            return True
        return False

    # -- iterations ----------------------------------------------------------------------------
    def account(self, t: float, tokens: int, expert_bytes: float, emits: bool = True) -> None:
        """One iteration of `t` seconds over `tokens` tokens; `emits`: it outputs a token (a decode, or a prompt's
        last chunk), unlike an iteration that only computes prompt chunks."""
        self.now += t
        self.ev_end.append(self.now)
        self.ev_gap.append(t)
        r = self.r
        r.busy_s += t
        r.compute_bound_s += min(self.cost.compute_bound(tokens), t)
        r.iterations += 1
        r.token_iterations += emits
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
        # attention grows by b per cached token until a sliding window fills (`until` tokens more): the
        # stretch stays within one linear piece (each step adds n cached tokens)
        b, until = cost.decode_attention_slope(n, self.S)
        if math.isfinite(until):
            k = max(1, min(k, int(until // n) + 1))
        base = a + cost.decode_attention(n, self.S)
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
        r.token_iterations += k
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
        """Nothing runs or waits: jump to the next arrival, plus the engine's wake-up after that idle time."""
        if self.nxt < len(self.arr):
            gap = self.arr[self.nxt] - self.now
            self.now = max(self.now, self.arr[self.nxt])
            if gap > 0:
                self.now += self.cost.idle_wakeup_s(gap)


def simulate_instance(cost: IterationCost, policy, w: Workload, block_size: int | None = None,
                      fast_forward: bool = True, prefix_caching: bool = True) -> SimResult:
    """Run `w` through one instance under `policy`; per-request first-token and finish times.
    `block_size`: the engine's KV block tokens (default: `engine_block_size(cost)`);
    `fast_forward=False` steps decode-only iterations one by one (the slow reference);
    `prefix_caching=False` turns the prefix cache off (vLLM --no-enable-prefix-caching).

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
    from cost_models.serving.schedulers import step_function

    caching = prefix_caching and not isinstance(policy, (Layered, DecodeOnly))
    st = _Instance(cost, policy, w, block_size or engine_block_size(cost), caching)
    st.fast_forward = fast_forward
    step = step_function(policy)
    total = len(st.arr)
    while st.done_count < total:
        st.arrive()
        if step(st):
            continue
        if st.n:
            st.decode_run(bound_by_arrival=not st.waiting)
        elif not st.waiting and not st.active:
            st.idle()
        else:  # waiting prompts cannot fit while nothing runs: only possible if the cache is tiny
            raise RuntimeError("serving simulator stalled: a waiting prompt cannot be admitted into an empty cache")
    st.r.first_token_s = np.array(st.first)
    st.r.finish_s = np.array(st.finish)
    st.r.scheduled_s = np.array(st.scheduled)
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
