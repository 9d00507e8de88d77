"""Per-rank runtime of a generated plan program: model, stage, DeviceMesh, TP/PP/DP, train and infer.

This file is the body of every generated `run_plan.py` (codegen inlines it verbatim after the header
and appends the plan's `PLAN` literal), and `codegen.apply` imports its helpers, so the program that
runs and the API users call share one implementation. It depends only on torch and transformers.

Layout of a plan program: global rank r sits at mesh[pp][dp][tp] as the plan's `stages[s].ranks[d][t]`
says (stages of different tp have a (dp, tp) mesh each: codegen/runtime_hetero.py); stage s holds the
embedding if it starts at graph layer 0, blocks `model.layers.i`, and the head
(final norm + lm_head) if it ends at the last graph layer. Equivalence with the single-process model
holds because every rank builds the same full model with the same seed (tiny models) or loads the same
checkpoint (`--checkpoint DIR` of safetensors files: only this stage's tensors are read).

>>> split_rows(8, 2, 1)
(4, 8)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class PlanError(Exception):
    """A mismatch between the plan and this run (world size, heads vs tp, ...): one line, exit 2."""


def split_rows(batch: int, parts: int, index: int) -> tuple[int, int]:
    """Rows [lo, hi) of a batch that data-parallel replica `index` of `parts` owns."""
    if batch % parts:
        raise PlanError(f"batch {batch} is not divisible by dp={parts}; use --batch a multiple of {parts}")
    size = batch // parts
    return index * size, (index + 1) * size


# --- model ---------------------------------------------------------------------------------------
def build_config(spec: dict):
    """The transformers config of the plan's model spec (preset values or a config.json's content)."""
    import transformers

    if spec["kind"] == "factory":
        return None
    cls = getattr(transformers, spec["config_class"], None)
    config = cls(**spec["values"]) if cls else transformers.AutoConfig.for_model(**spec["values"])
    config._attn_implementation = "sdpa"  # causal without a mask tensor; works with DTensor TP
    return config


def build_model(spec: dict, seed: int, dtype: torch.dtype, device: str = "cpu") -> nn.Module:
    """The full model with deterministic weights: `torch.manual_seed(seed)` then the class's own init."""
    torch.manual_seed(seed)
    if spec["kind"] == "factory":
        module_name, _, attr = spec["ref"].partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise PlanError(f"cannot import factory '{spec['ref']}': {exc}; put its module on PYTHONPATH") from None
        with torch.device(device):
            model = factory()
        model.config._attn_implementation = "sdpa"
        return model.to(dtype)
    import transformers

    config = build_config(spec)
    with torch.device(device):
        model = getattr(transformers, spec["architecture"])(config)
    return model.to(dtype)


class Stage(nn.Module):
    """One pipeline stage cut from a Hugging Face decoder LM; keeps module names of the original.

    Parameter `layers.3.mlp.up_proj.weight` is `model.layers.3.mlp.up_proj.weight` of the full model
    (see `hf_name`). `forward(x)` takes token ids on the first stage, hidden states elsewhere.
    """

    def __init__(self, model: nn.Module, blocks: range, embed: bool, head: bool):
        super().__init__()
        inner = model.model
        self.embed_tokens = inner.embed_tokens if embed else None
        self.layers = nn.ModuleDict({str(i): inner.layers[i] for i in blocks})
        self.rotary_emb = inner.rotary_emb
        self.norm = inner.norm if head else None
        self.lm_head = model.lm_head if head else None
        self.seq_shards = 1  # sequence parallelism: hidden states hold 1/tp of the positions

    def forward(self, x: torch.Tensor, cache=None, past: int = 0) -> torch.Tensor:
        h = self.embed_tokens(x) if self.embed_tokens is not None else x
        pos = torch.arange(past, past + h.shape[1] * self.seq_shards, device=h.device).unsqueeze(0)
        pe = self.rotary_emb(h, pos)
        for layer in self.layers.values():
            out = layer(h, position_ids=pos, past_key_values=cache, use_cache=cache is not None, position_embeddings=pe)
            h = out[0] if isinstance(out, tuple) else out
        if self.lm_head is not None:
            h = self.lm_head(self.norm(h))
        return h


def hf_name(stage_name: str) -> str:
    """Name in the full Hugging Face model of a Stage parameter name."""
    return stage_name if stage_name.startswith("lm_head") else "model." + stage_name


def stage_blocks(stage: dict, num_blocks: int) -> tuple[range, bool, bool]:
    """Blocks, has-embedding, has-head of a plan stage with graph layers [a, b)."""
    a, b = stage["layers"]
    return range(max(a, 1) - 1, min(b, num_blocks + 1) - 1), a == 0, b == num_blocks + 2


def load_checkpoint(stage: Stage, folder: str, device: torch.device) -> None:
    """Materialise a meta Stage from safetensors files, reading only this stage's tensors."""
    from safetensors import safe_open

    wanted = {hf_name(n): n for n, _ in stage.named_parameters()}
    stage.to_empty(device=device)
    params = dict(stage.named_parameters())
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open has keys(), no __iter__)
                if key in wanted:
                    with torch.no_grad():
                        params[wanted.pop(key)].copy_(fh.get_tensor(key))
    if wanted:
        raise PlanError(f"checkpoint {folder} lacks {len(wanted)} tensors of this stage, e.g. {sorted(wanted)[0]}")
    stage.rotary_emb = type(stage.rotary_emb)(config=stage.rotary_emb.config, device=device)


# --- parallelism ---------------------------------------------------------------------------------
def build_mesh(plan: dict, device_type: str):
    """DeviceMesh (pp, dp, tp) whose entries are the plan's global ranks."""
    from torch.distributed.device_mesh import DeviceMesh

    ranks = [stage["ranks"] for stage in plan["stages"]]
    return DeviceMesh(device_type, torch.tensor(ranks, dtype=torch.int), mesh_dim_names=("pp", "dp", "tp"))


def tp_plan(stage: Stage, heads: int, kv_heads: int, tp: int) -> dict:
    """Megatron-style TP: q/k/v and gate/up column-wise, o/down row-wise, lm_head column-wise gathered.

    Grouped-query attention: q heads and k/v heads must both split evenly over tp (each rank keeps
    heads/tp query heads and kv_heads/tp key/value heads, the same group ratio as the full model).
    """
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    if heads % tp or kv_heads % tp:
        raise PlanError(f"tp={tp} must divide the attention heads ({heads}) and key/value heads ({kv_heads}); "
                        f"re-plan with --tp dividing {kv_heads}")
    plan = {}
    for name, layer in stage.layers.items():
        for proj in ("q_proj", "k_proj", "v_proj"):
            plan[f"layers.{name}.self_attn.{proj}"] = ColwiseParallel()
        plan[f"layers.{name}.self_attn.o_proj"] = RowwiseParallel()
        if all(hasattr(layer.mlp, p) for p in ("gate_proj", "up_proj", "down_proj")):
            plan[f"layers.{name}.mlp.gate_proj"] = ColwiseParallel()
            plan[f"layers.{name}.mlp.up_proj"] = ColwiseParallel()
            plan[f"layers.{name}.mlp.down_proj"] = RowwiseParallel()
    if stage.lm_head is not None:
        plan["lm_head"] = ColwiseParallel(output_layouts=Replicate())
    return plan


def apply_tp(stage: Stage, tp_mesh, heads: int, kv_heads: int, sequence_parallel: bool = False) -> Stage:
    """Shard the stage over the tp mesh with DTensor `parallelize_module` (no-op at tp=1); with
    sequence parallelism the hidden states between blocks are sequence shards (runtime_pipeline.py)."""
    from torch.distributed.tensor.parallel import parallelize_module

    if tp_mesh.size() == 1:
        return stage
    plan = tp_plan(stage, heads, kv_heads, tp_mesh.size())
    if sequence_parallel:
        plan = sp_plan(stage)
        stage.seq_shards = tp_mesh.size()
    return parallelize_module(stage, tp_mesh, plan)


def apply_recompute(stage: Stage, mode: str) -> None:
    """Activation recomputation as planned (Korthikanti et al. 2022): "full" re-runs every decoder
    block in backward, "selective" only its attention; parameter names are unchanged."""
    if mode not in ("full", "selective"):
        return
    from torch.utils.checkpoint import checkpoint

    for layer in (layer for part in chunk_modules(stage) for layer in part.layers.values()):
        target = layer if mode == "full" else layer.self_attn
        forward = target.forward

        def recomputed(*args, _forward=forward, **kwargs):
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        target.forward = recomputed


def apply_dp(stage: nn.Module, mesh, zero_stage: int, train: bool) -> nn.Module:
    """Data parallelism over mesh['dp']: DDP for ZeRO-0 without TP, else FSDP2 `fully_shard`.

    ZeRO-1/2 map to FSDP2 with reshard_after_forward=False (parameters stay gathered between forward
    and backward), ZeRO-3 to reshard_after_forward=True.
    """
    dp_mesh = mesh["dp"]
    if dp_mesh.size() == 1 or not train:
        return stage
    if isinstance(stage, ChunkedStage):  # each virtual stage is its own PipelineStage: wrap each
        stage.chunks = nn.ModuleList(apply_dp(part, mesh, zero_stage, train) for part in stage.chunks)
        return stage
    if zero_stage == 0 and mesh["tp"].size() == 1:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(stage, process_group=dp_mesh.get_group())
    from torch.distributed.fsdp import fully_shard

    return fully_shard(stage, mesh=dp_mesh, reshard_after_forward=zero_stage >= 3)


def schedule_class(name: str, microbatches: int, stages: int):
    """The torch.distributed.pipelining schedule class of a plan's schedule name.

    1F1B needs at least as many microbatches as stages; with fewer, its order is GPipe's (all
    forwards, then all backwards), so GPipe runs it.
    """
    from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe

    classes = {"1f1b": Schedule1F1B, "gpipe": ScheduleGPipe}
    key = name.lower()
    if key not in classes:
        raise PlanError(f"schedule {name!r} is not supported by the generated program; use one of {sorted(classes)}")
    return ScheduleGPipe if key == "1f1b" and microbatches < stages else classes[key]


# --- running -------------------------------------------------------------------------------------
class Rank:
    """This process's place in the plan: stage, dp and tp coordinates, mesh, device and stage module."""

    def __init__(self, plan: dict, args: argparse.Namespace):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world != plan["world_size"]:
            raise PlanError(f"world size {world} does not match the plan's {plan['world_size']} ranks "
                            f"({plan['layout']}); launch with launch.sh")
        use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        self.rank = dist.get_rank()
        self.hetero = bool(plan.get("hetero_tp"))  # stages differ in tp: codegen/runtime_hetero.py
        if self.hetero:
            self.grid = [stage["ranks"] for stage in plan["stages"]]
            self.s, self.d, self.t, self.mesh = hetero_layout(plan, self.rank, self.device.type)
        else:
            self.mesh = build_mesh(plan, self.device.type)
            self.s, self.d, self.t = (int(c) for c in self.mesh.get_coordinate())
        self.tp, self.manual_dp = self.mesh["tp"].size(), False
        self.pp, self.dp, self.ep = plan["pp"], plan["dp"], plan.get("ep", 1)
        self.ep_mesh = ep_mesh(plan, self.device.type) if self.ep > 1 else None  # codegen/runtime_ep.py
        name = args.dtype if args.dtype != "auto" else (plan["dtype"] if use_cuda else "fp32")
        self.dtype = DTYPES[name]

    def peer(self, stage: int) -> int:
        """Global rank of this rank's counterpart (same dp, tp) in another stage."""
        return int(self.mesh.mesh[stage, self.d, self.t])


def make_stage(plan: dict, rank: Rank, args: argparse.Namespace, sequence_parallel: bool = False) -> nn.Module:
    """This rank's stage module, materialised (seeded full model, or checkpoint) and TP-sharded
    (with sequence parallelism if asked); with interleaving a ChunkedStage of its virtual stages."""
    spec = plan["stages"][rank.s]
    full = build_model(plan["model"], args.seed, rank.dtype, "meta" if args.checkpoint else "cpu")
    parts = []
    for layers in spec.get("chunks") or [spec["layers"]]:
        blocks, embed, head = stage_blocks({"layers": layers}, plan["num_blocks"])
        stage = Stage(full, blocks, embed, head)
        if args.checkpoint:
            load_checkpoint(stage, args.checkpoint, rank.device)
        else:
            stage = stage.to(rank.device)
        try:
            shard_experts(stage, rank.ep_mesh, rank.ep, rank.mesh["tp"])  # codegen/runtime_ep.py
            parts.append(apply_tp(stage, rank.mesh["tp"], plan["heads"], plan["kv_heads"], sequence_parallel))
        except ValueError as exc:
            raise PlanError(str(exc)) from None
    return ChunkedStage(parts) if spec.get("chunks") else parts[0]


def synthetic_batch(plan: dict, args, rank: Rank) -> tuple[torch.Tensor, torch.Tensor]:
    """This dp replica's rows of a seeded batch of token ids and next-token labels."""
    gen = torch.Generator().manual_seed(args.seed + 1)
    tokens = torch.randint(0, plan["vocab_size"], (args.batch, args.seq_len + 1), generator=gen)
    lo, hi = split_rows(args.batch, rank.dp, rank.d)
    rows = tokens[lo:hi].to(rank.device)
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def train_step(plan: dict, rank: Rank, model: nn.Module, opt, x: torch.Tensor, y: torch.Tensor):
    """One optimizer step; returns the batch's mean loss on the last stage (None elsewhere)."""
    if rank.hetero:
        return hetero_train_step(plan, rank, model, opt, x, y, lm_loss)
    m = plan["microbatches"]
    opt.zero_grad(set_to_none=True)
    if rank.pp == 1:
        losses = []
        for xs, ys in zip(x.chunk(m), y.chunk(m)):
            loss = lm_loss(model(xs), ys)
            (loss / m).backward()
            losses.append(loss.detach())
        opt.step()
        return torch.stack(losses).mean()
    sched = rank.schedule
    if rank.s == 0:
        sched.step(x)
    elif rank.s == rank.pp - 1:
        losses = []
        sched.step(target=y, losses=losses)
    else:
        sched.step()
    opt.step()
    return torch.stack([loss.detach() for loss in losses]).mean() if rank.s == rank.pp - 1 else None


def make_schedule(plan: dict, rank: Rank, model: nn.Module) -> None:
    """A PipelineStage at the plan's split, driven by the plan's schedule (pp > 1 only).

    Shapes are inferred from the first microbatch at runtime (the stage's dynamic mode).
    """
    from torch.distributed.pipelining import PipelineStage

    rank.schedule = None
    if rank.pp == 1 or rank.hetero:  # stages of different tp run their own schedule (hetero_train_step)
        return
    if isinstance(model, ChunkedStage):
        rank.schedule = interleaved_schedule(model, rank, plan["microbatches"], lm_loss)
        return
    stage = PipelineStage(model, rank.s, rank.pp, rank.device, group=rank.mesh["pp"].get_group())
    cls = schedule_class(plan["schedule"], plan["microbatches"], rank.pp)
    rank.schedule = cls(stage, n_microbatches=plan["microbatches"], loss_fn=lm_loss)


def full_state(model: nn.Module) -> dict:
    """Full (unsharded) tensors of this stage's parameters under Hugging Face names (collective)."""
    from torch.distributed.tensor import DTensor

    state = {}
    for name, p in model.named_parameters():
        t = p.full_tensor() if isinstance(p, DTensor) else p
        state[hf_name(stage_param_name(name))] = t.detach().float().cpu()
    return state


def parse_args(plan: dict, argv: list[str] | None) -> argparse.Namespace:
    w = plan["workload"]
    p = argparse.ArgumentParser(description=f"Run plan {plan['fingerprint']} of {plan['model_name']} on this rank.")
    p.add_argument("--mode", choices=["train", "infer", "both"], default=plan["default_mode"])
    p.add_argument("--batch", type=int, default=w["batch"], help="global batch (sequences)")
    p.add_argument("--seq-len", type=int, default=w["seq_len"], help="tokens per sequence (prompt length in infer)")
    p.add_argument("--steps", type=int, default=1, help="optimizer steps (train) or repeats (infer)")
    p.add_argument("--new-tokens", type=int, default=w.get("output_len") or 8, help="greedy decode tokens (infer)")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["auto", *DTYPES], default="auto", help="auto: the plan's on CUDA, fp32 on CPU")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--checkpoint", help="folder of *.safetensors with the full model's weights (large models)")
    p.add_argument("--dump", help="folder: write rank<r>.pt with logits/tokens, loss and updated weights")
    return p.parse_args(argv)


def run(plan: dict, args: argparse.Namespace) -> dict:
    """Build this rank's part of the plan and run the requested modes; returns what it measured."""
    rank = Rank(plan, args)
    sp = bool(plan.get("sequence_parallel")) and rank.tp > 1
    if sp and args.seq_len % rank.tp:
        raise PlanError(f"sequence parallelism splits --seq-len {args.seq_len} over tp={rank.tp}; use a multiple")
    model = make_stage(plan, rank, args, sequence_parallel=sp and args.mode == "train")
    x, y = synthetic_batch(plan, args, rank)
    result: dict = {"rank": rank.rank, "stage": rank.s, "dp": rank.d, "tp": rank.t,
                    "rows": split_rows(args.batch, rank.dp, rank.d)}
    if args.mode in ("infer", "both"):
        start = time.perf_counter()
        for _ in range(args.steps):
            result.update(infer(plan, rank, model, x, args.new_tokens))
        result["infer_s"] = (time.perf_counter() - start) / args.steps
    if args.mode in ("train", "both"):
        if sp and args.mode == "both":  # inference ran without sequence parallelism (decode steps are 1 token)
            model = make_stage(plan, rank, args, sequence_parallel=True)
        model.train()
        apply_recompute(model, plan.get("recompute", "none"))
        if rank.hetero:
            model, rank.manual_dp = hetero_dp(model, rank.mesh, plan["zero_stage"], apply_dp)
        elif rank.ep > 1:
            model = apply_ep_dp(model, rank.ep_mesh, rank.mesh["dp"], plan["zero_stage"])
        else:
            model = apply_dp(model, rank.mesh, plan["zero_stage"], train=True)
        make_schedule(plan, rank, model)
        opt_cls = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.SGD
        opt = opt_cls(model.parameters(), lr=args.lr)
        losses, times = [], []
        for _ in range(args.steps):
            start = time.perf_counter()
            losses.append(train_step(plan, rank, model, opt, x, y))
            times.append(time.perf_counter() - start)
        timed = sorted(times[1:] or times)  # the first step warms up (allocations, communicator setup)
        result["train_s"] = timed[len(timed) // 2]  # median: robust to other load on the host
        result["loss"] = [float(v) for v in losses] if losses[0] is not None else None
        result["params"] = full_state(model)
        gather_expert_state(model, result["params"], hf_name)  # whole experts back, if any were split
    return result


def report(plan: dict, args: argparse.Namespace, result: dict) -> None:
    """Rank 0 prints one JSON line of throughput; every rank writes its dump file when asked."""
    if args.dump:
        Path(args.dump).mkdir(parents=True, exist_ok=True)
        torch.save(result, Path(args.dump) / f"rank{result['rank']}.pt")
    if result["rank"] == 0:
        tokens = args.batch * args.seq_len
        line = {"plan": plan["fingerprint"], "mode": args.mode, "world_size": plan["world_size"]}
        if "train_s" in result:
            line.update(train_step_s=result["train_s"], train_tokens_per_s=tokens / result["train_s"])
        if "infer_s" in result:
            line.update(infer_s=result["infer_s"])
        print(json.dumps(line, sort_keys=True), flush=True)


def main(plan: dict, argv: list[str] | None = None) -> int:
    """Entry point of a generated run_plan.py: returns the exit code (2 for a plan mismatch)."""
    args = parse_args(plan, argv)
    try:
        result = run(plan, args)
        report(plan, args, result)
        if dist.is_initialized():
            dist.barrier()  # every rank done before any tears its process group down (gloo aborts otherwise)
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        with contextlib.suppress(Exception):
            if dist.is_initialized():
                dist.destroy_process_group()
    return 0


# expert parallelism lives in codegen/runtime_ep.py, interleaved stages and sequence parallelism in
# codegen/runtime_pipeline.py, stages of different tp in codegen/runtime_hetero.py; a generated
# run_plan.py has them inlined below
if __name__ == "codegen.runtime":
    from codegen.runtime_ep import apply_ep_dp, ep_mesh, gather_expert_state, shard_experts
    from codegen.runtime_hetero import (
        hetero_dp,
        hetero_layout,
        hetero_train_step,
    )
    from codegen.runtime_pipeline import (
        ChunkedStage,
        chunk_modules,
        infer,
        interleaved_schedule,
        sp_plan,
        stage_param_name,
    )
