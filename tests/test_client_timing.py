"""The arrivals a benchmark client really delivered (`planner.engines.client_timing`), and what a late, bursty client
does to the engine's queue in the simulator."""

import numpy as np
import pytest

from planner.engines.client_timing import as_delivered, lateness, send_times_s


def _trace(n: int = 40, rate: float = 10.0):
    from cost_models.serving.workload import Workload

    rng = np.random.default_rng(0)
    return Workload(np.arange(n) / rate, rng.integers(64, 512, n), rng.integers(8, 32, n), "trace")


def test_a_client_that_falls_behind_offers_the_engine_bursts_that_queue():
    """Requests 10-19 leave together, 0.9 s late (the client's loop was busy reading streams); the workload as
    delivered holds them at their send time, in send order, and the simulated engine queues them: their mean
    time to first token rises, the on-time requests' does not."""
    import planner
    from cost_models.cluster import parse_cluster
    from cost_models.estimate_context import make_context
    from cost_models.parallel_config import Options
    from cost_models.serving.iteration_cost import IterationCost
    from cost_models.serving.policies import Chunked
    from cost_models.serving.simulator import simulate_instance

    w = _trace()
    sent = 100.0 + w.arrival_s.copy()  # the client's clock: any origin
    sent[10:20] = 100.0 + w.arrival_s[19] + 0.005 * np.arange(10) / 10  # ten sends within 5 ms, at request 19's time
    result = {"start_times": sent.tolist()}

    late = lateness(w, result)
    assert late["max_ms"] == pytest.approx(900.0, abs=1.0)
    k = np.arange(10)
    assert late["mean_ms"] == pytest.approx(np.sum(1.9 + 0.0005 * k - (1.0 + 0.1 * k)) / 40 * 1e3)
    assert late["burst_share"] == pytest.approx(9 / 39) and late["trace_burst_share"] == 0.0  # 9 gaps under 1 ms

    d = as_delivered(w, result)
    assert np.all(np.diff(d.arrival_s) >= 0) and d.arrival_s[0] == 0.0
    assert sorted(d.prompt_tokens.tolist()) == sorted(w.prompt_tokens.tolist())  # the same requests
    assert d.prompt_tokens[10:20].tolist() == w.prompt_tokens[10:20].tolist()  # in the order they were sent

    g = planner.capture("tiny-llama", seq_len=512)
    cost = IterationCost(make_context(g, parse_cluster("1xA10G"), Options(input_len=512, dp=1)))
    on_time = simulate_instance(cost, Chunked(512), w)
    bursty = simulate_instance(cost, Chunked(512), d)
    ttft = lambda r, w, i: (r.first_token_s - w.arrival_s)[i]  # noqa: E731
    assert ttft(bursty, d, slice(10, 20)).mean() > 1.5 * ttft(on_time, w, slice(10, 20)).mean()
    assert ttft(bursty, d, slice(0, 10)) == pytest.approx(ttft(on_time, w, slice(0, 10)))


def test_send_times_must_cover_the_trace():
    with pytest.raises(ValueError, match="3 send times for a trace of 40 requests"):
        send_times_s(_trace(), {"start_times": [0.0, 0.1, 0.2]})
