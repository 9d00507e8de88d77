"""Serving workloads: requests with arrival time, prompt tokens and output tokens.

Sources:
- trace CSVs with `num_prefill_tokens,num_decode_tokens` (and optionally `arrived_at` seconds), as in
  ../shared/data/traces/ (Splitwise conversation trace, ShareGPT lengths); a bad row names its line;
- built-in length distributions `chat`, `summarize`, `code`: log-normal prompt and output lengths
  with the means of `SERVING_MEANS` (chat 1024/256, summarize 4096/256, code 2048/512: assumptions
  in the spirit of the ShareGPT, arXiv-summarization and code workloads of Sarathi-Serve and
  DistServe) and a coefficient of variation of 1 (sigma = sqrt(ln 2)), clipped to [16, 8192] / [1, 2048];
- fixed lengths.
Arrivals: Gamma inter-arrival times with mean 1/rate and coefficient of variation `cv` (shape
1/cv^2): cv = 1 is Poisson, cv > 1 burstier (the burstiness knob of DistServe's and Vidur's
generators). Everything is deterministic for a seed (numpy PCG64).
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ir.errors import UserError

SERVING_MEANS = {"chat": (1024, 256), "summarize": (4096, 256), "code": (2048, 512)}
_LOGNORMAL_SIGMA = math.sqrt(math.log(2.0))  # cv = 1: sigma^2 = ln(1 + cv^2)
_PROMPT_MAX, _OUTPUT_MAX = 8192, 2048  # the distributions' clip bounds (tokens)


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival: arrival_s, prompt_tokens and output_tokens (>= 1) per request."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    name: str = "workload"

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
        return Workload(start + (self.arrival_s - start) * scale, self.prompt_tokens, self.output_tokens, self.name)

    def head(self, n: int) -> Workload:
        return Workload(self.arrival_s[:n], self.prompt_tokens[:n], self.output_tokens[:n], self.name)

    def select(self, index: np.ndarray) -> Workload:
        return Workload(self.arrival_s[index], self.prompt_tokens[index], self.output_tokens[index], self.name)


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


def write_trace(path: str | Path, w: Workload) -> None:
    """Write `w` as a trace CSV that `read_trace` (and `--workload PATH.csv`) reads back."""
    rows = "".join(f"{a:.3f},{p},{o}\n" for a, p, o in zip(w.arrival_s, w.prompt_tokens, w.output_tokens))
    Path(path).write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" + rows)


TRACE_MAX_ROWS = 1_000_000  # input bounds of a trace file: requests, and tokens per request
TRACE_MAX_TOKENS = 2**24


def read_trace(path: str | Path) -> Workload:
    """Load a trace CSV; rows without `arrived_at` get arrival 0 (pair them with `arrivals`).

    Raises UserError naming the file and line of the first bad row.
    """
    file = Path(path)
    try:
        handle = file.open(newline="")
    except OSError as exc:
        raise UserError(f"cannot read trace {file}: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        if not {"num_prefill_tokens", "num_decode_tokens"} <= set(header):
            raise UserError(f"{file}:1: a trace needs columns num_prefill_tokens,num_decode_tokens "
                            f"(and optionally arrived_at), got {','.join(header)!r}")
        ip, io = header.index("num_prefill_tokens"), header.index("num_decode_tokens")
        ia = header.index("arrived_at") if "arrived_at" in header else None
        rows = []
        for line, row in enumerate(reader, start=2):
            if row:
                rows.append((line, row))
            if len(rows) > TRACE_MAX_ROWS:
                raise UserError(f"{file}: more than {TRACE_MAX_ROWS:,} requests; sample the trace")
    if not rows:
        raise UserError(f"{file}: the trace has no requests")
    arrival, prompt, output = np.zeros(len(rows)), np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64)
    for k, (line, row) in enumerate(rows):
        try:
            a = float(row[ia]) if ia is not None else 0.0
            p, d = int(float(row[ip])), int(float(row[io]))
        except (IndexError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
            raise UserError(f"{file}:{line}: expected numbers in arrived_at, num_prefill_tokens, num_decode_tokens, "
                            f"got {','.join(row)!r}") from None
        if max(p, d) > TRACE_MAX_TOKENS:
            raise UserError(f"{file}:{line}: token counts above {TRACE_MAX_TOKENS:,} are no request, got {','.join(row)!r}")
        if p < 1 or d < 0 or not math.isfinite(a) or a < 0:
            raise UserError(f"{file}:{line}: token counts must be positive and arrival times >= 0, got {','.join(row)!r}")
        arrival[k], prompt[k], output[k] = a, p, max(d, 1)
    order = np.argsort(arrival, kind="stable")
    return Workload(arrival[order], prompt[order], output[order], file.stem)


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
        return Workload(arrivals(n, rate, cv, seed), p[:n], o[:n], source).with_rate(rate)
    trace = read_trace(source)
    if max_total:
        keep = np.flatnonzero(trace.prompt_tokens + trace.output_tokens <= max_total)
        if not len(keep):
            raise UserError(f"{source}: no request fits the model's context of {max_total} tokens (prompt + output)")
        trace = trace.select(keep)
    if len(trace) < n:
        idx = np.arange(n) % len(trace)
        trace = Workload(np.zeros(n), trace.prompt_tokens[idx], trace.output_tokens[idx], trace.name)
    trace = trace.head(n)
    if float(trace.arrival_s[-1]) <= 0.0:
        trace = Workload(arrivals(n, rate, cv, seed), trace.prompt_tokens, trace.output_tokens, trace.name)
    return trace.with_rate(rate)


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
                    f"fixed-{prompt}-{output}").with_rate(rate)


def trace_lengths(path: str | Path) -> tuple[int, int]:
    """Mean prompt and output lengths of a trace CSV (what inference plans take as the workload's shape);
    a bad row names its line."""
    file = Path(path)
    try:
        with file.open(newline="") as handle:
            rows = list(itertools.islice(csv.DictReader(handle), TRACE_MAX_ROWS + 1))
    except OSError as exc:
        raise UserError(f"cannot read trace {file}: {exc.strerror}") from None
    if not rows or not {"num_prefill_tokens", "num_decode_tokens"} <= set(rows[0]):
        raise UserError(f"{file}: a trace needs columns num_prefill_tokens,num_decode_tokens")
    inputs, outputs = [], []
    for line, row in enumerate(rows, start=2):
        try:
            p, d = int(float(row["num_prefill_tokens"])), int(float(row["num_decode_tokens"]))
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
            raise UserError(f"{file}:{line}: num_prefill_tokens and num_decode_tokens must be numbers, "
                            f"got {row.get('num_prefill_tokens')!r}, {row.get('num_decode_tokens')!r}") from None
        if max(p, d) > TRACE_MAX_TOKENS or line > TRACE_MAX_ROWS + 1:
            raise UserError(f"{file}:{line}: more than {TRACE_MAX_ROWS:,} requests or {TRACE_MAX_TOKENS:,} tokens in "
                            f"one; sample the trace")
        if p < 1 or d < 0:
            raise UserError(f"{file}:{line}: token counts must be positive, got {p}, {d}")
        inputs.append(p)
        outputs.append(d)
    return round(sum(inputs) / len(inputs)), max(round(sum(outputs) / len(outputs)), 1)
