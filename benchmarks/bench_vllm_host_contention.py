"""How a real vLLM engine's decode iterations stretch when other work shares its host cores (issue 15).

vLLM's CPU build binds its worker's OpenMP threads to the cores it computes on (here core 0 of 2) and leaves the
rest to the engine core process (scheduling, output processing: most of a small iteration on this CPU), the API
server and anything else on the host, here vLLM's benchmark client. The serving simulator prices an iteration as
the calibrated profile says, measured with only the calibration's own client beside the engine. This benchmark
measures what extra CPU demand on those other cores does to the engine's iterations: a spinner process pinned
to the cores the worker does not own runs a fixed duty cycle (0%, 20% and 40% of a core, 2 ms period) while B
requests decode together (64-token prompts, 300 output tokens), and while 256-token prompts come one at a time
(B = 1, 2 output tokens: the first-token path through the API server and the engine core), in interleaved rounds.
It prints per load and foreign demand the engine's own means (its /metrics histograms: time per output token
stamped by the engine core, so a late client does not move it; TTFT from the request's arrival in the API
server to its first token there) and the client's, as medians over rounds and as ratios to the same round's 0%
run.

    python3 benchmarks/bench_vllm_host_contention.py [--rounds 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vllm_real import PLAN_RATE, SHIPPED, plan_deployment, prepare, sessions  # noqa: E402

from cost_models.serving.trace_files import write_trace  # noqa: E402
from planner.engines.calibrate import fresh_workload, run_client  # noqa: E402
from planner.engines.calibration_rows import TPOT_METRIC, TTFT_METRIC, engine_mean_s  # noqa: E402
from planner.engines.server import VllmServer, script_args  # noqa: E402

LOADS = (0.0, 0.2, 0.4)  # spinner duty cycle: cores of foreign demand on the cores the worker does not own
SHAPES = ((1, 256, 2), (2, 64, 300), (8, 64, 300))  # (requests at a time, prompt, output): first tokens; decodes
PERIOD_S = 0.002


def spin(cores: set[int], duty: float, stop) -> None:
    """Busy for `duty` of every PERIOD_S on `cores`, asleep for the rest, until `stop` is set."""
    os.sched_setaffinity(0, cores)
    while not stop.is_set():
        start = time.perf_counter()
        while time.perf_counter() - start < duty * PERIOD_S:
            pass
        time.sleep((1.0 - duty) * PERIOD_S)


def worker_cores(server: VllmServer) -> set[int]:
    """The cores vLLM bound its worker process to (its Cpus_allowed_list)."""
    out = subprocess.run(["pgrep", "-s", str(os.getsid(server.process.pid)), "-f", "."], capture_output=True,
                         text=True).stdout.split()
    for pid in out:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            if Path(f"/proc/{pid}/comm").read_text().strip().startswith("VLLM::Worker"):
                listed = next(line.split()[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
                return {int(c) for part in listed.split(",") for c in
                        range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)}
        except (OSError, StopIteration):
            continue
    return {0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    ap.add_argument("--port", type=int, default=8170)
    args = ap.parse_args()
    work, python, model = prepare(args.keep, "bench_vllm_host_contention_")
    write_trace(work / "sessions.csv", sessions(200).with_rate(PLAN_RATE))
    _, script = plan_deployment(model, work / "sessions.csv", SHIPPED, work)
    engine_args = script_args(script, "args", "0", env={"BASE_PORT": str(args.port)})
    measured: dict[tuple[tuple, float], list[tuple[float, float]]] = {}
    with VllmServer(python, model, engine_args, args.port, work / "server.log", startup_s=900) as server:
        owned = worker_cores(server)
        others = set(range(os.cpu_count() or 1)) - owned or owned
        print(f"worker bound to cores {sorted(owned)}; spinner on cores {sorted(others)}")
        (work / "runs").mkdir(exist_ok=True)
        next_id = 3_000_000_000
        for r in range(args.rounds):
            for shape in SHAPES:
                batch, prompt, output = shape
                for load in LOADS:
                    w = fresh_workload(8 if batch == 1 else batch, prompt, output, next_id)
                    next_id += 1_000_000
                    stop = multiprocessing.Event()
                    spinner = multiprocessing.Process(target=spin, args=(others, load, stop)) if load else None
                    if spinner:
                        spinner.start()
                    result = run_client(python, server.url, str(model),
                                        [{"kind": "load", "workload": w, "max_concurrency": batch}], work / "runs")[0]
                    if spinner:
                        stop.set()
                        spinner.join()
                    if output > 2:  # decodes: time per output token
                        metric, name = TPOT_METRIC, "TPOT"
                        client = float(np.mean((np.array(result["latencies"]) - np.array(result["ttfts"])) / (output - 1)))
                    else:
                        metric, name = TTFT_METRIC, "TTFT"
                        client = float(np.mean(result["ttfts"]))
                    measured.setdefault((shape, load), []).append((engine_mean_s(result, metric), client))
                    print(f"round {r} B={batch} prompt {prompt} foreign load {load:.0%}: engine {name} "
                          f"{measured[(shape, load)][-1][0] * 1e3:.2f} ms, client {client * 1e3:.2f} ms", flush=True)
    print(f"\nmedian over {args.rounds} rounds; ratio: the median over rounds of (this run / the same round's 0% run)")
    print(f"{'load':>28} {'foreign load':>13} {'engine ms':>10} {'x vs 0%':>8} {'client ms':>10} {'x vs 0%':>8}")
    for shape in SHAPES:
        base = measured[(shape, 0.0)]
        label = "TTFT, one 256-token prompt" if shape[2] == 2 else f"TPOT, {shape[0]} decoding"
        for load in LOADS:
            runs = measured[(shape, load)]
            engine = float(np.median([e for e, _ in runs]))
            client = float(np.median([c for _, c in runs]))
            ratio_e = float(np.median([e / b[0] for (e, _), b in zip(runs, base)]))
            ratio_c = float(np.median([c / b[1] for (_, c), b in zip(runs, base)]))
            print(f"{label:>28} {load:13.0%} {engine * 1e3:10.2f} {ratio_e:8.2f} {client * 1e3:10.2f} {ratio_c:8.2f}")


if __name__ == "__main__":
    main()
