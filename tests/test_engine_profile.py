"""Serving iteration times from a measured engine profile (cost_models.serving.engine_profile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import planner
from cost_models.cluster import parse_cluster
from cost_models.serving.deployment import CostCache, Deployment, simulate
from cost_models.serving.engine_profile import load_engine_profile
from cost_models.serving.iteration_cost import causal_pairs
from cost_models.serving.metrics import attainment, latencies, measured_result
from cost_models.serving.policies import Disaggregated, Layered, PrefillFirst
from cost_models.serving.simulator import simulate_instance
from cost_models.serving.trace_files import write_trace
from cost_models.serving.workload import Workload, fixed
from ir.errors import UserError


@pytest.fixture(scope="module")
def graph():
    return planner.capture("opt-13b", seq_len=2048)


@pytest.fixture(scope="module")
def vllm(graph):
    return CostCache(graph, parse_cluster("4xA100-SXM-80GB"), engine=load_engine_profile("vllm-0.2-a100-80gb"))


def test_profiled_iterations_follow_the_published_fits(vllm):
    cost = vllm.get(1, 1)
    overhead = 9.9  # iteration_overhead_ms of the profile file
    a, b, c = 23.62736227, 0.15054561, 8.65348374e-06  # vLLM v0.2, OPT-13B, tp 1 (the profile file)
    prompts = [1024, 300]
    pairs = sum(causal_pairs(n, 0) for n in prompts)
    expected = a + b * sum(prompts) + c * sum(n * n for n in prompts)
    assert cost.time(prefill_tokens=sum(prompts), prefill_pairs=pairs, prompts_done=2) * 1e3 == pytest.approx(expected + overhead)
    small, large = (19.562534173678987, 0.0004941120550644942, 0.05060571771697455), \
        (16.8386301447433, 0.00043897725301957885, 0.14000261546561776)
    for batch, (a, b, c) in ((10, small), (94, small), (95, large), (300, large)):
        context = 700 * batch
        expected = a + b * (context + batch) + c * batch + overhead
        assert cost.time(decodes=batch, decode_kv=context) * 1e3 == pytest.approx(expected)
    assert cost.time() == 0.0  # an idle engine runs no iteration
    # everything that is not an iteration time stays the cost model's
    assert cost.kv_capacity_tokens == CostCache(vllm.graph, vllm.cluster).get(1, 1).kv_capacity_tokens > 0


def test_decode_stretches_equal_step_by_step_iterations_under_a_profile(vllm):
    w = fixed(60, 500, 40, rate=6.0)
    fast = simulate_instance(vllm.get(2, 1), PrefillFirst(), w)
    slow = simulate_instance(vllm.get(2, 1), PrefillFirst(), w, fast_forward=False)
    np.testing.assert_allclose(fast.finish_s, slow.finish_s, rtol=1e-9)
    np.testing.assert_allclose(fast.first_token_s, slow.first_token_s, rtol=1e-9)


def test_faster_engine_profile_gives_lower_latency(graph):
    cluster = parse_cluster("4xA100-SXM-80GB")
    w = fixed(200, 800, 100, rate=4.0)
    means = {}
    for name in ("vllm-0.2-a100-80gb", "distserve-a100-80gb"):
        costs = CostCache(graph, cluster, engine=load_engine_profile(name))
        r = simulate(costs, Deployment(Disaggregated(1, 1, prefill_tp=2)), w)
        means[name] = float(np.mean(r.first_token_s - w.arrival_s))
    assert means["distserve-a100-80gb"] < means["vllm-0.2-a100-80gb"]


def test_profile_errors_are_one_clear_line(tmp_path, graph, vllm):
    with pytest.raises(UserError, match="not found; give a YAML file or one of distserve-a100-80gb"):
        load_engine_profile("sglang-9")
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: x\nmodels: {opt-13b: {1: {prefill: [1, 2]}}}\n")
    with pytest.raises(UserError, match=r"bad\.yaml: not an engine profile"):
        load_engine_profile(bad)
    with pytest.raises(UserError, match=r"has opt-13b at tp \[1, 2, 4\] with pp 1; asked for tp=8"):
        load_engine_profile("vllm-0.2-a100-80gb").fit_for("opt-13b", 8)
    with pytest.raises(UserError, match="has no model 'llama-3-8b'"):
        CostCache(graph, parse_cluster("1xA100-SXM-80GB"), engine=load_engine_profile("distserve-a100-80gb"),
                  model="llama-3-8b").get(1, 1)
    with pytest.raises(UserError, match="layered prefill needs per-layer times"):
        simulate(vllm, Deployment(Layered(), tp=1), fixed(4, 100, 4, rate=1.0))


def test_serving_plan_with_an_engine_profile_is_recorded_verified_and_retargeted():
    p = planner.plan("opt-13b", "2xA100-SXM-80GB", "chat", engine_profile="vllm-0.2-a100-80gb")
    data = p.to_dict()
    assert data["inputs"]["engine_profile"] == "vllm-0.2-a100-80gb"
    assert {tp for tp, _ in data["solver"]["layouts_considered"]} <= {1, 2, 4}
    assert "layered" not in data["solver"]["policies_considered"]
    assert p.verify() == []
    model = planner.plan("opt-13b", "2xA100-SXM-80GB", "chat").to_dict()
    assert "engine_profile" not in model["inputs"] and model["fingerprint"] != data["fingerprint"]
    assert data["predicted"]["ttft_s"] != model["predicted"]["ttft_s"]  # vLLM v0.2's kernels, not the roofline's
    again = p.retarget(rate=1.0)
    assert again.to_dict()["inputs"]["engine_profile"] == "vllm-0.2-a100-80gb" and again.verify() == []


@pytest.mark.parametrize("args, says", [
    (["--cluster", "2xH100-SXM"], "was measured on A100-SXM-80GB; the cluster has H100-SXM"),
    (["--cluster", "2xA100-SXM-80GB", "--workload", "train"], "training plans use the cost model"),
    (["--cluster", "2xA100-SXM-80GB", "--workload", "decode"], "'decode' plans use the cost model"),
])
def test_engine_profile_misuse_is_one_line_exit_2(args, says, capsys):
    from planner.cli import main

    assert main(["plan", "opt-13b", "--engine-profile", "vllm-0.2-a100-80gb", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("spec, says", [
    ("colocated=vllm-0.2-a100-80gb,decode=distserve-a100-80gb", "'decode=distserve-a100-80gb' is not KIND=PROFILE"),
    ("colocated=vllm-0.2-a100-80gb,colocated=distserve-a100-80gb", "(each once)"),
    ("colocated=,disaggregated=distserve-a100-80gb", "'colocated=' is not KIND=PROFILE"),
    ("colocated=vllm-0.2-a100-80gb,disaggregated=nope", "engine profile 'nope' not found"),
    ("vllm-0.2-a100-80gb,distserve-a100-80gb", "give one profile (a name or a YAML file), or KIND=PROFILE pairs"),
])
def test_per_kind_engine_spec_errors_are_one_line_exit_2(spec, says, capsys):
    from planner.cli import main

    assert main(["plan", "opt-13b", "--cluster", "2xA100-SXM-80GB", "--engine-profile", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_each_kind_of_deployment_on_its_own_engine(tmp_path):
    """colocated=vLLM v0.2, disaggregated=DistServe (what one would deploy for each), on DistServe's ShareGPT
    requests: colocated vLLM is chosen under TPOT 0.1 s, disaggregation under 0.05 s (prefill-first stalls
    then break the tighter TPOT); the plan records the spec, verify re-prices both engines, retarget keeps it."""
    trace = tmp_path / "distserve_sharegpt.csv"
    write_trace(trace, _measured("distserve_opt13b_sharegpt_vllm_3rps.csv")[0])
    spec = "colocated=vllm-0.2-a100-80gb,disaggregated=distserve-a100-80gb"
    chosen = {}
    for tpot in (0.1, 0.05):
        p = planner.plan("opt-13b", "4xA100-SXM-80GB", str(trace), slo={"ttft": 0.2, "tpot": tpot}, engine_profile=spec)
        data = p.to_dict()
        assert data["inputs"]["engine_profile"] == spec and p.verify() == []
        assert "context_tokens" not in data["decision"]["serving"]  # every request fits OPT's 2,048 positions
        chosen[tpot] = data["decision"]["serving"]["policy"]
        if tpot == 0.05:
            assert p.retarget(rate=1.0).to_dict()["inputs"]["engine_profile"] == spec
    assert chosen[0.1] != "disaggregated" and chosen[0.05] == "disaggregated"
    vllm_only = planner.plan("opt-13b", "4xA100-SXM-80GB", str(trace), slo={"ttft": 0.2, "tpot": 0.05},
                             engine_profile="vllm-0.2-a100-80gb").to_dict()
    mixed = planner.plan("opt-13b", "4xA100-SXM-80GB", str(trace), slo={"ttft": 0.2, "tpot": 0.05},
                         engine_profile=spec).to_dict()
    # the disaggregated deployment runs on DistServe's faster engine, not vLLM's
    assert mixed["predicted"]["goodput_per_gpu"] > vllm_only["predicted"]["goodput_per_gpu"]


_MEASURED = Path(__file__).resolve().parents[1] / "benchmarks" / "data"


_SLO = {"ttft": 0.2, "tpot": 0.1}


def _measured(name: str):
    """DistServe's measured run: its workload, the measured share meeting TTFT 200 ms / TPOT 100 ms, mean TPOT ms."""
    rows = np.loadtxt(_MEASURED / name, delimiter=",", skiprows=1)
    w = Workload(rows[:, 0], rows[:, 1].astype(np.int64), rows[:, 2].astype(np.int64), name)
    measured = measured_result(w, rows[:, 3] / 1e3, rows[:, 4] / 1e3)
    return w, attainment(measured, _SLO), float(rows[rows[:, 2] > 1, 4].mean())


@pytest.mark.parametrize("name", ["distserve_opt13b_sharegpt_distserve_3rps.csv",
                                  "distserve_opt13b_sharegpt_distserve_6rps.csv"])
def test_distserve_measured_runs_replayed_per_request(graph, name):
    """DistServe's published runs (prefill tp 2 + decode tp 1, OPT-13B, their own issue times): the share of
    requests meeting TTFT 200 ms / TPOT 100 ms and the mean TPOT as measured (the 6 req/s run fitted the
    profile's iteration overhead; the 3 req/s run is held out)."""
    dist = CostCache(graph, parse_cluster("4xA100-SXM-80GB"), engine=load_engine_profile("distserve-a100-80gb"))
    w, measured_ok, measured_tpot = _measured(name)
    r = simulate(dist, Deployment(Disaggregated(1, 1, prefill_tp=2)), w)
    assert attainment(r, _SLO) == pytest.approx(measured_ok, abs=0.03)
    tpot = latencies(r)[1]
    assert np.nanmean(tpot) * 1e3 == pytest.approx(measured_tpot, rel=0.10)


def test_vllm_tp1_baseline_misses_90_percent_as_measured(vllm):
    """The paper's colocated baseline (vLLM v0.2, tp 1) misses 90% attainment already at 1 req/s, in the
    measured run and in the replay (long prompts cannot prefill in 200 ms at tp 1)."""
    w, measured_ok, _ = _measured("distserve_opt13b_sharegpt_vllm_1rps.csv")
    r = simulate(vllm, Deployment(PrefillFirst(max_batched_tokens=16384, max_num_seqs=1024)), w)
    assert measured_ok < 0.9 and attainment(r, _SLO) < 0.9
    assert attainment(r, {"ttft": 0.4, "tpot": 0.1}) >= 0.9  # twice the TTFT SLO is met: prefill time, not load


def test_a_request_after_idle_time_pays_the_measured_wake_up(vllm):
    """An engine profile's idle wake-up (max x (1 - exp(-idle / tau)), measured by `planner calibrate --engine vllm`'s
    `idle` loads) delays the first iteration of a request that finds the instance idle, by what its idle time
    gives; back-to-back work pays nothing."""
    from dataclasses import replace as copy_with

    from cost_models.serving.engine_profile import ProfiledIterationCost, idle_wakeup_ms

    plain = vllm.get(1, 1)
    woken = ProfiledIterationCost(plain.base, plain.fit, plain.overhead_s * 1e3, None, plain.request_latency_s * 1e3,
                                  (6.0, 150.0))
    w = Workload(np.array([0.0, 2.0, 2.3]), np.full(3, 200, np.int64), np.full(3, 2, np.int64), "spaced")
    a, b = simulate_instance(plain, PrefillFirst(), w), simulate_instance(woken, PrefillFirst(), w)
    idle = [w.arrival_s[k] - b.finish_s[k - 1] for k in (1, 2)]  # idle time of the engine that wakes up
    extra = (b.first_token_s - a.first_token_s) * 1e3
    assert extra[0] == 0.0  # the first request finds a fresh engine: no idle time before it
    assert extra[1] == pytest.approx(idle_wakeup_ms(idle[0] * 1e3, 6.0, 150.0)) and extra[1] > 5.9
    assert extra[2] == pytest.approx(idle_wakeup_ms(idle[1] * 1e3, 6.0, 150.0), rel=1e-6) and 3.0 < extra[2] < 5.9
    back_to_back = copy_with(w, arrival_s=np.zeros(3))
    assert np.allclose(simulate_instance(woken, PrefillFirst(), back_to_back).first_token_s,
                       simulate_instance(plain, PrefillFirst(), back_to_back).first_token_s)
    assert plain.idle_wakeup_s(1.0) == 0.0 and vllm.graph is not None


@pytest.mark.parametrize("url, says", [("http://127.0.0.1:9", "Connection refused"), ("notaurl", "unknown url type")])
def test_calibrating_an_engine_that_is_not_there_is_one_line_exit_2(url, says, capsys, tmp_path, monkeypatch):
    """`planner calibrate --engine vllm` against no server: one line naming the URL and the way out, nothing written
    (the vLLM environment is faked by an interpreter path: the server is asked before the client runs)."""
    from planner.cli import main

    code = main(["calibrate", "--engine", "vllm", "--url", url, "--model", "tiny-llama", "--model-name", "tiny-llama",
                 "--vllm-python", "/usr/bin/python3", "-o", str(tmp_path / "p.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"cannot reach a vLLM server at {url}" in err[0] and says in err[0]
    assert not (tmp_path / "p.yaml").exists()


def test_calibration_decode_rows_read_token_bursts_as_iterations_not_as_free_ones():
    """A front end that falls behind streams tokens in chunks: inter-token gaps of one long wait and then
    microseconds. The decode row must still be the iteration time (the sum over a burst divided among its tokens),
    not the median gap (microseconds, which once fitted a profile with no decode cost at all)."""
    from planner.engines.calibrate import calibration_loads, rows_from

    load = next(x for x in calibration_loads(quick=True, context=1024) if x["kind"] == "decode"
                and x["max_concurrency"] == 16)
    w, step = load["workload"], 0.004
    rng = np.random.default_rng(0)
    itls = []
    for _ in range(len(w)):  # 47 gaps: every 3 tokens come in one chunk, plus two slow prefill iterations
        gaps = []
        while len(gaps) < int(w.output_tokens[0]) - 1:
            gaps += [3 * step * rng.uniform(0.95, 1.05), 2e-6, 3e-6]
        gaps[10], gaps[20] = 0.05, 0.04
        itls.append(gaps[: int(w.output_tokens[0]) - 1])
    lat = [0.01 + sum(g) for g in itls]
    result = {"itls": itls, "ttfts": [0.01] * len(w), "latencies": lat, "output_lens": [int(w.output_tokens[0])] * len(w)}
    (row,) = rows_from([load], [result], 16, 2048)
    assert row.measured_s == pytest.approx(step, rel=0.05)
    assert row.sequences == 16
    # every request's tokens in one chunk at its end: nothing times the iterations, so no row at all
    out = int(w.output_tokens[0])
    chunk = {"itls": [[2e-6] * (out - 1)] * len(w), "ttfts": [0.2] * len(w), "latencies": [0.2 + 1e-4] * len(w),
             "output_lens": [out] * len(w)}
    assert rows_from([load], [chunk], 16, 2048) == []


def test_calibration_separates_the_client_path_from_the_engines_own_first_token_time(tmp_path):
    """The engine's /metrics count a first token from its arrival in the engine; the client's TTFT also holds the
    HTTP exchange. Calibration keeps that difference (median over the one-at-a-time first-token loads) in the
    profile as `client_path_ms`, loads without engine metrics give none, and the profile reads it back."""
    import yaml

    from cost_models.serving.engine_fit import fit_rows
    from planner.engines.calibrate import calibration_loads, client_path_from, engine_mean_s, profile_document, rows_from

    loads = [x for x in calibration_loads(quick=True, context=1024) if x["kind"] in ("prefill", "prefix", "decode")]
    rng = np.random.default_rng(1)
    results, path_s = [], 0.006
    for load in loads:
        w = load["workload"]
        engine = 0.004 + 2e-5 * w.prompt_tokens.astype(float)
        client = engine + path_s + rng.uniform(-5e-4, 5e-4, len(w))
        out = int(w.output_tokens[0])
        results.append({"ttfts": client.tolist(), "itls": [[0.003] * (out - 1)] * len(w), "output_lens": [out] * len(w),
                        "latencies": (client + 0.003 * (out - 1)).tolist(),
                        "engine_metrics": {"vllm:time_to_first_token_seconds": [float(engine.sum()), float(len(w))]}})
    assert engine_mean_s(results[0], "vllm:time_to_first_token_seconds") == pytest.approx(
        float(np.mean(0.004 + 2e-5 * loads[0]["workload"].prompt_tokens)))
    assert client_path_from(loads, results) == pytest.approx(1e3 * path_s, abs=0.5)
    assert client_path_from(loads, [{k: v for k, v in r.items() if k != "engine_metrics"} for r in results]) is None

    from dataclasses import replace

    fit = replace(fit_rows(rows_from(loads, results, 16, 2048)), client_path_ms=client_path_from(loads, results))
    file = tmp_path / "engine.yaml"
    file.write_text(yaml.safe_dump(profile_document(fit, "m", "cpu", 16, "rows.csv", "test")))
    assert load_engine_profile(file).client_path_ms == pytest.approx(fit.client_path_ms)
    assert load_engine_profile("vllm-0.32-cpu").client_path_ms == 0.0  # measured before the split: none claimed


def test_held_out_mixed_loads_score_the_fit_on_prompts_arriving_beside_decodes(tmp_path):
    """The held-out `mixed B P` loads: B decoders running while prompts arrive one at a time. Their rows price a
    prompt's TTFT as half a decode iteration of B (in flight at arrival) + its chunk iteration with the B decodes
    at the decoders' context then, and the decoders' time per token as decode iterations with the prompts' work
    spread over their tokens; they are never fitted, only scored, and they land in the rows file and the profile."""
    import csv

    import yaml

    from cost_models.serving.engine_fit import FitResult
    from cost_models.serving.engine_profile import IterationFit
    from planner.engines.calibrate import (
        calibration_loads,
        held_out_errors,
        held_out_rows,
        mixed_load,
        profile_document,
        rows_from,
        write_rows,
    )

    it = IterationFit(fixed_ms=2.5, per_token_ms=0.02, per_kilo_pair_ms=0.03, per_kilo_kv_token_ms=0.2,
                      per_sequence_ms=0.05)
    latency_ms = 5.0

    def iteration_ms(tokens, pairs, kv, sequences):  # the profile's iteration, written out independently
        return (it.fixed_ms + it.per_token_ms * tokens + it.per_kilo_pair_ms * pairs / 1e3
                + it.per_kilo_kv_token_ms * kv / 1e3 + it.per_sequence_ms * sequences)

    decoders, prompt = 4, 256
    w = mixed_load(decoders, prompt, context=1276)
    assert len(w) == decoders + 6 and int(w.output_tokens[0]) == 600 and w.prompt_tokens[-1] == prompt
    assert (w.arrival_s[:decoders] == 0).all() and (np.diff(w.arrival_s[decoders:]) > 0).all()
    out = int(w.output_tokens[0])
    first = 0.05  # the decoders' first tokens, after their prefill
    step = iteration_ms(decoders, 0, decoders * (64 + out / 2), decoders) / 1e3
    ttfts, starts, latencies, itls = [first] * decoders, [0.0] * decoders, [], [[step] * (out - 1)] * decoders
    prompt_ms = []
    for a in w.arrival_s[decoders:]:
        context = 64 + 1 + (a - first) / step
        dec = iteration_ms(decoders, 0, decoders * context, decoders)
        chunk = iteration_ms(prompt + decoders, causal_pairs(prompt, 0), decoders * context, decoders + 1)
        prompt_ms.append(latency_ms + 0.5 * dec + chunk)
        starts.append(float(a))
        ttfts.append(prompt_ms[-1] / 1e3)
        itls.append([step])
    extra = 6 / (out - 1) * iteration_ms(prompt, causal_pairs(prompt, 0), 0, 2) - 6 / (out - 1) * it.fixed_ms
    tpot_ms = iteration_ms(decoders, 0, decoders * (64 + out / 2), decoders) + extra
    latencies = [first + tpot_ms / 1e3 * (out - 1)] * decoders + [t + step for t in ttfts[decoders:]]
    result = {"start_times": starts, "ttfts": ttfts, "latencies": latencies, "itls": itls,
              "output_lens": w.output_tokens.tolist()}
    load = {"kind": f"mixed {decoders} {prompt}", "workload": w, "max_concurrency": None}
    rows = held_out_rows([load], [result], budget=2048)
    assert [row.kind for row in rows] == ["mixed_ttft", "mixed_tpot"]
    fit = FitResult(it, latency_ms, {})
    assert fit.predict_s(rows[0]) == pytest.approx(rows[0].measured_s, rel=0.01)
    assert rows[0].measured_s == pytest.approx(float(np.median(prompt_ms)) / 1e3)
    assert fit.predict_s(rows[1]) == pytest.approx(rows[1].measured_s, rel=0.01)
    errors = held_out_errors(fit, rows)
    assert errors["all"]["rows"] == 2 and errors["all"]["max_abs_rel_error"] < 0.01
    slower = FitResult(IterationFit(it.fixed_ms * 1.2, *list(it.as_dict().values())[1:]), latency_ms, {})
    assert held_out_errors(slower, rows)["all"]["mean_rel_error"] > 0.05  # a wrong fit shows on held-out rows

    # never fitted: rows_from skips the mixed loads, which calibration_loads adds within the context
    assert rows_from([load], [result], 16, 2048) == []
    kinds = [x["kind"] for x in calibration_loads(quick=True, context=1276)]
    assert [k for k in kinds if k.startswith("mixed")] == ["mixed 4 256", "mixed 4 1024", "mixed 16 256", "mixed 16 1024"]
    # prompts sent after the decoders finished (a starved client) or decoder streams in bursts: left out
    late = {**result, "start_times": starts[:decoders] + [s + 5.0 for s in starts[decoders:]]}
    assert held_out_rows([load], [late], 2048) == []
    bursts = {**result, "itls": [[0.00001] * (out - 1)] * len(w)}
    assert held_out_rows([load], [bursts], 2048) == []
    # a held-out load with a failed request (a reset connection) is left out; the fitted loads still fit
    assert held_out_rows([load], [{**result, "failed": 1}], 2048) == []
    assert rows_from([load], [{**result, "failed": 1}], 16, 2048) == []

    from dataclasses import replace

    fitted = replace(fit, held_out=tuple(rows), held_out_errors=errors)
    write_rows(tmp_path / "rows.csv", list(rows[:1]), fitted)
    written = list(csv.DictReader((tmp_path / "rows.csv").open()))
    assert [r["fitted"] for r in written] == ["True", "False", "False"]
    document = profile_document(fitted, "m", "cpu", 16, "rows.csv", "test")
    assert document["fit"]["held_out_errors"]["all"]["rows"] == 2
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(document))
    assert load_engine_profile(tmp_path / "p.yaml").fit_for("m", 1).mixed.fixed_ms == pytest.approx(2.5)


def test_calibration_passes_have_their_own_content_and_a_fit_spans_them():
    """Two calibration passes (say before and after a long benchmark): the second pass's prompts share no hash id
    with the first's (nothing of it is cached yet), the idle wake-up pools each gap's requests over the passes, and
    a fit over both passes lies between the fits of each, so a machine that slowed by 20% between them is priced
    at its speed over the whole window."""
    from planner.engines.calibrate import FIRST_ID, PASS_IDS, calibration_loads, fit_calibration, idle_wakeup_from

    ids = [{int(i) for load in calibration_loads(quick=True, context=1276, first_id=FIRST_ID + k * PASS_IDS)
            for hashes in load["workload"].block_hashes for i in hashes} for k in (0, 1)]
    assert not ids[0] & ids[1] and max(ids[0]) < FIRST_ID + PASS_IDS <= min(ids[1])

    def results(loads, slow: float):
        out = []
        for load in loads:
            w = load["workload"]
            if load["kind"].startswith("idle"):
                gap_ms = 1e3 * float(load["kind"].split()[1])
                ttft = np.full(len(w), slow * (0.010 + 0.006 * (1 - np.exp(-gap_ms / 150.0))))
            else:
                ttft = slow * (0.004 + 2e-5 * w.prompt_tokens.astype(float))
            out_len = int(w.output_tokens[0])
            itl = slow * (0.003 + 1e-5 * (load["max_concurrency"] or 1))
            out.append({"ttfts": ttft.tolist(), "itls": [[itl] * (out_len - 1)] * len(w),
                        "output_lens": [out_len] * len(w), "latencies": (ttft + itl * (out_len - 1)).tolist()})
        return out

    kinds = ("prefill", "prefix", "decode", "idle")
    passes = []
    for k, slow in ((0, 1.0), (1, 1.2)):
        loads = [x for x in calibration_loads(quick=True, context=1276, first_id=FIRST_ID + k * PASS_IDS)
                 if x["kind"].startswith(kinds)]
        passes.append((loads, results(loads, slow)))
    fits = [fit_calibration(loads, res, 16, 2048)[0] for loads, res in passes]
    both, rows = fit_calibration(passes[0][0] + passes[1][0], passes[0][1] + passes[1][1], 16, 2048)
    assert len(rows) == 2 * len(fit_calibration(*passes[0], 16, 2048)[1])
    for row in rows:
        low, high = sorted(fit.predict_s(row) for fit in fits)
        assert low * 0.99 <= both.predict_s(row) <= high * 1.01
    wake = idle_wakeup_from(passes[0][0] + passes[1][0], passes[0][1] + passes[1][1])
    assert wake["gaps_ms"] == sorted(set(wake["gaps_ms"])) and len(wake["gaps_ms"]) == 4  # one point per gap
    assert 0.010 * 1.0 <= wake["ttft_ms"][0] / 1e3 <= 0.010 * 1.2


def test_a_probe_beside_a_scored_run_prices_it_at_the_machines_speed_then():
    """`probe_loads` (4 decoding at once, 3 first tokens of 512-token prompts) with content of its own; its
    `speed_factor` against a fit is the median measured / predicted over its rows, so the same probe measured
    twice as slow reads twice the factor, and the fit scaled by its factor (`scaled_fit`: every term alike)
    predicts the probe as measured."""
    from cost_models.serving.engine_fit import FitResult
    from cost_models.serving.engine_profile import IterationFit
    from planner.engines.calibrate import FIRST_ID, PASS_IDS, probe_loads, rows_from, scaled_fit, speed_factor

    loads = probe_loads(FIRST_ID + 3 * PASS_IDS)
    assert [x["kind"] for x in loads] == ["decode", "prefill"]
    assert min(int(i) for x in loads for ids in x["workload"].block_hashes for i in ids) >= FIRST_ID + 3 * PASS_IDS

    def results(slow: float):
        out = []
        for load in loads:
            w = load["workload"]
            out_len = int(w.output_tokens[0])
            ttft = slow * (0.006 + 2.2e-5 * w.prompt_tokens.astype(float))
            itl = slow * 0.0035
            out.append({"ttfts": ttft.tolist(), "itls": [[itl] * (out_len - 1)] * len(w),
                        "output_lens": [out_len] * len(w), "latencies": (ttft + itl * (out_len - 1)).tolist()})
        return out

    fit = FitResult(IterationFit(2.5, 0.02, 0.02, 0.25, 0.05), 5.0, {})
    factor = speed_factor(fit, loads, results(1.0), 16, 2048)
    assert len(rows_from(loads, results(1.0), 16, 2048)) >= 2 and 0.5 < factor < 3.0
    assert speed_factor(fit, loads, results(2.0), 16, 2048) == pytest.approx(2 * factor, rel=1e-9)
    assert speed_factor(scaled_fit(fit, factor), loads, results(1.0), 16, 2048) == pytest.approx(1.0, rel=1e-9)
    row = rows_from(loads, results(1.0), 16, 2048)[0]
    assert scaled_fit(fit, 1.3).predict_s(row) == pytest.approx(1.3 * fit.predict_s(row), rel=1e-12)
    assert np.isnan(speed_factor(fit, [], [], 16, 2048))
