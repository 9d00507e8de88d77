"""Measure the shipped vLLM CPU engine profile (cost_models/data/engine_profiles/vllm-0.32-cpu.yaml and its
.rows.csv) the way a user measures theirs: plan the tiny model for this CPU, start the generated serve_vllm.sh's
instance (its arguments, through vLLM's OpenAI server module) and run `planner calibrate --engine vllm` on it.

    python3 tools/calibrate_vllm_cpu.py [--nice -20] [--passes N] [--out cost_models/data/engine_profiles/vllm-0.32-cpu.yaml]

The plan is made without an engine profile (the cost model), for the chat-sessions traffic of
benchmarks/bench_vllm_real.py; the profile's coefficients do not depend on the plan's limits beyond its KV block
size and token budget, which the profile records.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_vllm_real import MODEL_NAME, ensure_env, plan_deployment, sessions, wait_for_calm  # noqa: E402

from cost_models.serving.trace_files import write_trace  # noqa: E402
from planner.cli import main as planner_main  # noqa: E402
from planner.engines.server import VllmServer, raise_group_priority, script_args  # noqa: E402


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated run still stops its engine (VllmServer)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "cost_models" / "data" / "engine_profiles" / "vllm-0.32-cpu.yaml")
    ap.add_argument("--nice", type=int, default=0)  # see bench_vllm_real.py --help
    ap.add_argument("--port", type=int, default=8150)
    ap.add_argument("--passes", type=int, default=1, help="calibration passes (`planner calibrate --passes`)")
    args = ap.parse_args()
    python = ensure_env()
    work = Path(tempfile.mkdtemp(prefix="calibrate_vllm_cpu_"))
    model = work / MODEL_NAME
    subprocess.run([str(python), str(ROOT / "tools" / "make_tiny_model.py"), str(model)], check=True)
    write_trace(work / "sessions.csv", sessions(400).with_rate(1.0))
    # the engine's arguments come from a plan; without a profile the roofline prices this CPU slower than vLLM
    # runs, so the plan asks for a rate it grants (the arguments do not depend on the rate: one instance)
    plan, script = plan_deployment(model, work / "sessions.csv", None, work, rate=1.0)
    engine_args = script_args(script, "args", "0", env={"BASE_PORT": str(args.port)})
    budget = plan["decision"]["serving"]["engines"]["instance"]["max_num_batched_tokens"]
    nice = ["nice", "-n", str(args.nice)] if args.nice else []
    wait_for_calm(3.5, 1800.0)
    if args.nice:
        raise_group_priority(args.nice)  # the client's session group (kernel autogroups), the engine's below
    with VllmServer(python, model, engine_args, args.port, work / "server.log", startup_s=900, prefix=nice,
                    group_nice=args.nice or None) as server:
        code = planner_main(["calibrate", "--engine", "vllm", "--url", server.url, "--model", str(model),
                             "--model-name", MODEL_NAME, "--max-num-batched-tokens", str(budget), "--nice", str(args.nice),
                             "--passes", str(args.passes), "-o", str(args.out)])
    print(f"engine arguments: {' '.join(engine_args)}")
    sys.exit(code)


if __name__ == "__main__":
    main()
