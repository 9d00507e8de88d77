"""When vLLM's benchmark client really sent a timed trace's requests, against the trace's own timestamps.

The client replays a trace on its own clock (`--self-timed`) from one asyncio event loop, which also reads every
running request's token stream. On a host whose cores it shares with the engine (this project's 2-core machine:
the engine's worker owns one core, its engine core, its API server and the client share the other), that loop
falls behind at high request rates and sends requests late, then several at once: measured at 12 req/s on the
sessions trace of `benchmarks/bench_vllm_real.py`, 5-19% of the requests left within 1 ms of another (0.6% in
the trace) and they left 8-82 ms late on average, varying run to run. The engine then queues a burst the trace
never held, and its time to first token rises with the client's lateness (20.6 ms at 8 ms mean lateness, 34.7 ms
at 82 ms, same requests, same engine).

`send_times_s` reads the client's own record of each send (`start_times` in its saved detailed result), `lateness`
summarises it, and `as_delivered` is the workload as the engine received it: the same requests at the times they
were sent, in the order they were sent. A prediction of the engine is judged on what it was offered; the
prediction for the trace as written is the planner's for a client that keeps time.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cost_models.serving.workload import Workload

BURST_S = 1e-3  # two sends closer than this left together


def send_times_s(w: Workload, result: dict) -> np.ndarray:
    """Per request of `w` (in the trace's order, as the client saves its results), when the client sent it, in
    seconds from its first send."""
    sent = np.asarray(result["start_times"], dtype=float)
    if len(sent) != len(w):
        raise ValueError(f"the client's result has {len(sent)} send times for a trace of {len(w)} requests")
    return sent - sent.min()


def lateness(w: Workload, result: dict) -> dict[str, float]:
    """How late the client sent `w`'s requests (each send against its trace time, both from the first request;
    the earliest is 0), in ms: mean, p90 and max; and the share of sends within `BURST_S` of the previous one, sent
    and in the trace.

    >>> w = Workload(np.array([0.0, 0.1, 0.2, 0.3]), np.full(4, 8), np.full(4, 2))
    >>> {k: round(v, 3) for k, v in lateness(w, {"start_times": [5.0, 5.1, 5.3, 5.3]}).items()}
    {'mean_ms': 25.0, 'p90_ms': 70.0, 'max_ms': 100.0, 'burst_share': 0.333, 'trace_burst_share': 0.0}
    """
    sent = send_times_s(w, result)
    late = sent - (w.arrival_s - w.arrival_s[0])
    late = late - late.min()

    def bursts(times: np.ndarray) -> float:
        return float(np.mean(np.diff(np.sort(times)) < BURST_S)) if len(times) > 1 else 0.0

    return {"mean_ms": float(late.mean() * 1e3), "p90_ms": float(np.percentile(late, 90) * 1e3),
            "max_ms": float(late.max() * 1e3), "burst_share": bursts(sent), "trace_burst_share": bursts(w.arrival_s)}


def as_delivered(w: Workload, result: dict) -> Workload:
    """`w` as the client delivered it: each request at its send time (from the first send), in send order.

    >>> w = Workload(np.array([0.0, 0.1, 0.2]), np.array([8, 16, 32]), np.array([2, 3, 4]))
    >>> d = as_delivered(w, {"start_times": [1.0, 1.35, 1.3]})
    >>> [round(t, 3) for t in d.arrival_s.tolist()], d.prompt_tokens.tolist()
    ([0.0, 0.3, 0.35], [8, 32, 16])
    """
    sent = send_times_s(w, result)
    order = np.argsort(sent, kind="stable")
    return replace(w.select(order), arrival_s=sent[order])
