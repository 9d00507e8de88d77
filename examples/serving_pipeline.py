"""Use the planner inside a serving pipeline: for a model, cluster, traffic and SLO, get the
deployment layout (tensor/pipeline parallel size and replicas) and the predicted latencies.

    python3 examples/serving_pipeline.py [--model llama-3-8b] [--rate 4] [--ttft 0.5] [--tpot 0.05]
"""

from __future__ import annotations

import argparse

import planner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3-8b")
    parser.add_argument("--cluster", default="8xH100-SXM")
    parser.add_argument("--workload", default="chat")
    parser.add_argument("--rate", type=float, default=4.0)
    parser.add_argument("--ttft", type=float, default=0.5)
    parser.add_argument("--tpot", type=float, default=0.05)
    args = parser.parse_args()

    plan = planner.plan(args.model, args.cluster, args.workload, rate=args.rate,
                        slo={"ttft": args.ttft, "tpot": args.tpot})
    d, p = plan.decision, plan.predicted
    print(f"deploy {d.dp} replica(s) with tensor_parallel_size={d.tp} pipeline_parallel_size={d.pp}")
    print(f"predicted TTFT {p.ttft_s * 1e3:.1f} ms, TPOT {p.tpot_s * 1e3:.2f} ms, "
          f"{p.output_tokens_per_s:,.0f} output tokens/s")
    for line in plan.plan.binding_constraints:
        print("  -", line)


if __name__ == "__main__":
    main()
