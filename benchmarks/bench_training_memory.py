"""Memory honesty of generated training programs: each rank's measured peak of a training step against the
plan's predicted memory of its stage, for plans that run here (gloo, CPU, fp32), and FSDP2 per block
against FSDP2 on the whole stage (what the runtime did before) for the same ZeRO-3 plan.

Model: a small Llama (hidden 256, 4 blocks, vocabulary 2048, 4.0M parameters; tiny-llama's states are too
small beside its activations to show sharding) planned from its config.json, batch 4 x 64 tokens, bf16 as
planned: the program keeps fp32 weights, gradients and Adam states and computes in bf16 (FSDP2's
mixed-precision policy, else autocast), which gloo runs on CPU too.
Each case generates the plan's program and runs it under torchrun; every rank builds its stage with the
runtime's own functions (aot_runtime.program.build_stage), takes one warm-up step (the optimizer states
then exist), then profiles one step (torch.profiler, profile_memory: the peak of its allocation counter)
and adds the bytes alive before it (its parameter shards, optimizer states and buffers).

Predicted: the plan's `stage_memory_bytes` of the rank's stage, with and without the device reserve (which
models a CUDA context and allocator slack the CPU counters do not see). The planner counts 16-bit weights
and gradients plus 12 B/param of fp32 optimizer state (master weights, Adam m and v), 16 B/param unsharded;
the program keeps 4 + 4 + 8 B/param, the same 16.
Target: measured <= predicted for every rank (with the reserve: the plan's number; without it: how close the
formulas come); per-block ZeRO-3 below whole-stage ZeRO-3.

    python benchmarks/bench_training_memory.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import planner
from codegen import codegen

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 688,
          "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 2048,
          "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu"}
BATCH, SEQ, DTYPE = 4, 64, "bf16"
CASES = {  # name: (cluster, fixed degrees, decision overrides, whole-stage FSDP baseline?)
    "dp2 ZeRO-0 (DDP)": ("2xcpu", {"dp": 2}, {"zero_stage": 0}, False),
    "dp2 ZeRO-1": ("2xcpu", {"dp": 2}, {"zero_stage": 1}, False),
    "dp2 ZeRO-3 per block": ("2xcpu", {"dp": 2}, {"zero_stage": 3}, False),
    "dp2 ZeRO-3 whole stage": ("2xcpu", {"dp": 2}, {"zero_stage": 3}, True),
    "tp2": ("2xcpu", {"tp": 2, "sequence_parallel": False}, {}, False),
    "pp2 1f1b": ("2xcpu", {"pp": 2, "schedule": "1f1b"}, {}, False),
    "pp2 interleaved": ("2xcpu", {"pp": 2, "schedule": "interleaved"}, {}, False),
    "dp2 pp2": ("4xcpu", {"dp": 2, "pp": 2, "schedule": "1f1b"}, {}, False),
}  # overrides only for single-stage plans: the estimator then gives the stage's prediction

DRIVER = r'''
import json, os, sys, tempfile
import torch, torch.distributed as dist
sys.path.insert(0, os.getcwd())
from run_plan import PLAN
from aot_runtime import base, program, train, parallel, data, model as M, weights
from torch.distributed.fsdp import fully_shard

whole = sys.argv[1] == "whole"
plan = base.expand_plan(PLAN)
args = program.parse_args(plan, ["--mode", "train", "--batch", sys.argv[2], "--seq-len", sys.argv[3], "--max-norm", "1"])
rank = program.Rank(plan, dtype=sys.argv[4])
if whole:  # the former runtime: FSDP2 on the whole stage as one unit
    stage = program.shard_stage(plan, rank, M.build_model(plan["model"], torch.float32, "meta"), False)
    stage = fully_shard(stage, mesh=rank.mesh["dp"], reshard_after_forward=True)
    weights.materialise(stage, plan["model"], rank.device, "seeded", 0, None)
    model = stage
else:
    model = program.build_stage(plan, rank, args, train_mode=True)
if rank.pp > 1:
    rank.schedule = parallel.make_schedule(model, rank.s, rank.pp, plan["microbatches"], plan["schedule"],
                                           rank.mesh["pp"].get_group(), rank.device, base.lm_loss)
opt = train.make_optimizer(model, "adamw", 1e-3, 0.0)
tokens = data.TokenSource(None, plan["vocab_size"], 0)
lo, hi = base.split_rows(args.batch, rank.dp, rank.d)

def step(k):
    x, y = tokens.batch(k, args.batch, args.seq_len)
    opt.zero_grad(set_to_none=True)
    train.forward_backward(plan, rank, model, x[lo:hi], y[lo:hi])
    train.clip_gradients(model, rank, 1.0)
    opt.step()

def local_bytes(t):
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()

step(0)
opt.zero_grad(set_to_none=True)
alive = sum(local_bytes(p) for p in model.parameters()) + sum(local_bytes(b) for b in model.buffers())
alive += sum(local_bytes(v) for state in opt.state.values() for v in state.values() if torch.is_tensor(v))
from torch.profiler import ProfilerActivity, profile
dist.barrier()
with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
    step(1)
fd, path = tempfile.mkstemp(suffix=".json"); os.close(fd)
prof.export_chrome_trace(path)
events = json.load(open(path))["traceEvents"]; os.remove(path)
peak = max((e["args"].get("Total Allocated", 0) for e in events
            if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == 0), default=0)
got = [None] * dist.get_world_size()
dist.all_gather_object(got, {"rank": rank.rank, "stage": rank.s, "alive": alive, "peak": alive + peak})
if rank.rank == 0:
    print("RESULT " + json.dumps(got), flush=True)
dist.barrier()
dist.destroy_process_group()
'''


def run_case(folder: Path, name: str) -> tuple[dict, list[dict]]:
    cluster, fixed, overrides, whole = CASES[name]
    plan = planner.plan(str(folder / "model"), cluster, "train", batch=BATCH, seq_len=SEQ, dtype=DTYPE, **fixed)
    data = plan.to_dict()
    data["decision"].update(overrides)
    if overrides:  # the prediction of the changed decision (zero stage, microbatches) comes from the estimator
        d = data["decision"]
        est = planner.estimate(str(folder / "model"), cluster, "train", tp=d["tp"], pp=d["pp"], dp=d["dp"], batch=BATCH,
                               input_len=SEQ, microbatch_size=d["microbatch_size"], zero_stage=d["zero_stage"],
                               dtype=DTYPE, recompute=d.get("recompute", "none"))
        data["predicted"]["memory_breakdown_bytes"] = est["memory_breakdown_bytes"]
        data["predicted"]["stage_memory_bytes"] = [est["memory_per_device_bytes"]]
    gen = folder / name.replace(" ", "_").replace("(", "").replace(")", "")
    codegen(data, gen)
    (gen / "driver.py").write_text(DRIVER)
    world = data["decision"]["dp"] * data["decision"]["tp"] * data["decision"]["pp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world), "driver.py",
           "whole" if whole else "block", str(BATCH), str(SEQ), DTYPE]
    proc = subprocess.run(cmd, cwd=gen, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return data, json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])


def predicted(data: dict, stage: int) -> tuple[float, float]:
    """(the plan's bytes of the stage, the same without the device reserve)."""
    pred = data["predicted"]
    total = pred["stage_memory_bytes"][stage]
    return total, total - pred["memory_breakdown_bytes"]["reserve"]


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="bench-train-memory-"))
    (folder / "model").mkdir()
    (folder / "model" / "config.json").write_text(json.dumps(CONFIG))
    print(f"small Llama (hidden 256, 4 blocks, vocab 2048), batch {BATCH} x {SEQ}, {DTYPE}, gloo/CPU; MB = 1e6 bytes")
    print(f"{'case':24} {'rank':>4} {'stage':>5} {'zero':>4} {'measured':>9} {'plan':>9} {'meas/plan':>9} "
          f"{'plan-reserve':>12} {'meas/(plan-reserve)':>19}")
    ok, close, peaks = True, [], {}
    for name in CASES:
        data, ranks = run_case(folder, name)
        for r in ranks:
            plan_b, bare = predicted(data, r["stage"])
            ok &= r["peak"] <= plan_b
            close.append(r["peak"] / bare)
            print(f"{name:24} {r['rank']:>4} {r['stage']:>5} {data['decision']['zero_stage']:>4} {r['peak'] / 1e6:9.2f} "
                  f"{plan_b / 1e6:9.2f} {r['peak'] / plan_b:9.3f} {bare / 1e6:12.2f} {r['peak'] / bare:19.3f}")
        peaks[name] = max(r["peak"] for r in ranks)
    block, whole = peaks["dp2 ZeRO-3 per block"], peaks["dp2 ZeRO-3 whole stage"]
    print(f"ZeRO-3 peak, FSDP2 per block / whole stage: {block / whole:.3f} ({block / 1e6:.2f} MB vs {whole / 1e6:.2f} MB)")
    print(f"measured / (plan - reserve): {min(close):.3f} .. {max(close):.3f}")
    print("every rank at or below the plan:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
