"""Steady-state serving: a rate is sustainable only if the simulated queue does not grow
(cost_models.serving.metrics.queue_growth / is_sustainable)."""

import pytest

import planner
from cost_models.cluster import parse_cluster
from cost_models.estimate_context import make_context
from cost_models.parallel_config import Options
from cost_models.serving.iteration_cost import IterationCost
from cost_models.serving.metrics import attainment, capacity_rate, is_sustainable, queue_growth
from cost_models.serving.policies import PrefillFirst
from cost_models.serving.simulator import simulate_instance
from cost_models.serving.workload import fixed, make_workload


@pytest.fixture(scope="module")
def small():
    graph = planner.capture("tiny-llama", seq_len=256)
    return IterationCost(make_context(graph, parse_cluster("1xH100-SXM"), Options(input_len=256, dp=1)))


def test_below_capacity_the_queue_is_stable_and_above_it_grows(small):
    mu = capacity_rate(small, 200, 50)
    stable = simulate_instance(small, PrefillFirst(), fixed(2000, 200, 50, rate=0.5 * mu, seed=1))
    flooded = simulate_instance(small, PrefillFirst(), fixed(2000, 200, 50, rate=3.0 * mu, seed=1))
    assert is_sustainable(stable) and abs(queue_growth(stable)) < 0.02
    assert not is_sustainable(flooded)
    assert queue_growth(flooded) > 0.3  # every arrival second adds most of a second of waiting


@pytest.mark.slow
def test_a_rate_met_on_a_short_trace_can_be_unsustainable_on_a_long_one():
    """Issue #14: a goodput judged over ~30 s of arrivals did not hold over 4,000 requests. At the instance's
    capacity a 300-request run still meets the SLO (its queue has not grown yet) while 4,000 requests at the same
    rate miss it, and `is_sustainable` sees the growth; at 80% of it the long run is stable and meets it too."""
    graph = planner.capture("llama-3.1-70b", seq_len=8192)
    cost = IterationCost(make_context(graph, parse_cluster("8xH100-SXM"), Options(tp=8, dp=1, input_len=8192)))
    sample = make_workload("chat", 4000, rate=1.0, seed=0)
    mu = capacity_rate(cost, float(sample.prompt_tokens.mean()), float(sample.output_tokens.mean()))
    slo = {"ttft": 1.0, "tpot": 0.1}
    short = simulate_instance(cost, PrefillFirst(), make_workload("chat", 300, rate=mu, seed=0))
    long = simulate_instance(cost, PrefillFirst(), make_workload("chat", 4000, rate=mu, seed=0))
    assert attainment(short, slo) >= 0.9 and attainment(long, slo) < 0.9
    assert not is_sustainable(long) and queue_growth(long) > queue_growth(short)
    stable = simulate_instance(cost, PrefillFirst(), make_workload("chat", 4000, rate=0.8 * mu, seed=0))
    assert is_sustainable(stable) and attainment(stable, slo) >= 0.9
