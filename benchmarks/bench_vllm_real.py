"""The planner's serving predictions against a real vLLM engine on this CPU (issue 15).

1. Builds (or reuses) the vLLM CPU environment (tools/make_vllm_env.sh) and a 4-layer random-weight Llama with
   a word-level tokenizer (tools/make_tiny_model.py).
2. Traffic with shared prefixes: chat sessions (4 system prompts of 512 tokens, 1-3 turns with their history,
   `cost_models.serving.prefixes.chat_sessions`), written as a trace CSV with hash ids.
3. Plans the model on this CPU: `planner plan MODEL --cluster 1xcpu --workload TRACE --rate R --slo ...
   --engine-profile vllm-0.32-cpu`, then `planner codegen`, and starts the generated serve_vllm.sh's instance
   with its own arguments (`serve_vllm.sh args 0`) through vLLM's OpenAI server module.
4. Calibrates against that engine (`planner calibrate --engine vllm`'s closed-loop loads; no request rate), then
   drives it with vLLM's own benchmark client at each scored request rate, replaying the sessions trace (its
   timestamps, its shared prefixes; fresh content per run so no run warms another's cache). The rates are
   interleaved (2, 4, 9, 12, 2, 4, ...), so a drift of this shared machine's speed reaches every rate alike, and
   the calibration loads run again after each round of rates (each pass with content of its own): the profile
   scored is fitted over all passes with one speed per pass (`calibration_passes.fit_passes`) and priced at their
   mean speed, so it is the machine over the window the scored runs took, not over the minute before them. Each
   pass's speed is printed, and the profile of the first pass alone (what one `planner calibrate` gives) is
   scored beside it. Right before each scored run the same client runs a 4-second closed-loop probe
   (`speed_probe.probe_loads`: decode iterations of 1, 4 and 16, first tokens of 128-1,024-token prompts); its
   measured / calibrated time (`speed_factor`) is printed, and the profile scaled by each run's factor
   (`scaled_fit`) is scored as a diagnostic.
5. Prints the engine's own prefix-cache hit rate (its /metrics counters) against the simulated one, and
   measured vs predicted mean and p90 TTFT and TPOT, output throughput and SLO attainment per rate, for
   the profiles calibrated in this run (over the passes, from the first pass, at each run's probed speed) and for
   the shipped one; the verdict (with the first): predicted within 15% of measured for mean TTFT, mean TPOT and throughput at
   every scored rate, and the same SLO verdict (attainment >= 90%).
   Each run is predicted on the arrivals the engine was offered: the client's own record of when it sent each
   request (`client_timing.as_delivered`). On these 2 cores the client's event loop falls behind at high rates and
   sends requests late and in bursts (its lateness is printed per run), which the engine queues; the prediction
   for the trace as written (a client that keeps time) is printed beside the verdict's.
   TTFT and TPOT are judged twice. As the engine counts them (its /metrics histograms: TTFT from the request's
   arrival in the engine to its first token out, predicted as the simulated TTFT less the profile's
   `client_path_ms`, the calibrated time outside that count; TPOT per request from its first to its last token
   as the engine core stamps them, predicted as simulated), and as vLLM's client measures them, which also holds
   the HTTP stream and the client's own turns on the 2 cores it shares with the engine here (a client whose
   event loop falls behind reads tokens late and in bursts); the first verdict is the benchmark's, the second
   is printed beside it.
   Each rate runs --repeats times with fresh content; each metric scores its median over the runs (every
   run's means are printed, and the CPU each server process and the client used during it, in cores).

The machine is shared: the run waits (up to --wait-s) for the 1-minute load average to drop under --max-load,
runs the engine and the client at nice --nice, and prints the load average of every measurement.

    python3 benchmarks/bench_vllm_real.py [--rates 2,4,9,12] [--seconds 40] [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import planner  # noqa: E402
from cost_models.cluster import parse_cluster  # noqa: E402
from cost_models.serving.deployment import Deployment, costs_for, simulate  # noqa: E402
from cost_models.serving.engine_fit import FitResult  # noqa: E402
from cost_models.serving.engine_profile import PROFILE_DIR, load_engine_profile  # noqa: E402
from cost_models.serving.metrics import ATTAINMENT, attainment, measured_result, summarize  # noqa: E402
from cost_models.serving.policies import Chunked  # noqa: E402
from cost_models.serving.prefixes import chat_sessions  # noqa: E402
from cost_models.serving.trace_files import write_trace  # noqa: E402
from cost_models.serving.workload import hash_lists  # noqa: E402
from planner.cli import main as planner_main  # noqa: E402
from planner.engines.calibrate import (  # noqa: E402
    FIRST_ID,
    PASS_IDS,
    engine_block_size,
    profile_document,
    run_calibration,
    run_client,
    write_rows,
)
from planner.engines.calibration_passes import Pass, fit_calibration, fit_passes  # noqa: E402
from planner.engines.calibration_rows import PREFILL_METRIC, TPOT_METRIC, TTFT_METRIC, engine_mean_s  # noqa: E402
from planner.engines.client_timing import as_delivered, lateness  # noqa: E402
from planner.engines.server import VllmServer, raise_group_priority, script_args  # noqa: E402
from planner.engines.speed_probe import probe_loads, scaled_fit, speed_factor  # noqa: E402
from planner.engines.vllm_env import vllm_python  # noqa: E402

SHIPPED = "vllm-0.32-cpu"
MODEL_NAME = "vllm-cpu-tiny-llama"  # the folder name: what the planner and the profile call the model
SLO = {"ttft": 0.1, "tpot": 0.01}
PLAN_RATE = 4.0
TOLERANCE = 0.15
CALIBRATION_PASS_IDS = 20  # calibration pass k's content: hash ids from FIRST_ID + PASS_IDS x (20 + k) on


def ensure_env() -> Path:
    python = vllm_python()
    if python is None:
        subprocess.run(["bash", str(ROOT / "tools" / "make_vllm_env.sh")], check=True)
        python = vllm_python()
    return python


def prepare(keep: Path | None, prefix: str) -> tuple[Path, Path, Path]:
    """The work folder (`keep`, or a new temporary one), the vLLM environment's python (built if missing) and the
    tiny random-weight model in the work folder (made if missing)."""
    work = keep or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    python = ensure_env()
    model = work / MODEL_NAME
    if not (model / "model.safetensors").exists():
        subprocess.run([str(python), str(ROOT / "tools" / "make_tiny_model.py"), str(model)], check=True)
    return work, python, model


def load_average() -> float:
    """The 1-minute load average (0 where the system does not report one)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def wait_for_calm(max_load: float, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while load_average() > max_load and time.monotonic() < deadline:
        print(f"  load average {load_average():.1f} > {max_load}: waiting", flush=True)
        time.sleep(20)


def sessions(n: int, seed: int = 0):
    return chat_sessions(n, 1.0, system_prompts=4, system_tokens=512, turns=3, user_tokens=(32, 256),
                         output_tokens=(16, 64), think_s=2.0, seed=seed)


def plan_deployment(model: Path, trace: Path, profile: str, out: Path, rate: float = PLAN_RATE) -> tuple[dict, Path]:
    """`planner plan` + `planner codegen` as a user runs them; the plan and its serve_vllm.sh."""
    slo = ",".join(f"{k}={v}" for k, v in SLO.items())
    engine = ["--engine-profile", profile] if profile else []
    code = planner_main(["plan", str(model), "--cluster", "1xcpu", "--workload", str(trace), "--rate", str(rate),
                         "--slo", slo, *engine, "-o", str(out / "plan.json")])
    if code:
        raise SystemExit(f"planner plan failed ({code})")
    if planner_main(["codegen", str(out / "plan.json"), "-o", str(out / "launch")]):
        raise SystemExit("planner codegen failed")
    return json.loads((out / "plan.json").read_text()), out / "launch" / "serve_vllm.sh"


def fresh_content(w, offset: int):
    """The same requests with hash ids moved by `offset`: new prompt content, the same sharing."""
    return replace(w, block_hashes=hash_lists([ids + offset for ids in w.block_hashes]))


def predict(plan: dict, model: Path, profile: str, w) -> dict:
    """The plan's deployment (policy, KV pool) simulated on `w` with engine profile `profile`."""
    serving = plan["decision"]["serving"]
    graph = planner.capture(str(model), seq_len=2048)
    costs = costs_for(graph, parse_cluster("1xcpu"), plan["inputs"]["dtype"], profile)
    deployment = Deployment(Chunked(int(serving["chunk_tokens"])), 1, 1, int(plan["decision"]["dp"]))
    result = simulate(costs, deployment, replace(w, context_tokens=serving["longest_request_tokens"]))
    s = summarize(result, SLO)
    client_path_s = load_engine_profile(profile).client_path_ms / 1e3  # outside the engine's own TTFT count
    served = np.isfinite(result.first_token_s)
    wait = result.scheduled_s[served] - w.arrival_s[served]  # arrival to the iteration that takes it in
    return {"iterations": float(result.iterations), "token_iterations": float(result.token_iterations),
            "engine_before_scheduled": float(wait.mean()) - client_path_s,
            "engine_scheduled_to_first": float((result.first_token_s - result.scheduled_s)[served].mean()),
            "ttft_mean": s["ttft_mean"],
            "engine_ttft_mean": s["ttft_mean"] - client_path_s, "ttft_p90": s["ttft_p90"], "tpot_mean": s["tpot_mean"],
            "engine_tpot_mean": s["tpot_mean"], "tpot_p90": s["tpot_p90"],
            "throughput": s["output_tokens_per_s"], "attainment": s["attainment"], "hit": result.prefix_hit_rate}


def measured(w, result: dict) -> dict:
    ttft = np.array(result["ttfts"])
    out = np.array(result["output_lens"])
    tpot = np.array([(lat - t) / (o - 1) if o > 1 else np.nan for lat, t, o in zip(result["latencies"], ttft, out)])
    ok = np.isfinite(tpot)
    engine_ttft, prefill = (engine_mean_s(result, name) or np.nan for name in (TTFT_METRIC, PREFILL_METRIC))
    return {"ttft_mean": float(ttft.mean()), "engine_ttft_mean": engine_ttft,
            "engine_before_scheduled": engine_ttft - prefill, "engine_scheduled_to_first": prefill,
            "ttft_p90": float(np.percentile(ttft, 90)), "iterations": float(iterations(result)),
            "tpot_mean": float(tpot[ok].mean()), "engine_tpot_mean": engine_mean_s(result, TPOT_METRIC),
            "tpot_p90": float(np.percentile(tpot[ok], 90)),
            "throughput": float(result["output_throughput"]),
            "attainment": attainment(measured_result(w, ttft, np.nan_to_num(tpot, nan=0.0)), SLO)}


def iterations(result: dict) -> float:
    """Engine steps during a run that output a token (the count of vLLM's tokens-per-iteration histogram, which its
    front end records only for steps with outputs: a step of prompt chunks alone is not counted; nan without it)."""
    return (result.get("engine_metrics") or {}).get("vllm:iteration_tokens_total", (0.0, float("nan")))[1]


def cpu_shares(before: dict, after: dict, client_before, client_after, seconds: float) -> dict[str, float]:
    """Cores each server process (by name) and the benchmark client used over `seconds` of a run, the server's
    from /proc (`VllmServer.cpu_seconds`), the client's from this process's finished children (`os.times`)."""
    shares = {name: (after[name] - before.get(name, 0.0)) / seconds for name in after}
    client = (client_after.children_user + client_after.children_system
              - client_before.children_user - client_before.children_system)
    return {**{name: share for name, share in sorted(shares.items()) if share >= 0.005}, "client": client / seconds}


def median_of(runs: list[dict]) -> dict:
    """Per metric, the median over repeated runs of one rate: a shared machine stalls now and then (a 0.5-0.8 s
    freeze of every stream, seen on this 2-core VM at any rate), which moves one run's mean, not the median."""
    return {k: float(np.median([m[k] for m in runs])) for k in runs[0]}


VERDICTS = {"engine": ("engine_ttft_mean", "engine_tpot_mean"), "client": ("ttft_mean", "tpot_mean")}


def table(rows: list[tuple[float, float, dict, list[dict]]], labels: list[str]) -> tuple[bool, bool]:
    """Print measured/predicted per rate for each profile (`labels`, one prediction each per row); (verdict with the
    engine's own mean TTFT and TPOT, verdict with the client's) for the first. Throughput is the client's in both."""
    keys = ("ttft_mean", "engine_ttft_mean", "ttft_p90", "tpot_mean", "engine_tpot_mean", "tpot_p90", "throughput",
            "attainment")
    ok = dict.fromkeys(VERDICTS, True)
    for index, label in enumerate(labels):
        print(f"\npredicted with the {label}:")
        print(f"{'rate':>6} {'load':>5} " + " ".join(f"{k + ' meas/pred':>26}" for k in keys)
              + "  verdict (engine / client TTFT and TPOT)")
        for rate, load, meas, preds in rows:
            pred = preds[index]
            cells = []
            for k in keys:
                scale, unit = (1e3, "ms") if k.startswith(("ttft", "tpot", "engine_")) else (1.0, "")
                ratio = pred[k] / meas[k] if meas[k] else float("nan")
                cells.append(f"{meas[k] * scale:9.2f}/{pred[k] * scale:8.2f}{unit:>2} x{ratio:5.2f}")
            same = (meas["attainment"] >= ATTAINMENT) == (pred["attainment"] >= ATTAINMENT)
            verdicts = []
            for side, (ttft, tpot) in VERDICTS.items():
                passed = same and all(abs(pred[k] / meas[k] - 1) <= TOLERANCE for k in (ttft, tpot, "throughput"))
                verdicts.append("PASS" if passed else "FAIL")
                if index == 0:
                    ok[side] &= passed
            print(f"{rate:6.1f} {load:5.1f} " + " ".join(cells) + f"  {' / '.join(verdicts)} "
                  f"(SLO {'met' if meas['attainment'] >= ATTAINMENT else 'missed'})")
    return ok["engine"], ok["client"]


def calibration_pass(python: Path, server: VllmServer, model: Path, folder: Path, nice: list[str],
                     index: int) -> Pass:
    """One pass of the calibration loads against the running server (`run_calibration`: closed-loop loads, no
    request rate), content of its own (pass `index`); (loads, results)."""
    t0 = time.monotonic()
    done = run_calibration(python, server.url, str(model), folder / f"pass{index}", prefix=nice,
                           first_id=FIRST_ID + PASS_IDS * (CALIBRATION_PASS_IDS + index))
    print(f"calibration pass {index} in {time.monotonic() - t0:.0f} s (load average {load_average():.1f})", flush=True)
    return done


def write_profile(fit: FitResult, rows: list, block: int, path: Path, source: str) -> Path:
    """The profile document of `fit` at `path` (its rows beside it); the path."""
    import yaml

    rows_file = path.with_suffix(".rows.csv")
    write_rows(rows_file, rows, fit)
    path.write_text(yaml.safe_dump(profile_document(fit, MODEL_NAME, "cpu", block, rows_file.name, source),
                                   sort_keys=False))
    return path


def report_fit(label: str, fit: FitResult) -> None:
    """Print a calibrated fit, its fit error and its errors on the held-out loads."""
    wake = fit.idle_wakeup or {}
    print(f"{label}: {fit.iteration}, request latency {fit.request_latency_ms:.2f} ms, idle wake-up "
          f"{wake.get('max_ms', 0):.2f} ms x (1 - exp(-idle / {wake.get('tau_ms', 0):.0f} ms)), fit error "
          f"{fit.errors['all']}")
    for kind, error in (fit.held_out_errors or {}).items():
        print(f"  held out ({kind}: prompts arriving beside running decodes, not fitted): {error['rows']} rows, "
              f"mean |pred/meas - 1| {error['mean_abs_rel_error']:.1%}, max {error['max_abs_rel_error']:.1%}, "
              f"mean signed {error['mean_rel_error']:+.1%}")


def at_speed(fit: FitResult, factor: float, block: int, path: Path) -> Path:
    """The calibrated profile priced `factor` times slower (`scaled_fit`), written to `path`; the path."""
    import yaml

    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(profile_document(scaled_fit(fit, factor), MODEL_NAME, "cpu", block, "fitted.rows.csv",
                                                    f"bench_vllm_real.py calibration x{factor:.4f} (probe speed)"),
                                   sort_keys=False))
    return path


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated run still stops its engine (VllmServer)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="2,4,9,12", help="scored request rates (req/s)")
    ap.add_argument("--seconds", type=float, default=40.0, help="trace length per scored rate")
    ap.add_argument("--repeats", type=int, default=3, help="client runs per rate (fresh content each); medians scored")
    ap.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    ap.add_argument("--max-load", type=float, default=3.5)
    ap.add_argument("--wait-s", type=float, default=1800.0)
    ap.add_argument("--nice", type=int, default=0, help="niceness of the engine and the client and of their scheduling "
                    "groups (root lowers it; on 2 cores a raised client starves the engine front end: measured TTFT/TPOT "
                    "then show token bursts, so the default leaves priorities alone)")
    ap.add_argument("--port", type=int, default=8150)
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    work, python, model = prepare(args.keep, "bench_vllm_real_")
    base = sessions(int(max(rates) * args.seconds))
    write_trace(work / "sessions.csv", base.with_rate(PLAN_RATE))
    shipped = SHIPPED if (PROFILE_DIR / f"{SHIPPED}.yaml").is_file() else None  # none yet: the cost model plans
    plan, script = plan_deployment(model, work / "sessions.csv", shipped, work)
    serving = plan["decision"]["serving"]
    print(f"plan: {serving['description']}, max_model_len {serving['longest_request_tokens']}, "
          f"predicted goodput {plan['predicted']['goodput_rps']:.2f} req/s under {SLO}")
    engine_args = script_args(script, "args", "0", env={"BASE_PORT": str(args.port)})
    print("engine arguments (serve_vllm.sh args 0):", " ".join(engine_args))
    nice = ["nice", "-n", str(args.nice)] if args.nice else []
    if args.nice and raise_group_priority(args.nice):  # this session's group (the client runs in it) and the engine's
        print(f"scheduling groups of the client and the engine at nice {args.nice} (kernel autogroups)")
    wait_for_calm(args.max_load, args.wait_s)
    with VllmServer(python, model, engine_args, args.port, work / "server.log", startup_s=900,
                    prefix=nice, group_nice=args.nice or None) as server:
        budget = int(serving["engines"]["instance"]["max_num_batched_tokens"])
        block = engine_block_size(server.url)
        passes = [calibration_pass(python, server, model, work / "calibration", nice, 0)]
        workloads, by_rate, engine_hits, host_cpu, delivered = {}, {}, {}, {}, {}
        for rate in rates:
            n = int(rate * args.seconds)
            w = base.head(n).with_rate(rate)
            workloads[rate] = replace(w, arrival_s=w.arrival_s - w.arrival_s[0])
        (work / "rates").mkdir(exist_ok=True)
        for j in range(args.repeats):  # rates interleaved: a drift of the machine's speed reaches every rate alike
            for k, rate in enumerate(rates):  # fresh content per run: no run warms another's prefix cache
                wj = fresh_content(workloads[rate], 10_000_000 * (1 + k * args.repeats + j))
                probes = probe_loads(FIRST_ID + PASS_IDS * (1 + k + j * len(rates)))
                wait_for_calm(args.max_load, 60.0)
                before = load_average()
                load = {"kind": f"rate {rate}", "workload": wj, "max_concurrency": None}
                cpu0, client0, t0 = server.cpu_seconds(), os.times(), time.monotonic()
                *probed, result = run_client(python, server.url, str(model), [*probes, load], work / "rates",
                                             prefix=nice)
                host_cpu.setdefault(rate, []).append(cpu_shares(cpu0, server.cpu_seconds(), client0, os.times(),
                                                                time.monotonic() - t0))
                counted = result["engine_metrics"]
                engine_hits.setdefault(rate, []).append(counted["vllm:prefix_cache_hits_total"][0]
                                                        / max(counted["vllm:prefix_cache_queries_total"][0], 1.0))
                os.replace(work / "rates" / f"load{len(probes):02d}.result.json",
                           work / "rates" / f"rate{rate}.run{j}.result.json")
                by_rate.setdefault(rate, []).append((before, measured(wj, result), probes, probed))
                delivered.setdefault(rate, []).append((as_delivered(workloads[rate], result), lateness(wj, result)))
            passes.append(calibration_pass(python, server, model, work / "calibration", nice, j + 1))
    fit, rows, speeds = fit_passes(passes, block, budget)
    write_profile(fit, rows, block, work / "fitted.yaml", f"bench_vllm_real.py calibration ({len(passes)} passes)")
    first, first_rows = fit_calibration(*passes[0], block, budget)
    write_profile(first, first_rows, block, work / "first_pass.yaml", "bench_vllm_real.py calibration (first pass)")
    report_fit(f"calibrated over {len(passes)} passes (before the scored runs and after each round of them)", fit)
    print("  each pass's speed (measured / the fit at the passes' mean speed; over 1 is slower): "
          + ", ".join(f"x{s:.3f}" for s in speeds))
    report_fit("calibrated on the first pass alone (before the scored runs)", first)
    for rate in rates:
        by_rate[rate] = [(before, meas, factor, at_speed(fit, factor if np.isfinite(factor) else 1.0, block,
                                                            work / "speed" / f"rate{rate}.run{j}.yaml"))
                         for j, (before, meas, probes, probed) in enumerate(by_rate[rate])
                         for factor in [speed_factor(fit, probes, probed, block, budget)]]
    out = [(rate, max(run[0] for run in by_rate[rate]), median_of([run[1] for run in by_rate[rate]]),
            [run[1] for run in by_rate[rate]]) for rate in rates]
    labels = [f"profile calibrated over {len(passes)} passes spread over the scored runs (at their mean speed), on the "
              "arrivals as the client sent them", "same profile on the trace as written (a client that keeps time)",
              "profile of the first pass alone (calibrated before the scored runs), on the arrivals as sent",
              "passes' profile at the speed its probe measured beside each run, on the arrivals as sent (a diagnostic)",
              f"shipped profile ({SHIPPED}), on the arrivals as sent"]
    print(f"\n{len(rates)} scored rates, {args.repeats} runs each (medians scored); calibration used no rate "
          f"(closed-loop loads only). Work folder: {work}")

    def predictions(rate: float) -> list[dict]:
        """Per profile, the median over the rate's runs of the prediction for each run's arrivals as the client sent
        them (`client_timing.as_delivered`: the engine was offered those), and one for the trace as written."""
        sent = [w for w, _ in delivered[rate]]

        def over_runs(profile) -> dict:
            return median_of([predict(plan, model, str(profile(j)), w) for j, w in enumerate(sent)])

        return [over_runs(lambda j: work / "fitted.yaml"), predict(plan, model, str(work / "fitted.yaml"), workloads[rate]),
                over_runs(lambda j: work / "first_pass.yaml"), over_runs(lambda j: by_rate[rate][j][3]),
                over_runs(lambda j: shipped or work / "fitted.yaml")]

    rows_out = [(rate, load, meas, predictions(rate)) for rate, load, meas, _ in out]
    for rate in rates:
        print(f"rate {rate}: the client's sends against the trace (late by mean / p90 / max ms; share of requests sent "
              f"within 1 ms of another, in the trace {delivered[rate][0][1]['trace_burst_share']:.1%}): "
              + "; ".join(f"{late['mean_ms']:.1f} / {late['p90_ms']:.1f} / {late['max_ms']:.0f} ms, "
                          f"{late['burst_share']:.1%}" for _, late in delivered[rate]))
    for rate in rates:
        print(f"rate {rate}: engine speed beside each run (probe measured / calibrated over the passes; over 1 is slower): "
              + ", ".join(f"x{run[2]:.2f}" for run in by_rate[rate]))
    for (rate, _, _, (pred, *_)), (_, _, _, runs) in zip(rows_out, out):
        hits = ", ".join(f"{h:.1%}" for h in engine_hits[rate])
        print(f"rate {rate}: prefix-cache hit rate (tokens) measured by the engine {hits}, predicted {pred['hit']:.1%}; "
              "mean TTFT / TPOT per run " + ", ".join(f"{m['ttft_mean'] * 1e3:.1f}/{m['tpot_mean'] * 1e3:.2f}"
                                                    for m in runs) + " ms")
    for rate, _, meas, (pred, *_) in rows_out:
        print(f"rate {rate}: engine iterations that output a token (the only ones vLLM's iteration_tokens histogram "
              f"counts) {meas['iterations']:.0f} measured, {pred['token_iterations']:.0f} simulated "
              f"(x{pred['token_iterations'] / meas['iterations']:.2f}); all simulated iterations {pred['iterations']:.0f}")
    for rate, runs in host_cpu.items():
        print(f"rate {rate}: CPU used during each run, in cores (the client's run includes its start-up and the probe): "
              + "; ".join(", ".join(f"{name} {share:.2f}" for name, share in run.items()) for run in runs))
    for rate, _, meas, (pred, *_) in rows_out:
        print(f"rate {rate}: the engine's TTFT in two parts, measured / predicted: arrival to scheduled (the API "
              f"server, the hand-off, the step in flight, the queue) {meas['engine_before_scheduled'] * 1e3:.2f} / "
              f"{pred['engine_before_scheduled'] * 1e3:.2f} ms; scheduled to first token "
              f"{meas['engine_scheduled_to_first'] * 1e3:.2f} / {pred['engine_scheduled_to_first'] * 1e3:.2f} ms")
    for rate, _, meas, (pred, *_) in rows_out:
        print(f"rate {rate}: first-token time outside the engine's own count (client TTFT - engine TTFT): measured "
              f"{(meas['ttft_mean'] - meas['engine_ttft_mean']) * 1e3:.1f} ms, calibrated "
              f"{(pred['ttft_mean'] - pred['engine_ttft_mean']) * 1e3:.1f} ms")
    engine_ok, client_ok = table(rows_out, labels)
    print(f"\nall scored rates within {TOLERANCE:.0%} (mean TTFT and mean TPOT as the engine counts them, throughput) "
          f"with the same SLO verdict: {'PASS' if engine_ok else 'FAIL'}")
    print(f"the same with the client's mean TTFT and TPOT (they also hold the HTTP stream and the client's own turns on "
          f"the cores it shares with the engine): {'PASS' if client_ok else 'FAIL'}")


if __name__ == "__main__":
    main()
