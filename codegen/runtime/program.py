"""The per-rank program of a plan: options, this rank's place, building its stage, inference, training.

Global rank r sits at mesh[pp][dp][tp] as the plan's `stages[s].ranks[d][t]` says (stages of different tp
have a (dp, tp) mesh each: hetero.py). A stage is built on the meta device, cut to this rank's blocks,
sharded (experts, tensor/sequence parallelism, recomputation, FSDP2 per block), and only then given
weights (weights.py); DDP, where the plan replicates a stage, wraps it last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .base import DTYPES, PlanError, expand_plan, hf_name, lm_loss, split_rows, stage_param_name
from .data import TokenSource, load_tokens
from .ep import apply_ep_dp, ep_mesh, gather_expert_state, shard_experts
from .hetero import hetero_dp, hetero_layout
from .infer import infer
from .model import ChunkedStage, build_model, chunk_modules, cut_stages
from .parallel import apply_fsdp, apply_recompute, apply_tp, build_mesh, make_schedule, wrap_ddp
from .train import train
from .weights import materialise


class Rank:
    """This process's place in the plan: stage, dp and tp coordinates, mesh, device and dtypes."""

    def __init__(self, plan: dict, device: str = "auto", dtype: str = "auto"):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world != plan["world_size"]:
            raise PlanError(f"world size {world} does not match the plan's {plan['world_size']} ranks "
                            f"({plan['layout']}); launch with launch.sh")
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        self.rank = dist.get_rank()
        self.hetero = bool(plan.get("hetero_tp"))
        if self.hetero:
            self.grid = [stage["ranks"] for stage in plan["stages"]]
            self.s, self.d, self.t, self.mesh = hetero_layout(plan, self.rank, self.device.type)
        else:
            self.mesh = build_mesh(plan, self.device.type)
            self.s, self.d, self.t = (int(c) for c in self.mesh.get_coordinate())
        self.tp, self.pp, self.dp, self.ep = self.mesh["tp"].size(), plan["pp"], plan["dp"], plan.get("ep", 1)
        self.holders = self.dp * self.tp  # ranks holding this stage
        self.ep_mesh = ep_mesh(plan, self.device.type) if self.ep > 1 else None
        self.dtype = DTYPES[dtype if dtype != "auto" else (plan["dtype"] if use_cuda else "fp32")]  # compute dtype
        self.schedule, self.manual_dp, self.autocast = None, False, None

    def peer(self, stage: int) -> int:
        """Global rank of this rank's counterpart (same dp, tp) in another stage."""
        return int(self.mesh.mesh[stage, self.d, self.t])


def shard_stage(plan: dict, rank: Rank, full: nn.Module, sequence_parallel: bool) -> nn.Module:
    """This rank's stage (or interleaved chunks) of `full`, experts split and tensor-parallel."""
    spec = plan["stages"][rank.s]
    parts = []
    for part in cut_stages(full, spec, plan["num_blocks"]):
        try:
            shard_experts(part, rank.ep_mesh, rank.ep, rank.mesh["tp"])
            parts.append(apply_tp(part, rank.mesh["tp"], plan["heads"], plan["kv_heads"], sequence_parallel))
        except ValueError as exc:
            raise PlanError(str(exc)) from None
    return ChunkedStage(parts) if spec.get("chunks") else parts[0]


def data_parallel(plan: dict, rank: Rank, model: nn.Module) -> nn.Module:
    """FSDP2 per block as planned (experts on their edp mesh with ep > 1); sets rank.manual_dp for
    stages of different tp that average gradients themselves, and rank.autocast where nothing casts."""
    from torch.distributed.fsdp import FSDPModule

    zero = plan["zero_stage"]
    if rank.hetero:
        model, rank.manual_dp = hetero_dp(model, rank.mesh, zero, rank.dtype)
    elif rank.ep > 1:
        parts = [apply_ep_dp(part, rank.ep_mesh, rank.mesh["dp"], zero, rank.dtype) for part in chunk_modules(model)]
        model = ChunkedStage(parts) if isinstance(model, ChunkedStage) else parts[0]
    else:
        model = apply_fsdp(model, rank.mesh, zero, rank.dtype)
    fsdp = any(isinstance(m, FSDPModule) for m in model.modules())
    rank.autocast = None if fsdp or rank.dtype == torch.float32 else rank.dtype
    return model


def build_stage(plan: dict, rank: Rank, args: argparse.Namespace, train_mode: bool) -> nn.Module:
    """This rank's stage, sharded on the meta device, then materialised (module docstring). Training keeps
    fp32 weights (the compute dtype comes from FSDP's policy or autocast); inference the compute dtype."""
    sp = train_mode and rank.tp > 1 and bool(plan.get("sequence_parallel"))
    full = build_model(plan["model"], torch.float32 if train_mode else rank.dtype, "meta")
    model = shard_stage(plan, rank, full, sp)
    if train_mode:
        model.train()
        apply_recompute(model, plan.get("recompute", "none"))
        model = data_parallel(plan, rank, model)
    materialise(model, plan["model"], rank.device, args.init, args.seed, args.checkpoint)
    if train_mode and not rank.hetero:
        model = wrap_ddp(model, rank.mesh, plan["zero_stage"])
    return model


def full_state(model: nn.Module) -> dict:
    """Full (unsharded) fp32 tensors of this stage's parameters under Hugging Face names (collective; --dump)."""
    from torch.distributed.tensor import DTensor

    state = {}
    for name, p in model.named_parameters():
        t = p.full_tensor() if isinstance(p, DTensor) else p
        state[hf_name(stage_param_name(name))] = t.detach().float().cpu()
    return gather_expert_state(model, state, hf_name)  # whole experts back, if any were split


def parse_args(plan: dict, argv: list[str] | None) -> argparse.Namespace:
    w = plan["workload"]
    p = argparse.ArgumentParser(description=f"Run plan {plan['fingerprint']} of {plan['model_name']} on this rank. "
                                            f"Paths are relative to the directory you launch from.")
    p.add_argument("--mode", choices=["train", "infer", "both"], default=plan["default_mode"])
    p.add_argument("--batch", type=int, default=w["batch"], help="global batch (sequences)")
    p.add_argument("--seq-len", type=int, default=w["seq_len"], help="tokens per sequence (prompt length in infer)")
    p.add_argument("--steps", type=int, default=1, help="optimizer steps (train, in all) or repeats (infer)")
    p.add_argument("--new-tokens", type=int, default=w.get("output_len") or 8, help="greedy decode tokens (infer)")
    p.add_argument("--data", help="training tokens: a .npy/.bin of token ids, or a text file with --tokenizer "
                                  "(default: seeded synthetic tokens)")
    p.add_argument("--tokenizer", help="tokenizer.json (or its folder) built offline, or 'bytes', for a text --data")
    p.add_argument("--data-dtype", default="uint16", choices=["uint16", "uint32"], help="token dtype of a .bin file")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps")
    p.add_argument("--lr-decay", choices=["cosine", "linear", "none"], default="cosine", help="after warm-up, to --steps")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="learning rate at the last step / peak")
    p.add_argument("--max-norm", type=float, default=1.0, help="clip the global gradient norm (0: off)")
    p.add_argument("--log-every", type=int, default=10, help="print the loss every N steps (0: never)")
    p.add_argument("--save", help="folder for DCP training checkpoints (step-NNNNNNN)")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: at the end only)")
    p.add_argument("--resume", help="a checkpoint folder, or a --save folder (its newest checkpoint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", choices=["seeded", "local"], default="seeded",
                   help="without --checkpoint: seeded full model on every rank (small models), or each rank's "
                        "shards drawn locally (any size)")
    p.add_argument("--checkpoint", help="folder of *.safetensors (save_pretrained) with the model's weights")
    p.add_argument("--dtype", choices=["auto", *DTYPES], default="auto", help="auto: the plan's on CUDA, fp32 on CPU")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dump", help="folder: write rank<r>.pt with logits/tokens, losses and updated weights")
    return p.parse_args(argv)


def run(plan: dict, args: argparse.Namespace) -> dict:
    """Build this rank's part of the plan and run the requested modes; returns what it measured."""
    rank = Rank(plan, args.device, args.dtype)
    if rank.tp > 1 and plan.get("sequence_parallel") and args.mode != "infer" and args.seq_len % rank.tp:
        raise PlanError(f"sequence parallelism splits --seq-len {args.seq_len} over tp={rank.tp}; use a multiple")
    data = TokenSource(load_tokens(args.data, args.tokenizer, args.data_dtype) if args.data else None,
                       plan["vocab_size"], args.seed)
    result: dict = {"rank": rank.rank, "stage": rank.s, "dp": rank.d, "tp": rank.t,
                    "rows": split_rows(args.batch, rank.dp, rank.d)}
    if args.mode in ("infer", "both"):
        model = build_stage(plan, rank, args, train_mode=False)
        lo, hi = result["rows"]
        x = data.batch(0, args.batch, args.seq_len)[0][lo:hi].to(rank.device)
        start = time.perf_counter()
        for _ in range(args.steps):
            result.update(infer(plan, rank, model, x, args.new_tokens))
        result["infer_s"] = (time.perf_counter() - start) / args.steps
        del model
    if args.mode in ("train", "both"):
        model = build_stage(plan, rank, args, train_mode=True)
        if rank.pp > 1 and not rank.hetero:  # stages of different tp run their own schedule (hetero.py)
            rank.schedule = make_schedule(model, rank.s, rank.pp, plan["microbatches"], plan["schedule"],
                                          rank.mesh["pp"].get_group(), rank.device, lm_loss)
        result.update(train(plan, rank, model, args, data))
        if args.dump:
            result["params"] = full_state(model)
    if rank.device.type == "cuda":
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated(rank.device)
    return result


def report(plan: dict, args: argparse.Namespace, result: dict) -> None:
    """Rank 0 prints one JSON line of throughput; every rank writes its dump file when asked."""
    if args.dump:
        Path(args.dump).mkdir(parents=True, exist_ok=True)
        torch.save(result, Path(args.dump) / f"rank{result['rank']}.pt")
    if result["rank"] == 0:
        tokens = args.batch * args.seq_len
        line = {"plan": plan["fingerprint"], "mode": args.mode, "world_size": plan["world_size"]}
        if result.get("train_s"):
            line.update(train_step_s=result["train_s"], train_tokens_per_s=tokens / result["train_s"])
        if "infer_s" in result:
            line.update(infer_s=result["infer_s"])
        if "peak_memory_bytes" in result:
            line.update(peak_memory_bytes_rank0=result["peak_memory_bytes"])
        print(json.dumps(line, sort_keys=True), flush=True)


def main(plan: dict, argv: list[str] | None = None) -> int:
    """Entry point of a generated run_plan.py: returns the exit code (2 for a plan mismatch or bad input).

    A distributed rank (torchrun) leaves through `os._exit` once its process group is destroyed and its output
    flushed: objects that outlive `destroy_process_group` (the device mesh, FSDP's state) keep gloo's worker
    threads alive until the interpreter's finalization, which can then abort (SIGABRT, "terminate called without
    an active exception"; pytorch/pytorch#179291), failing a run that finished."""
    plan = expand_plan(plan)
    args = parse_args(plan, argv)
    distributed, code = False, 0
    try:
        result = run(plan, args)
        report(plan, args, result)
        distributed = dist.is_initialized()
        if distributed:
            dist.barrier()  # every rank done before any tears its process group down (gloo aborts otherwise)
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        distributed, code = dist.is_initialized(), 2
    finally:
        with contextlib.suppress(Exception):
            if dist.is_initialized():
                dist.destroy_process_group()
    if distributed:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
