"""Rewrite the serving plan fixtures of the codegen golden tests (tests/golden/codegen/plans/serve_*.json) with
the current planner: one plan per kind of serving deployment the engine scripts must express (and the decode
batch plan, whose engine settings the plan records too).

    python3 tests/golden/codegen/make_serving_plans.py [NAME ...]

Then rewrite the goldens on purpose: UPDATE_GOLDEN=1 python3 -m pytest -q tests/test_codegen_golden.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from planner.cli import main  # noqa: E402

PLANS = Path(__file__).parent / "plans"
CASES = {  # name -> `planner plan` arguments
    "serve_dense": ["llama-3-8b", "--cluster", "1xH100-SXM", "--workload", "chat", "--slo", "ttft=1,tpot=0.05"],
    "serve_chunk512": ["llama-3-8b", "--cluster", "1xA100-SXM-80GB", "--workload", "chat", "--slo", "ttft=1,tpot=0.02"],
    "serve_dp4": ["llama-3-8b", "--cluster", "4xH100-SXM", "--workload", "summarize", "--tp", "1", "--rate", "20"],
    "serve_fp8": ["llama-3-8b", "--cluster", "1xH100-SXM", "--workload", "chat", "--dtype", "fp8"],
    "serve_moe": ["qwen3-30b-a3b", "--cluster", "2xH100-SXM", "--workload", "code", "--tp", "2"],
    "serve_wide_ep": ["qwen3-30b-a3b", "--cluster", "4xH100-SXM", "--workload", "chat", "--tp", "1", "--ep", "4"],
    "serve_wide_ep_2node": ["deepseek-v3", "--cluster", "2x8xH100-SXM", "--workload", "chat"],
    "serve_pp2": ["llama-3.1-70b", "--cluster", "2x4xH100-SXM", "--workload", "chat", "--tp", "4", "--pp", "2"],
    "serve_disagg": ["opt-13b", "--cluster", "4xA100-SXM-80GB", "--workload", "chat", "--slo", "ttft=0.2,tpot=0.05",
                     "--engine-profile", "colocated=vllm-0.2-a100-80gb,disaggregated=distserve-a100-80gb"],
    "decode_tp2_pp2": ["tiny-llama", "--cluster", "4xcpu", "--workload", "decode", "--batch", "8", "--input-len", "32",
                       "--output-len", "16", "--tp", "2", "--pp", "2"],
    "serve_fleet": ["llama-3-8b", "--cluster", "H100-SXM,A100-SXM-80GB,4xL4", "--workload", "chat", "--rate", "10"],
}


def run(names: list[str]) -> None:
    for name in names or sorted(CASES):
        code = main(["plan", *CASES[name], "-o", str(PLANS / f"{name}.json")])
        print(f"{name}: exit {code}")


if __name__ == "__main__":
    run(sys.argv[1:])
