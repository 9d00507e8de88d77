"""Serving workloads: requests with arrival time, prompt tokens and output tokens.

Sources:
- trace CSVs with `num_prefill_tokens,num_decode_tokens` (and optionally `arrived_at` seconds and
  `hash_ids`), as in benchmarks/data/traces/ (Splitwise conversation trace, ShareGPT lengths), and timed
  traces in JSON lines (`.jsonl`: `timestamp` s, `input_length`, `output_length`, `hash_ids`: the format
  of vLLM's benchmark client `--dataset-name timed_trace` and of the Mooncake/Qwen traces); a bad row names
  its line (the formats: `cost_models.serving.trace_files`);
- built-in length distributions `chat`, `summarize`, `code`: log-normal prompt and output lengths
  with the means of `SERVING_MEANS` (chat 1024/256, summarize 4096/256, code 2048/512: assumptions
  in the spirit of the ShareGPT, arXiv-summarization and code workloads of Sarathi-Serve and
  DistServe) and a coefficient of variation of 1 (sigma = sqrt(ln 2)), clipped to [16, 8192] / [1, 2048];
- fixed lengths.
Shared prefixes (system prompts, multi-turn conversations): a request may carry `block_hashes`, one id per
`hash_block_tokens` tokens of its prompt (the last block may be partial), chained as in vLLM's automatic
prefix caching and the timed traces: two requests share their first k blocks of content exactly when their
first k ids agree. The simulator caches prompt blocks by these ids (`cost_models.serving.simulator`);
`cost_models.serving.prefixes` builds such workloads. Each workload also knows the longest request it can
hold (`context_tokens`: what the engine's max_model_len must admit), which bounds the KV cache an engine
needs (`simulator.kv_cache_tokens`).
Arrivals: Gamma inter-arrival times with mean 1/rate and coefficient of variation `cv` (shape
1/cv^2): cv = 1 is Poisson, cv > 1 burstier (the burstiness knob of DistServe's and Vidur's
generators). Everything is deterministic for a seed (numpy PCG64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cost_models.serving.trace_files import HASH_BLOCK_TOKENS, TRACE_MAX_TOKENS, csv_rows, jsonl_rows
from ir.errors import UserError

SERVING_MEANS = {"chat": (1024, 256), "summarize": (4096, 256), "code": (2048, 512)}
_LOGNORMAL_SIGMA = math.sqrt(math.log(2.0))  # cv = 1: sigma^2 = ln(1 + cv^2)
_PROMPT_MAX, _OUTPUT_MAX = 8192, 2048  # the distributions' clip bounds (tokens)


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival: arrival_s, prompt_tokens and output_tokens (>= 1) per request; optionally
    `block_hashes` (an object array: per request an int64 array of prefix ids, one per `hash_block_tokens`
    prompt tokens; None: no shared prefixes) and `context_tokens`, the longest request (prompt + output) of
    the workload it was drawn from (None: unknown)."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    name: str = "workload"
    block_hashes: np.ndarray | None = None
    hash_block_tokens: int = HASH_BLOCK_TOKENS
    context_tokens: int | None = None

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def rate(self) -> float:
        span = float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0
        return (len(self) - 1) / span if span > 0 else float("inf")

    def with_rate(self, rate: float) -> Workload:
        """The same requests with arrivals stretched so the mean rate is `rate` (shape kept).

        >>> w = Workload(np.array([0.0, 1.0, 2.0]), np.array([8, 8, 8]), np.array([2, 2, 2]))
        >>> w.with_rate(2.0).arrival_s.tolist()
        [0.0, 0.5, 1.0]
        """
        if not rate > 0:
            raise UserError(f"request rate must be positive, got {rate}")
        start = self.arrival_s[0] if len(self) else 0.0
        scale = self.rate / rate if math.isfinite(self.rate) else 1.0
        return replace(self, arrival_s=start + (self.arrival_s - start) * scale)

    def head(self, n: int) -> Workload:
        return self.select(np.arange(min(n, len(self))))

    def select(self, index: np.ndarray) -> Workload:
        hashes = None if self.block_hashes is None else self.block_hashes[index]
        return replace(self, arrival_s=self.arrival_s[index], prompt_tokens=self.prompt_tokens[index],
                       output_tokens=self.output_tokens[index], block_hashes=hashes)

    def prefix_chains(self) -> list[list[int]] | None:
        """Per request, one node id per full hash block of its prompt, such that two requests get the same node
        for block k exactly when their first k + 1 block ids agree (a trie over the id sequences: what a
        prefix cache can match); None without block hashes.

        >>> w = Workload(np.zeros(3), np.array([40, 40, 40]), np.ones(3, np.int64),
        ...              block_hashes=hash_lists([[1, 2, 3], [1, 2, 9], [5, 2, 3]]))
        >>> w.prefix_chains()
        [[0, 1], [0, 1], [2, 3]]
        """
        if self.block_hashes is None:
            return None
        trie: dict = {}
        chains = []
        for ids, prompt in zip(self.block_hashes, self.prompt_tokens.tolist()):
            node, chain = -1, []
            for block_id in ids[:prompt // self.hash_block_tokens].tolist():
                node = trie.setdefault((node, block_id), len(trie))
                chain.append(node)
            chains.append(chain)
        return chains

    def shared_prefix_tokens(self) -> np.ndarray:
        """Per request, the prompt tokens in whole hash blocks that an earlier request shares (the longest
        common prefix with any earlier request): what an unbounded prefix cache could skip.

        >>> w = Workload(np.zeros(2), np.array([40, 40]), np.ones(2, np.int64), block_hashes=hash_lists([[1, 2, 3], [1, 2, 9]]))
        >>> w.shared_prefix_tokens().tolist()
        [0, 32]
        """
        out = np.zeros(len(self), np.int64)
        chains = self.prefix_chains()
        if chains is None:
            return out
        seen: set = set()
        for i, chain in enumerate(chains):
            k = 0
            while k < len(chain) and chain[k] in seen:
                k += 1
            out[i] = k * self.hash_block_tokens
            seen.update(chain)
        return out


def hash_lists(lists) -> np.ndarray:
    """An object array of int64 arrays (the `block_hashes` of a Workload) from lists of ids.

    >>> [a.tolist() for a in hash_lists([[1, 2], [3]])]
    [[1, 2], [3]]
    """
    out = np.empty(len(lists), dtype=object)
    for i, ids in enumerate(lists):
        out[i] = np.asarray(ids, dtype=np.int64)
    return out


def arrivals(n: int, rate: float, cv: float = 1.0, seed: int = 0) -> np.ndarray:
    """`n` arrival times (s) with Gamma inter-arrivals of mean 1/rate and coefficient of variation cv.

    >>> a = arrivals(20000, 4.0, seed=1); round(float(len(a) / a[-1]), 1)
    4.0
    """
    if not rate > 0 or not cv > 0:
        raise UserError(f"arrival rate and burstiness (cv) must be positive, got {rate}, {cv}")
    rng = np.random.default_rng(seed)
    shape = 1.0 / (cv * cv)
    gaps = rng.gamma(shape, 1.0 / (rate * shape), size=n)
    return np.cumsum(gaps) - gaps[0]


def read_trace(path: str | Path, hash_block_tokens: int = HASH_BLOCK_TOKENS) -> Workload:
    """Load a trace: a CSV (`trace_files.write_trace`) or JSON lines (`.jsonl`, `trace_files.write_timed_trace`; hash ids of
    `hash_block_tokens`-token blocks: 16 for vLLM's timed_trace default, 512 for the Mooncake traces). Rows
    without an arrival time get 0 (pair them with `arrivals`).

    Raises UserError naming the file and line of the first bad row.
    """
    file = Path(path)
    rows = jsonl_rows(file) if file.suffix == ".jsonl" else csv_rows(file)
    if not rows:
        raise UserError(f"{file}: the trace has no requests")
    hashed = [r[4] is not None for r in rows]
    if any(hashed) and not all(hashed):
        raise UserError(f"{file}:{rows[hashed.index(False)][0]}: hash_ids missing (give them on every row or none)")
    for line, a, p, d, _ in rows:
        if max(p, d) > TRACE_MAX_TOKENS:
            raise UserError(f"{file}:{line}: token counts above {TRACE_MAX_TOKENS:,} are no request, got {p}, {d}")
        if p < 1 or d < 0 or not math.isfinite(a) or a < 0:
            raise UserError(f"{file}:{line}: token counts must be positive and arrival times >= 0, "
                            f"got {a}, {p}, {d}")
    arrival = np.array([r[1] for r in rows], dtype=float)
    prompt = np.array([r[2] for r in rows], dtype=np.int64)
    output = np.maximum(np.array([r[3] for r in rows], dtype=np.int64), 1)
    order = np.argsort(arrival, kind="stable")
    hashes = hash_lists([rows[i][4] for i in order]) if all(hashed) else None
    return Workload(arrival[order], prompt[order], output[order], file.stem, hashes, hash_block_tokens,
                    int((prompt + output).max()))


def lengths(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths of a built-in distribution (see the module docstring).

    >>> p, o = lengths("chat", 4000, seed=0); bool(900 < p.mean() < 1150 and 220 < o.mean() < 290)
    True
    """
    if kind not in SERVING_MEANS:
        raise UserError(f"unknown length distribution '{kind}'; use {', '.join(SERVING_MEANS)} or a trace .csv")
    mean_p, mean_o = SERVING_MEANS[kind]
    rng = np.random.default_rng(seed + 7919)
    mu = -_LOGNORMAL_SIGMA ** 2 / 2
    p = np.clip(np.rint(mean_p * rng.lognormal(mu, _LOGNORMAL_SIGMA, n)), 16, _PROMPT_MAX).astype(np.int64)
    o = np.clip(np.rint(mean_o * rng.lognormal(mu, _LOGNORMAL_SIGMA, n)), 1, _OUTPUT_MAX).astype(np.int64)
    return p, o


def make_workload(source: str, n: int, rate: float, cv: float = 1.0, seed: int = 0,
                  max_total: int | None = None) -> Workload:
    """`n` requests at `rate` req/s: lengths from a built-in name or a trace CSV (its own arrivals kept
    and rescaled to `rate` when it has them, else Gamma arrivals). `max_total` (the model's context):
    requests whose prompt + output exceed it are left out, as serving benchmarks filter their traces for
    the model (vLLM's benchmark_serving, DistServe); a distribution draws others in their place.

    >>> w = make_workload("chat", 100, rate=2.0); len(w), round(w.rate, 1)
    (100, 2.0)
    >>> w = make_workload("chat", 100, rate=2.0, max_total=2048); len(w), int((w.prompt_tokens + w.output_tokens).max()) <= 2048
    (100, True)
    """
    if n < 1:
        raise UserError(f"a workload needs at least one request, got {n}")
    longest = longest_request_tokens(source, max_total)
    if source in SERVING_MEANS:
        m = n
        while True:  # with nothing left out, exactly the unfiltered draw
            p, o = lengths(source, m, seed)
            if max_total:
                keep = p + o <= max_total
                p, o = p[keep], o[keep]
            if len(p) >= n or m >= 64 * n:
                break
            m *= 2
        if len(p) < n:
            raise UserError(f"too few '{source}' requests fit the model's context of {max_total} tokens (prompt + "
                            f"output); use a trace or fixed --input-len/--output-len within it")
        return Workload(arrivals(n, rate, cv, seed), p[:n], o[:n], source, context_tokens=longest).with_rate(rate)
    trace = read_trace(source)
    if max_total:
        keep = np.flatnonzero(trace.prompt_tokens + trace.output_tokens <= max_total)
        if not len(keep):
            raise UserError(f"{source}: no request fits the model's context of {max_total} tokens (prompt + output)")
        trace = trace.select(keep)
    if len(trace) < n:
        trace = _repeated(trace, n)
    trace = replace(trace.head(n), context_tokens=longest)
    if float(trace.arrival_s[-1]) <= 0.0:
        trace = replace(trace, arrival_s=arrivals(n, rate, cv, seed))
    return trace.with_rate(rate)


def _repeated(trace: Workload, n: int) -> Workload:
    """`trace` cycled to `n` requests, arrivals cleared (Gamma arrivals follow); each further cycle gets fresh hash
    ids, so a repeat shares content only as the original requests did, not with them."""
    idx = np.arange(n) % len(trace)
    hashes = None
    if trace.block_hashes is not None:
        span = 1 + max((int(ids.max()) for ids in trace.block_hashes if len(ids)), default=0)
        hashes = hash_lists([trace.block_hashes[i] + span * (k // len(trace)) for k, i in enumerate(idx)])
    return replace(trace, arrival_s=np.zeros(n), prompt_tokens=trace.prompt_tokens[idx],
                   output_tokens=trace.output_tokens[idx], block_hashes=hashes)


def longest_request_tokens(source: str, context: int | None = None) -> int:
    """The longest request (prompt + output tokens) `make_workload(source, ..., max_total=context)` can hold: a
    distribution's clip bounds, a trace's longest row, `fixed:I:O`'s I + O; at most `context` (requests over it
    are left out). What an engine's context limit (vLLM --max-model-len, SGLang --context-length) must admit.

    >>> longest_request_tokens("chat"), longest_request_tokens("chat", 8192), longest_request_tokens("fixed:128:16")
    (10240, 8192, 144)
    """
    if source.startswith("fixed:"):
        _, i, o = source.split(":")
        longest = int(i) + max(int(o), 1)
    elif source in SERVING_MEANS:
        longest = _PROMPT_MAX + _OUTPUT_MAX
    else:
        trace = read_trace(source)
        longest = int((trace.prompt_tokens + trace.output_tokens).max())
    return min(longest, context) if context else longest


def context_filter(source: str, context: int | None, n: int = 4096, seed: int = 0) -> tuple[int | None, float]:
    """(limit, share): `context` when some request of `source` can be longer (prompt + output), else None -
    nothing to leave out, so `make_workload` gives exactly the unfiltered requests (a distribution judged by
    its clip bounds); and the share of its requests over the limit (a distribution's first `n` draws, or the
    whole trace)."""
    if not context or source.startswith("fixed:"):
        return None, 0.0
    if source in SERVING_MEANS:
        if context >= _PROMPT_MAX + _OUTPUT_MAX:
            return None, 0.0
        p, o = lengths(source, n, seed)
    else:
        trace = read_trace(source)
        p, o = trace.prompt_tokens, trace.output_tokens
        if int((p + o).max()) <= context:
            return None, 0.0
    return context, float(np.mean(p + o > context))


def fixed(n: int, prompt: int, output: int, rate: float, cv: float = 1.0, seed: int = 0) -> Workload:
    """`n` requests of fixed lengths.

    >>> len(fixed(3, 128, 16, rate=1.0))
    3
    """
    return Workload(arrivals(n, rate, cv, seed), np.full(n, prompt, np.int64), np.full(n, max(output, 1), np.int64),
                    f"fixed-{prompt}-{output}", context_tokens=prompt + max(output, 1)).with_rate(rate)
