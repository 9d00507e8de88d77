"""The calibration of a running vLLM engine (`planner.engines.calibrate`, `planner.engines.speed_probe`) on
synthetic client results: the rows it fits, the client path it separates, the held-out loads it scores, several
passes joined, and the speed probe a benchmark runs beside each scored run."""

from __future__ import annotations

import numpy as np
import pytest

from cost_models.serving.engine_profile import load_engine_profile
from cost_models.serving.iteration_cost import causal_pairs


def test_calibration_decode_rows_read_token_bursts_as_iterations_not_as_free_ones():
    """A front end that falls behind streams tokens in chunks: inter-token gaps of one long wait and then
    microseconds. The decode row must still be the iteration time (the sum over a burst divided among its tokens),
    not the median gap (microseconds, which once fitted a profile with no decode cost at all)."""
    from planner.engines.calibrate import calibration_loads
    from planner.engines.calibration_rows import rows_from

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
    from planner.engines.calibrate import calibration_loads, profile_document
    from planner.engines.calibration_rows import client_path_from, engine_mean_s, rows_from

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
    shipped = load_engine_profile("vllm-0.32-cpu")  # measured by this calibration: its client path is a part of its
    assert 0.0 < shipped.client_path_ms < shipped.request_latency_ms  # request latency, as the engine counts them


def test_held_out_mixed_loads_score_the_fit_on_prompts_arriving_beside_decodes(tmp_path):
    """The held-out `mixed B P` loads: B decoders running while prompts arrive one at a time. Their rows price a
    prompt's TTFT as half a decode iteration of B (in flight at arrival) + its chunk iteration with the B decodes
    at the decoders' context then, and the decoders' time per token as decode iterations with the prompts' work
    spread over their tokens; they are never fitted, only scored, and they land in the rows file and the profile."""
    import csv

    import yaml

    from cost_models.serving.engine_fit import FitResult
    from cost_models.serving.engine_profile import IterationFit
    from planner.engines.calibrate import calibration_loads, mixed_load, profile_document, write_rows
    from planner.engines.calibration_rows import held_out_errors, held_out_rows, rows_from

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


def _synthetic_results(loads: list[dict], slow: float) -> list[dict]:
    """Client results of calibration loads on an engine `slow` times slower than a reference one: first tokens
    linear in the prompt (with a wake-up after idle gaps), decode steps growing with the batch."""
    out = []
    for load in loads:
        w = load["workload"]
        if load["kind"].startswith("idle"):
            gap_ms = 1e3 * float(load["kind"].split()[1])
            ttft = np.full(len(w), slow * (0.010 + 0.006 * (1 - np.exp(-gap_ms / 150.0))))
        else:
            ttft = slow * (0.004 + 2e-5 * w.prompt_tokens.astype(float))
        itl = slow * (0.003 + 1e-5 * (load["max_concurrency"] or 1))
        out_lens = w.output_tokens.astype(int)
        out.append({"ttfts": ttft.tolist(), "itls": [[itl] * (n - 1) for n in out_lens], "output_lens": out_lens.tolist(),
                    "latencies": (ttft + itl * (out_lens - 1)).tolist(), "start_times": w.arrival_s.tolist()})
    return out


def test_calibration_passes_have_their_own_content_and_a_fit_spans_them():
    """Two calibration passes (say before and after a long benchmark): the second pass's prompts share no hash id
    with the first's (nothing of it is cached yet), the idle wake-up pools each gap's requests over the passes, and
    a fit over both passes lies between the fits of each, so a machine that slowed by 20% between them is priced
    at its speed over the whole window."""
    from planner.engines.calibrate import FIRST_ID, PASS_IDS, calibration_loads
    from planner.engines.calibration_passes import fit_calibration
    from planner.engines.calibration_rows import idle_wakeup_from

    ids = [{int(i) for load in calibration_loads(quick=True, context=1276, first_id=FIRST_ID + k * PASS_IDS)
            for hashes in load["workload"].block_hashes for i in hashes} for k in (0, 1)]
    assert not ids[0] & ids[1] and max(ids[0]) < FIRST_ID + PASS_IDS <= min(ids[1])

    kinds = ("prefill", "prefix", "decode", "idle")
    passes = []
    for k, slow in ((0, 1.0), (1, 1.2)):
        loads = [x for x in calibration_loads(quick=True, context=1276, first_id=FIRST_ID + k * PASS_IDS)
                 if x["kind"].startswith(kinds)]
        passes.append((loads, _synthetic_results(loads, slow)))
    fits = [fit_calibration(loads, res, 16, 2048)[0] for loads, res in passes]
    both, rows = fit_calibration(passes[0][0] + passes[1][0], passes[0][1] + passes[1][1], 16, 2048)
    assert len(rows) == 2 * len(fit_calibration(*passes[0], 16, 2048)[1])
    for row in rows:
        low, high = sorted(fit.predict_s(row) for fit in fits)
        assert low * 0.99 <= both.predict_s(row) <= high * 1.01
    wake = idle_wakeup_from(passes[0][0] + passes[1][0], passes[0][1] + passes[1][1])
    assert wake["gaps_ms"] == sorted(set(wake["gaps_ms"])) and len(wake["gaps_ms"]) == 4  # one point per gap
    assert 0.010 * 1.0 <= wake["ttft_ms"][0] / 1e3 <= 0.010 * 1.2


def test_passes_fitted_together_give_each_its_speed_and_price_the_engine_at_their_mean():
    """Three passes of a machine whose speed drifts (x1.0, x1.25, x0.9 of a reference engine): `fit_passes` finds
    the drift (speeds in the ratio 1 : 1.25 : 0.9, geometric mean 1), fits the rows at their own pass's speed as
    well as one pass fits its own (a plain joined fit leaves the drift in its errors), and prices the engine at the
    passes' geometric-mean speed. One pass alone gives `fit_calibration`'s fit and speed 1."""
    from planner.engines.calibrate import FIRST_ID, PASS_IDS, calibration_loads
    from planner.engines.calibration_passes import fit_calibration, fit_passes

    kinds = ("prefill", "prefix", "decode", "idle", "mixed")
    drift = (1.0, 1.25, 0.9)
    passes = []
    for k, slow in enumerate(drift):
        loads = [x for x in calibration_loads(quick=True, context=1276, first_id=FIRST_ID + (20 + k) * PASS_IDS)
                 if x["kind"].startswith(kinds)]
        passes.append((loads, _synthetic_results(loads, slow)))
    fit, rows, speeds = fit_passes(passes, 16, 2048)
    mean = float(np.prod(drift)) ** (1 / 3)
    assert speeds == pytest.approx([s / mean for s in drift], rel=1e-4)
    assert float(np.prod(speeds)) == pytest.approx(1.0, rel=1e-5)
    one, one_rows = fit_calibration(*passes[0], 16, 2048)
    assert len(rows) == 3 * len(one_rows)
    assert fit.errors["all"]["mean_abs_rel_error"] <= one.errors["all"]["mean_abs_rel_error"] + 1e-3
    joined = fit_calibration([x for p in passes for x in p[0]], [x for p in passes for x in p[1]], 16, 2048)[0]
    assert joined.errors["all"]["mean_abs_rel_error"] > fit.errors["all"]["mean_abs_rel_error"] + 0.05
    for row in one_rows:  # the reference engine's rows, priced at the mean speed
        assert fit.predict_s(row) == pytest.approx(mean * one.predict_s(row), rel=0.02)
    assert len(fit.held_out) == 3 * len(one.held_out) > 0  # held-out rows scored at their own pass's speed
    assert fit.held_out_errors["all"]["mean_abs_rel_error"] == pytest.approx(
        one.held_out_errors["all"]["mean_abs_rel_error"], abs=0.02)
    broken = [dict(r) for r in passes[1][1]]  # a reset connection in one load of one pass: that load left out
    k = next(i for i, x in enumerate(passes[1][0]) if x["kind"] == "decode")
    broken[k]["failed"] = 19
    _, again_rows, again_speeds = fit_passes([passes[0], (passes[1][0], broken), passes[2]], 16, 2048)
    assert len(again_rows) == len(rows) - 1 and again_speeds == pytest.approx(speeds, rel=1e-3)
    alone, alone_rows, alone_speed = fit_passes(passes[:1], 16, 2048)
    assert alone_speed == [1.0] and alone.iteration == one.iteration and alone_rows == one_rows
    assert alone.idle_wakeup == one.idle_wakeup and alone.client_path_ms == one.client_path_ms


def test_a_probe_beside_a_scored_run_prices_it_at_the_machines_speed_then():
    """`probe_loads` (decode iterations of 1, 4 and 16, first tokens of 128-1,024-token prompts) with content of its own; its
    `speed_factor` against a fit is the median measured / predicted over its rows, so the same probe measured
    twice as slow reads twice the factor, and the fit scaled by its factor (`scaled_fit`: every term alike)
    predicts the probe as measured."""
    from cost_models.serving.engine_fit import FitResult
    from cost_models.serving.engine_profile import IterationFit
    from planner.engines.calibrate import FIRST_ID, PASS_IDS
    from planner.engines.calibration_rows import rows_from
    from planner.engines.speed_probe import probe_loads, scaled_fit, speed_factor

    loads = probe_loads(FIRST_ID + 3 * PASS_IDS)
    assert [x["kind"] for x in loads] == ["decode"] * 3 + ["prefill"] * 3
    ids = [int(i) for x in loads for ids in x["workload"].block_hashes for i in ids]
    assert len(ids) == len(set(ids))  # every request with content of its own
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
    assert len(rows_from(loads, results(1.0), 16, 2048)) == 6 and 0.5 < factor < 3.0
    assert speed_factor(fit, loads, results(2.0), 16, 2048) == pytest.approx(2 * factor, rel=1e-9)
    assert speed_factor(scaled_fit(fit, factor), loads, results(1.0), 16, 2048) == pytest.approx(1.0, rel=1e-9)
    row = rows_from(loads, results(1.0), 16, 2048)[0]
    assert scaled_fit(fit, 1.3).predict_s(row) == pytest.approx(1.3 * fit.predict_s(row), rel=1e-12)
    assert np.isnan(speed_factor(fit, [], [], 16, 2048))


def _engine_results(loads: list[dict], truth, request_latency_s: float) -> list[dict]:
    """Client results (with the engine's prefill-time metric) of calibration loads on a synthetic engine whose
    iterations cost `truth` (`IterationFit`, including a prompt iteration's own `per_prefill_iteration_ms`):
    one-at-a-time prompts, decode batches, and prompts arriving beside running decoders (`beside`, `mixed`), where
    the engine runs decode iterations back to back and the next one after a prompt arrives also computes it."""
    from planner.engines.calibration_rows import DECODER_PROMPT, PREFILL_METRIC

    def step(decodes: int, context: float, prompt: int = 0) -> float:
        return truth.ms(decodes + prompt, causal_pairs(prompt, 0), decodes * context, decodes + (1 if prompt else 0),
                        1.0 if prompt else 0.0) / 1e3

    out = []
    for load in loads:
        w, kind = load["workload"], load["kind"]
        n, outs = len(w), w.output_tokens.astype(int)
        if kind.startswith(("beside", "mixed")):
            decoders = int(np.sum(w.arrival_s == 0))
            first = step(0, 0, DECODER_PROMPT * decoders)
            t, made, served = first, 1, {}
            itls = [[] for _ in range(decoders)]
            while made < outs[0]:
                waiting = [i for i in range(decoders, n) if w.arrival_s[i] + request_latency_s <= t and i not in served]
                d = step(decoders, DECODER_PROMPT + made, int(w.prompt_tokens[waiting[0]]) if waiting else 0)
                t += d
                made += 1
                for j in range(decoders):
                    itls[j].append(d)
                if waiting:
                    served[waiting[0]] = t
            ttfts = [first] * decoders + [served.get(i, w.arrival_s[i] + 0.05) - w.arrival_s[i] for i in range(decoders, n)]
            out.append({"ttfts": ttfts, "itls": itls + [[0.001]] * (n - decoders), "output_lens": outs.tolist(),
                        "latencies": [first + sum(x) for x in itls] + [tt + 0.001 for tt in ttfts[decoders:]],
                        "start_times": w.arrival_s.tolist()})
            continue
        if kind == "prefill":
            engine = np.array([step(0, 0, int(p)) for p in w.prompt_tokens])
            ttft = engine + request_latency_s
            out.append({"ttfts": ttft.tolist(), "itls": [[0.003]] * n, "output_lens": [2] * n,
                        "latencies": (ttft + 0.003).tolist(), "start_times": w.arrival_s.tolist(),
                        "engine_metrics": {PREFILL_METRIC: (float(engine.sum()), float(n))}})
            continue
        b = load["max_concurrency"]
        itl = step(b, int(w.prompt_tokens[0]) + outs[0] / 2)
        ttft = np.full(n, request_latency_s + step(0, 0, int(w.prompt_tokens[0])))
        out.append({"ttfts": ttft.tolist(), "itls": [[itl] * (o - 1) for o in outs], "output_lens": outs.tolist(),
                    "latencies": (ttft + itl * (outs - 1)).tolist(), "start_times": w.arrival_s.tolist()})
    return out


def test_a_prompts_own_iteration_cost_is_fitted_apart_from_the_request_latency_and_charged_beside_decodes():
    """A CPU engine's iteration that computes a prompt costs more than its tokens (the prefill attention path beside
    the decode one): measured here, 2-3 ms. One-at-a-time first tokens alone cannot tell it from the request
    latency (both once per prompt), so calibration adds the engine's own scheduled-to-first-token time per
    `prefill` load and the `beside` loads (the decoders' gap when a prompt joins them). On a synthetic engine with
    a known 2.5 ms per prompt iteration the fit recovers it and the request latency; the held-out `mixed` loads
    are then predicted within 3% on average; and the simulator charges it to every iteration that computes prompt tokens,
    so decoders beside a prompt wait for it, where a profile without it (0, as profiles measured before) does not."""
    from cost_models.serving.engine_profile import EngineFit, IterationFit, ProfiledIterationCost
    from planner.engines.calibrate import calibration_loads
    from planner.engines.calibration_passes import fit_calibration
    from planner.engines.calibration_rows import rows_from

    truth = IterationFit(2.4, 0.02, 0.03, 0.25, 0.04, 2.5)
    loads = [x for x in calibration_loads(quick=True, context=1276) if not x["kind"].startswith(("idle", "prefix"))]
    results = _engine_results(loads, truth, 0.004)
    rows = rows_from(loads, results, 16, 2048)
    kinds = {row.kind for row in rows}
    assert {"prefill_engine", "beside"} <= kinds
    beside = [row for row in rows if row.kind == "beside"]
    assert len(beside) == 2 and all(row.prefill_iterations == 1.0 for row in beside)
    k = next(i for i, x in enumerate(loads) if x["kind"].startswith("beside"))  # 2 prompts timed: one stall would
    late = {**results[k], "start_times": [*results[k]["start_times"][:10], *[1e3] * 4]}  # be the row, so none
    assert rows_from([loads[k]], [late], 16, 2048) == [] and len(rows_from([loads[k]], [results[k]], 16, 2048)) == 1
    fit, _ = fit_calibration(loads, results, 16, 2048)
    assert fit.iteration.per_prefill_iteration_ms == pytest.approx(2.5, rel=0.05)
    assert fit.request_latency_ms == pytest.approx(4.0, rel=0.05)
    held_out = fit.held_out_errors["all"]  # the residual of the iteration in flight is priced at half of one
    assert held_out["rows"] == 8 and held_out["mean_abs_rel_error"] < 0.03 and held_out["max_abs_rel_error"] < 0.06
    without = [row for row in rows if row.kind not in ("prefill_engine", "beside")]  # first tokens alone
    assert {row.kind for row in without} == {"prefill", "decode", "long_decode"}

    class Base:
        gpus = 1

    with_term = ProfiledIterationCost(Base(), EngineFit(mixed=truth))
    without_term = ProfiledIterationCost(Base(), EngineFit(mixed=IterationFit(2.4, 0.02, 0.03, 0.25, 0.04)))
    assert with_term.time(4, 400, 128, causal_pairs(128, 0), 0, 1) == pytest.approx(
        without_term.time(4, 400, 128, causal_pairs(128, 0), 0, 1) + 2.5e-3)
    assert with_term.time(4, 400) == pytest.approx(without_term.time(4, 400))  # decodes alone: no prompt path
