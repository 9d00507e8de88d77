"""Mixture-of-experts facts per layer, as expert parallelism needs them: which layers route, to how
many experts, with which top-k, how many bytes one routed expert and the shared experts weigh, and
the routed-expert bytes one token touches.

Read from the graph (the expert GEMMs' `ExpertSpec`s and the ops of shared-expert modules), so
they hold for every MoE layout transformers builds: DeepSeek-V3 and Kimi K2 (dense first layers,
one shared expert, 256 / 384 routed, top-8), Qwen3 MoE, Qwen3-Next (shared expert, 512 routed,
top-10), Llama 4 (shared expert; Maverick interleaves dense and MoE layers), gpt-oss, Mixtral, Jamba.

>>> import planner
>>> facts = moe_layers(planner.capture("tiny-mixtral", seq_len=16))
>>> len(facts), facts[0].num_experts, facts[0].top_k, facts[0].shared_param_bytes
(4, 4, 2, 0)
"""

from __future__ import annotations

from dataclasses import dataclass

from ir.graph import Graph, Layer

_SHARED = "shared_expert"  # module names of always-active experts: shared_experts (DeepSeek), shared_expert


@dataclass(frozen=True)
class MoeLayer:
    """One MoE layer: routing and weight sizes (whole model, unsharded)."""

    layer: int
    num_experts: int
    top_k: int
    expert_param_bytes: int  # one routed expert, all of its GEMMs, captured dtype
    expert_stored_bytes: int  # the same as the checkpoint stores it (MXFP4, fp8 blocks)
    shared_param_bytes: int  # the layer's shared experts (always active), captured dtype

    @property
    def routed_param_bytes(self) -> int:
        """All routed experts of the layer."""
        return self.num_experts * self.expert_param_bytes

    @property
    def routed_bytes_per_token(self) -> int:
        """Routed-expert weight bytes one token touches (top-k experts), as stored."""
        return self.top_k * self.expert_stored_bytes


def _moe_layer(graph: Graph, layer: Layer) -> MoeLayer | None:
    ops = graph.layer_ops(layer)
    experts = [op.experts for op in ops if op.experts is not None]
    if not experts:
        return None
    shared = sum(op.param_bytes for op in ops if op.experts is None and op.kind in ("linear", "matmul")
                 and any(part.startswith(_SHARED) for part in op.module_path.split(".")))
    return MoeLayer(
        layer=layer.index, num_experts=experts[0].num_experts, top_k=experts[0].top_k,
        expert_param_bytes=sum(e.expert_param_bytes for e in experts),
        expert_stored_bytes=sum(e.stored_expert_bytes or e.expert_param_bytes for e in experts),
        shared_param_bytes=shared)


def moe_layers(graph: Graph) -> list[MoeLayer]:
    """The MoE layers of `graph` in order (dense layers are left out; `Layer.is_moe` says which)."""
    out = []
    for layer in graph.layers:
        facts = _moe_layer(graph, layer) if layer.is_moe else None
        if facts is not None:
            out.append(facts)
    return out
