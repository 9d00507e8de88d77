"""Use the planner inside a training pipeline: plan a run, check it, and hand its decisions to the
training launcher (here: print the torchrun layout and the per-stage layer ranges).

    python3 examples/plan_training.py [--model llama-3.1-70b] [--cluster 8xdgx-h100]
"""

from __future__ import annotations

import argparse

import planner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3.1-70b")
    parser.add_argument("--cluster", default="8xdgx-h100")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=4096)
    args = parser.parse_args()

    plan = planner.plan(args.model, args.cluster, "train", batch=args.batch, seq_len=args.seq_len)
    problems = plan.verify()
    if problems:
        raise SystemExit("plan does not verify: " + "; ".join(problems))
    d, p = plan.decision, plan.predicted
    print(f"dp={d.dp} tp={d.tp} pp={d.pp} microbatch={d.microbatch_size} x {d.microbatches} "
          f"recompute={d.recompute} zero={d.zero_stage}")
    print(f"predicted {p.tokens_per_s:,.0f} tokens/s, MFU {p.mfu:.1%}, "
          f"{p.memory_per_device_bytes / 1e9:.1f} GB on the fullest device")
    for stage in d.stages:
        print(f"  stage {stage.stage}: layers {stage.first_layer} .. {stage.last_layer} on ranks "
              f"{list(stage.ranks[0])} (+{len(stage.ranks) - 1} data-parallel replicas)")


if __name__ == "__main__":
    main()
