"""Generated run_plan.py vs a hand-written torch.distributed program of the same plan, on CPU (gloo).

Plan: tiny-llama training with tp=2 on 2xcpu (2 ranks), sequence parallelism off (the hand-written
program is plain Megatron TP). Both programs build the same seeded fp32 model, shard it with DTensor
`parallelize_module` (q/k/v, gate/up column-wise; o/down row-wise; lm_head column-wise gathered) and
run AdamW steps on the same synthetic batch, with the same torch thread count
per rank (OMP_NUM_THREADS, default 1: 2 ranks x 1 thread fill 2 cores). Start-up, imports and model
building are never timed.

--mode interleaved (default): each trial is one torchrun holding both programs in the same two ranks
(the generated run_plan.py loaded as a module, its own train_step), which run one step each in turn,
swapping which goes first every round; the ranks meet at a barrier before each timed step and a step
counts as the slower rank's time. Load from other processes on a shared machine then hits both alike.
--mode programs: each program as launched (a fresh torchrun each, ABBA order); the generated one reports
its rank 0 median step time (codegen/runtime/train.py `train`), the hand-written one the same statistic.
The generated step also clips gradients to the global norm (one all-reduce more than the hand-written step).
Prints every trial and the throughput ratio generated / hand-written (target >= 0.95): in interleaved
mode the median over all rounds of the ratio of the two steps run back to back, with quartiles and spread.

    python benchmarks/bench_codegen.py [--mode interleaved|programs] [--trials 3] [--steps 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import planner

HAND_WRITTEN = '''
import json, sys, time
import torch, torch.distributed as dist, torch.nn.functional as F, transformers
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module


def build(batch, seq):
    """The hand-written TP program's model, optimizer and batch; returns its train step."""
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
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 512, (batch, seq + 1), generator=torch.Generator().manual_seed(1))
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def step():  # use_cache=False: training keeps no KV cache (the generated Stage passes none either)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x, use_cache=False).logits.flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        return loss.detach()

    return step


if __name__ == "__main__":
    steps, batch, seq = (int(a) for a in sys.argv[1:4])
    dist.init_process_group("gloo")
    step = build(batch, seq)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        timed = sorted(times[1:] or times)  # as codegen/runtime/train.py: the first step warms up, then the median
        step_s = timed[len(timed) // 2]
        print(json.dumps({"train_step_s": step_s, "train_tokens_per_s": batch * seq / step_s,
                          "threads": torch.get_num_threads()}), flush=True)
    dist.destroy_process_group()
'''

# Both programs in the same two ranks, one step of each in turn: the generated program's own code (its
# aot_runtime package, as run_plan.py calls it: codegen/runtime/program.py `run` and train.py `train`) and the
# hand-written step. Ranks meet at a barrier before each timed step; a step's time is the slower rank's.
INTERLEAVED = '''
import json, sys, time
import torch, torch.distributed as dist
from hand_written import build
from run_plan import PLAN
from aot_runtime import base, data, parallel, program, train

steps, warmup, batch, seq = (int(a) for a in sys.argv[1:5])
plan = base.expand_plan(PLAN)
args = program.parse_args(plan, ["--mode", "train", "--batch", str(batch), "--seq-len", str(seq)])
rank = program.Rank(plan, args.device, args.dtype)
model = program.build_stage(plan, rank, args, train_mode=True)
if rank.pp > 1:
    rank.schedule = parallel.make_schedule(model, rank.s, rank.pp, plan["microbatches"], plan["schedule"],
                                           rank.mesh["pp"].get_group(), rank.device, base.lm_loss)
opt = train.make_optimizer(model, args.optimizer, args.lr, args.weight_decay)
x, y = data.TokenSource(None, plan["vocab_size"], args.seed).batch(0, batch, seq)
lo, hi = base.split_rows(batch, rank.dp, rank.d)


def generated_step():  # the body of train.train's loop for one step
    opt.zero_grad(set_to_none=True)
    train.forward_backward(plan, rank, model, x[lo:hi], y[lo:hi])
    train.clip_gradients(model, rank, args.max_norm)
    opt.step()


step_of = {"generated": generated_step, "hand": build(batch, seq)}
times = {name: [] for name in step_of}
for i in range(warmup + steps):
    for name in (("generated", "hand") if i % 2 == 0 else ("hand", "generated")):
        dist.barrier()
        start = time.perf_counter()
        step_of[name]()
        spent = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
        dist.all_reduce(spent, op=dist.ReduceOp.MAX)
        if i >= warmup:
            times[name].append(float(spent))
if dist.get_rank() == 0:
    print(json.dumps({"times": times, "threads": torch.get_num_threads()}), flush=True)
dist.destroy_process_group()
'''


def _torchrun(folder: Path, threads: int, script: str, *args: str) -> dict:
    """One fresh 2-rank torchrun of `script`; returns rank 0's JSON line."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", script, *args]
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-3000:]}")
    return json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("{")))


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} (spread {min(values):.3f}..{max(values):.3f})"


def interleaved(folder: Path, args) -> list[float]:
    """Per trial: one torchrun running both programs' steps in turn; returns every round's paired ratio.

    A round's ratio is hand-written step time / generated step time of the two steps run back to back, so
    load that changes between rounds cancels; the medians and bests of each program are printed as well.
    """
    paired = []
    tokens = args.batch * args.seq_len
    for trial in range(args.trials):
        load = os.getloadavg()[0]
        out = _torchrun(folder, args.threads, "interleaved.py", str(args.steps), str(args.warmup), str(args.batch),
                        str(args.seq_len))
        gen, hand = out["times"]["generated"], out["times"]["hand"]
        rounds = [h / g for g, h in zip(gen, hand)]
        paired += rounds
        print(f"trial {trial + 1} (load {load:4.2f}, {out['threads']} thread(s) per rank, {len(gen)} rounds):")
        for name, times in (("generated", gen), ("hand", hand)):
            print(f"  {name:9s} median {1e3 * statistics.median(times):7.2f} ms ({tokens / statistics.median(times):7.1f}"
                  f" tokens/s), best {1e3 * min(times):7.2f} ms")
        print(f"  ratio per round {_spread(rounds)}; of medians {statistics.median(hand) / statistics.median(gen):.3f}, "
              f"of bests {min(hand) / min(gen):.3f}")
    return paired


def programs(folder: Path, args) -> list[float]:
    """Per pair: one fresh torchrun of each whole program (ABBA order); returns the pairs' ratios."""
    ratios = []
    for pair in range(args.trials):
        order = ("generated", "hand") if pair % 2 == 0 else ("hand", "generated")
        result = {}
        for variant in order:
            load = os.getloadavg()[0]
            if variant == "generated":
                out = _torchrun(folder, args.threads, "run_plan.py", "--mode", "train", "--steps", str(args.steps),
                                "--batch", str(args.batch), "--seq-len", str(args.seq_len))
            else:
                out = _torchrun(folder, args.threads, "hand_written.py", str(args.steps), str(args.batch),
                                str(args.seq_len))
            result[variant] = float(out["train_tokens_per_s"])
            print(f"pair {pair + 1} {variant:9s} {result[variant]:8.1f} tokens/s, median step "
                  f"{1e3 * out['train_step_s']:7.2f} ms (load {load:4.2f})", flush=True)
        ratios.append(result["generated"] / result["hand"])
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["interleaved", "programs"], default="interleaved")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each program per trial")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each first (interleaved mode)")
    parser.add_argument("--trials", type=int, default=3, help="torchruns (interleaved) or ABBA pairs (programs)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (OMP_NUM_THREADS), both programs")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-codegen-"))
    # sequence parallelism off: the hand-written program is plain Megatron TP (the same collectives)
    plan = planner.plan("tiny-llama", "2xcpu", "train", batch=args.batch, seq_len=args.seq_len, tp=2,
                        sequence_parallel=False)
    planner.codegen(plan, folder)  # verified, then rendered
    (folder / "hand_written.py").write_text(HAND_WRITTEN)
    (folder / "interleaved.py").write_text(INTERLEAVED)
    print(f"plan: tiny-llama train tp=2 on 2xcpu (gloo), fp32, batch {args.batch} x seq {args.seq_len}; "
          f"{args.mode} mode, {args.trials} trials of {args.steps} steps; {args.threads} thread(s) per rank on "
          f"{os.cpu_count()} cores", flush=True)
    ratios = (interleaved if args.mode == "interleaved" else programs)(folder, args)
    median = statistics.median(ratios)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [median] * 3
    what = "rounds" if args.mode == "interleaved" else "pairs"
    print(f"ratio generated / hand-written (throughput) over {len(ratios)} {what}: median {median:.3f}, quartiles "
          f"{quartiles[0]:.3f}..{quartiles[2]:.3f}, spread {min(ratios):.3f}..{max(ratios):.3f}  "
          f"({'PASS' if median >= 0.95 else 'FAIL'} >= 0.95)")


if __name__ == "__main__":
    main()
