"""Generated run_plan.py vs a hand-written torch.distributed program of the same plan, on CPU (gloo).

Plan: tiny-llama training with tp=2 on 2xcpu (2 ranks). Both programs build the same seeded model,
shard it with DTensor `parallelize_module` (q/k/v, gate/up column-wise; o/down row-wise; lm_head
column-wise gathered), and run AdamW steps on the same synthetic batch; the first step is a warm-up
and each program reports its median step time.
Prints train tokens/s of both and the ratio generated / hand-written (target >= 0.95).

    python benchmarks/bench_codegen.py [--steps 20] [--batch 8] [--seq-len 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import planner
from codegen import codegen

HAND_WRITTEN = '''
import json, sys, time
import torch, torch.distributed as dist, torch.nn.functional as F, transformers
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

steps, batch, seq = (int(a) for a in sys.argv[1:4])
dist.init_process_group("gloo")
mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("tp",))
config = transformers.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=4,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                  rms_norm_eps=1e-5, tie_word_embeddings=False)
config._attn_implementation = "sdpa"
torch.manual_seed(0)
model = transformers.LlamaForCausalLM(config)
plan = {"lm_head": ColwiseParallel(output_layouts=Replicate())}
for i in range(config.num_hidden_layers):
    for p in ("q_proj", "k_proj", "v_proj"):
        plan[f"model.layers.{i}.self_attn.{p}"] = ColwiseParallel()
    plan[f"model.layers.{i}.self_attn.o_proj"] = RowwiseParallel()
    plan[f"model.layers.{i}.mlp.gate_proj"] = ColwiseParallel()
    plan[f"model.layers.{i}.mlp.up_proj"] = ColwiseParallel()
    plan[f"model.layers.{i}.mlp.down_proj"] = RowwiseParallel()
parallelize_module(model, mesh, plan)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
tokens = torch.randint(0, 512, (batch, seq + 1), generator=torch.Generator().manual_seed(1))
x, y = tokens[:, :-1], tokens[:, 1:]
times = []
for _ in range(steps):
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - start)
if dist.get_rank() == 0:
    timed = sorted(times[1:] or times)
    print(json.dumps({"train_tokens_per_s": batch * seq / timed[len(timed) // 2]}), flush=True)
dist.destroy_process_group()
'''


def _torchrun(folder: Path, script: str, *args: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", script, *args]
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("{"))
    return float(json.loads(line)["train_tokens_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each; the best counts")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-codegen-"))
    plan = planner.plan("tiny-llama", "2xcpu", "train", batch=args.batch, seq_len=args.seq_len, tp=2)
    codegen(plan, folder)
    (folder / "hand_written.py").write_text(HAND_WRITTEN)
    generated, hand = [], []
    for _ in range(args.repeats):  # alternate so that load from other processes hits both alike
        generated.append(_torchrun(folder, "run_plan.py", "--mode", "train", "--steps", str(args.steps),
                                   "--batch", str(args.batch), "--seq-len", str(args.seq_len)))
        hand.append(_torchrun(folder, "hand_written.py", str(args.steps), str(args.batch), str(args.seq_len)))
    ratio = max(generated) / max(hand)
    print(f"plan: tiny-llama train tp=2 on 2xcpu (gloo), batch {args.batch} x seq {args.seq_len}, {args.steps} steps")
    print(f"generated run_plan.py : {max(generated):10.1f} tokens/s  (runs: {', '.join(f'{v:.0f}' for v in generated)})")
    print(f"hand-written          : {max(hand):10.1f} tokens/s  (runs: {', '.join(f'{v:.0f}' for v in hand)})")
    print(f"ratio generated / hand-written: {ratio:.3f}  ({'PASS' if ratio >= 0.95 else 'FAIL'} >= 0.95)")


if __name__ == "__main__":
    main()
