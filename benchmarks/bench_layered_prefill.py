"""The layered-prefill mechanism: MoE expert-weight bytes read to prefill one 8,192-token prompt of
qwen3-30b-a3b (128 experts, top-8, 48 MoE layers) on 1xH100-SXM, chunked prefill at chunk 512 ...
8192 against layered prefill (G from the published rule: 8,192 tokens -> 16 groups).

Chunked prefill runs every chunk through every layer, so each chunk reads the experts its tokens
touch (all 128 for a 512-token chunk: E(1 - (1 - k/E)^T)); layered prefill runs the whole prompt
through each layer group once, so each expert is read once per prompt. Baseline: layered prefill,
measured in the same run by the same simulator; the two must meet at chunk = prompt length.

    python3 benchmarks/bench_layered_prefill.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import planner
from cost_models.cluster import parse_cluster
from cost_models.serving.deployment import CostCache
from cost_models.serving.metrics import summarize
from cost_models.serving.policies import Chunked, Layered
from cost_models.serving.simulator import simulate_instance
from cost_models.serving.workload import fixed

PROMPT = 8192
CHUNKS = (512, 1024, 2048, 4096, 8192)


def main() -> None:
    graph = planner.capture("qwen3-30b-a3b", seq_len=2048)
    cost = CostCache(graph, parse_cluster("1xH100-SXM")).get(1, 1)
    w = fixed(1, PROMPT, 1, rate=1.0)
    layered = simulate_instance(cost, Layered(), w)
    base = layered.expert_bytes
    print(f"qwen3-30b-a3b, one {PROMPT}-token prompt, 1xH100-SXM (tp 1); expert bytes of one expert in one "
          f"layer: {cost.moe.expert_bytes / 1e6:.1f} MB, {cost.moe.moe_layers} MoE layers")
    print(f"{'schedule':<22}{'iterations':>11}{'expert GB read':>16}{'x layered':>11}{'prefill s':>11}")
    for chunk in CHUNKS:
        r = simulate_instance(cost, Chunked(chunk), w)
        ttft = summarize(r)["ttft_mean"]
        print(f"{'chunked ' + str(chunk):<22}{r.iterations:>11}{r.expert_bytes / 1e9:>16.2f}"
              f"{r.expert_bytes / base:>11.2f}{ttft:>11.3f}")
    ttft = summarize(layered)["ttft_mean"]
    print(f"{'layered (G=16)':<22}{layered.iterations:>11}{base / 1e9:>16.2f}{1.0:>11.2f}{ttft:>11.3f}")


if __name__ == "__main__":
    main()
