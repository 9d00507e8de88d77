"""Predicted vs measured peak memory of tiny-llama on this CPU (fp32, random weights, seed 0).

Measured: torch.profiler(profile_memory=True) records every CPU allocator event of one step; its
"Total Allocated" counter starts at zero when profiling starts, so the peak is that counter's maximum
plus the bytes alive before the step (parameters; for training also the Adam states, gradients being
freed by zero_grad(set_to_none=True)). A warm-up step runs first so Adam's states exist.

Predicted: the planner's formulas and the margin items that are tensors the allocator holds, without
the fixed reserve (runtime: CUDA context and library workspaces) and without allocator fragmentation
(neither is visible to the CPU allocator's counters): training = `stage_memory_items` (weights,
gradients, Adam states: 16 B/param either way, since fp32 Adam keeps 4 + 4 + 8) + activations + the
backward workspace (one layer's activation gradients beside the saved activations); inference (prefill
with KV cache) = `inference_memory` weights + KV cache + activations + the logits eager Hugging Face
computes for every prompt token. Activation formulas count 16-bit activations, so they are scaled by
4/2 for this fp32 run. Target (issues #14 and #18): predicted >= measured in every case, and not
more than 1.6x (a formula that always over-reserves wastes the memory it claims to protect).

    python benchmarks/bench_memory_measured.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import torch

import planner
from cost_models.cluster import parse_cluster
from cost_models.estimate_context import make_context
from cost_models.estimate_infer import inference_margin_items, inference_memory
from cost_models.estimate_train import stage_memory_items
from cost_models.parallel_config import Options
from planner.presets import get_preset

FP32_OVER_16BIT = 2.0
MAX_OVER = 1.6
CASES = (("train", 4, 128), ("train", 8, 256), ("prefill", 8, 256), ("prefill", 16, 512))


def _model():
    import transformers

    preset = get_preset("tiny-llama")
    config = getattr(transformers, preset.config_class)(**preset.values, attn_implementation="sdpa")
    torch.manual_seed(0)
    return getattr(transformers, preset.architecture)(config).float()


def _profiled_peak(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.remove(path)
    totals = [e["args"].get("Total Allocated", 0) for e in events
              if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == 0]
    return max(totals, default=0)


def measure(phase: str, batch: int, seq: int) -> int:
    torch.manual_seed(0)
    model = _model()
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    if phase == "prefill":
        model.eval()
        with torch.no_grad():
            return params + _profiled_peak(lambda: model(input_ids=ids, use_cache=True))
    opt = torch.optim.Adam(model.parameters())

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    return 3 * params + _profiled_peak(step)  # weights + Adam m and v stay alive between steps


def predict(phase: str, batch: int, seq: int) -> int:
    graph = planner.capture("tiny-llama", seq_len=seq, dtype="fp32")
    options = Options(tp=1, pp=1, dp=1, batch=batch, input_len=seq, output_len=1, microbatch_size=batch, dtype="fp32",
                      ep_over_dp=phase == "train")  # the training-layout marker: training margin items
    ctx = make_context(graph, parse_cluster("1xcpu"), options)
    if phase == "train":
        mem, margin = stage_memory_items(ctx, 0, (0, len(graph.layers)), batch, seq, 1)
        return int(mem["weights"] + mem["gradients"] + mem["optimizer"]
                   + (mem["activations"] + margin["backward_workspace"]) * FP32_OVER_16BIT)
    mem = inference_memory(ctx, batch, seq, batch * seq)
    logits = inference_margin_items(ctx, batch, batch * seq)["logits"]  # float32 already
    return int(mem["weights"] + mem["kv_cache"] + mem["activations"] * FP32_OVER_16BIT + logits)


def main() -> int:
    torch.set_num_threads(2)
    print(f"{'case':28} {'predicted MB':>13} {'measured MB':>12} {'pred/meas':>10}")
    ok = True
    for phase, batch, seq in CASES:
        pred, meas = predict(phase, batch, seq), measure(phase, batch, seq)
        ratio = pred / meas
        ok &= 1.0 <= ratio <= MAX_OVER
        print(f"{f'tiny-llama {phase} b{batch} s{seq}':28} {pred / 1e6:13.2f} {meas / 1e6:12.2f} {ratio:10.3f}")
    print(f"every case predicted >= measured and <= {MAX_OVER}x measured:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
