"""What every estimate shares: the device, efficiency, groups and per-rank weight/KV bytes."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cost_models.communication import Group, group_of
from cost_models.compute import WEIGHT_BYTES, ExecConfig
from cost_models.efficiency import Efficiency, default_efficiency
from cost_models.memory import device_margin
from cost_models.parallel_config import KV_BYTES, Options
from ir.graph import Graph, dtype_bytes
from ir.kv_cache import kv_bytes_per_sequence, kv_bytes_per_token


def layer_expert_bytes(graph: Graph, index: int, stored: bool = False) -> float:
    """Bytes of all experts of one layer (whole model, unsharded); 0 for dense layers. Captured
    bytes, or with `stored` as the checkpoint stores them (`ir.weight_formats`)."""
    layer = graph.layers[index]
    if not layer.is_moe:
        return 0.0
    return float(sum((op.experts.stored_expert_bytes if stored and op.experts.stored_expert_bytes
                      else op.experts.expert_param_bytes) * op.experts.num_experts
                     for op in graph.layer_ops(layer) if op.experts is not None))


def has_published_formats(graph: Graph) -> bool:
    """Whether some weights are stored narrower than captured (MXFP4 experts, fp8 blocks)."""
    return any(layer.stored_param_bytes and layer.stored_param_bytes != layer.param_bytes for layer in graph.layers)


@dataclass(frozen=True)
class Context:
    graph: Graph
    cluster: object
    options: Options
    device: object
    eff: Efficiency
    cfg: ExecConfig
    kv_bytes: int
    tp_group: Group
    dp_group: Group
    ep_group: Group
    edp_group: Group  # the data-parallel replicas of one expert shard (dp / ep of them when ep_over_dp)
    pp_link_bandwidth: float
    pp_link_latency_s: float

    @property
    def world(self) -> int:
        return self.options.dp * self.options.tp * self.options.pp

    @property
    def capacity_bytes(self) -> float:
        return float(self.device.memory_bytes)

    @property
    def communicators(self) -> int:
        """Communication groups of more than one rank this rank is in (each holds NCCL buffers)."""
        o = self.options
        return sum(1 for size in (o.tp, o.dp, o.pp, o.ep) if size and size > 1)

    def margin_items(self) -> dict[str, float]:
        return dict(self._margin)

    @functools.cached_property
    def _margin(self) -> dict[str, float]:
        """The named memory margin of one rank (`cost_models.memory`): runtime and NCCL buffers, and for
        training layouts (ep_over_dp) the fp32 gradient accumulation, ZeRO-3 prefetch buffers, backward
        workspace and allocator fragmentation of the layout (`estimate_train.training_margin_items`)."""
        if self.options.ep_over_dp:
            from cost_models.estimate_train import training_margin_items

            return training_margin_items(self)
        return device_margin(self.device.kind, self.communicators)

    @property
    def reserve(self) -> float:
        """Bytes of a rank's memory margin: the sum of `margin_items` (every memory breakdown's "reserve",
        and what the planner's search keeps free)."""
        return sum(self.margin_items().values())

    def weight_scale(self) -> float:
        """Bytes per parameter of the weight dtype over the captured dtype's."""
        return WEIGHT_BYTES[self.cfg.weight_dtype] / dtype_bytes(self.graph.dtype)

    @property
    def expert_shards(self) -> int:
        """Ways each expert weight is split: ep x tp when ep ranks are dp replicas, else max(ep, tp)."""
        o = self.options
        return o.ep * o.tp if o.ep_over_dp else max(o.ep, o.tp)

    def layer_expert_bytes(self, index: int) -> float:
        return layer_expert_bytes(self.graph, index)

    def _stored_weights(self) -> bool:
        return self.options.weight_dtype is None and has_published_formats(self.graph)

    def layer_expert_weight_bytes(self, index: int) -> float:
        """The routed-expert part of `layer_weight_bytes` (one rank)."""
        if self._stored_weights():
            return layer_expert_bytes(self.graph, index, stored=True) / self.expert_shards
        return self.layer_expert_bytes(index) * self.weight_scale() / self.expert_shards

    def layer_weight_bytes(self, index: int) -> float:
        """Weight bytes of one layer on one rank: dense parts / tp, experts / `expert_shards`; at
        `--weight-dtype` when given, else as the checkpoint publishes them tensor by tensor (gpt-oss
        MXFP4 experts, DeepSeek fp8 blocks; the captured dtype for models that publish none)."""
        if self._stored_weights():
            dense = self.graph.layers[index].stored_param_bytes - layer_expert_bytes(self.graph, index, stored=True)
            return dense / self.options.tp + self.layer_expert_weight_bytes(index)
        expert = self.layer_expert_bytes(index)
        dense = self.graph.layers[index].param_bytes - expert
        return (dense / self.options.tp + expert / self.expert_shards) * self.weight_scale()

    def layer_params_per_rank(self, index: int) -> float:
        """Parameters of one layer held by one rank (same split as `layer_weight_bytes`)."""
        expert = self.layer_expert_bytes(index)
        dense = self.graph.layers[index].param_bytes - expert
        return (dense / self.options.tp + expert / self.expert_shards) / dtype_bytes(self.graph.dtype)

    def layer_expert_params_per_rank(self, index: int) -> float:
        """The expert part of `layer_params_per_rank` (reduced over `edp_group`, not `dp_group`)."""
        return self.layer_expert_bytes(index) / self.expert_shards / dtype_bytes(self.graph.dtype)

    def kv_bytes_per_token_per_rank(self) -> float:
        """Cache growth of one token on one rank, all layers, before any sliding window fills:
        K and V heads split by tp (replicated past the kv heads), multi-latent caches replicated,
        recurrent layers none (`ir.kv_cache`)."""
        return kv_bytes_per_token(self.graph, self.kv_bytes, self.options.tp)

    def kv_bytes_per_sequence_per_rank(self, tokens: int, layers: tuple[int, int] | None = None) -> float:
        """Cache of one sequence of `tokens` tokens on one rank in layers [a, b): windows bound the
        sliding-window and chunked layers, recurrent layers hold their constant state."""
        return kv_bytes_per_sequence(self.graph, tokens, self.kv_bytes, self.options.tp, layers)


def allreduce_impl(options: Options) -> str:
    """The tensor-parallel all-reduce of a run: as given, else NCCL for training (ep_over_dp marks
    training layouts) and the engines' custom kernel for inference."""
    if options.collectives != "auto":
        return options.collectives
    return "nccl" if options.ep_over_dp else "custom"


def slowest_device(cluster):
    """The device the estimate assumes: the weakest one (lowest bf16/fp32 peak) of the cluster."""
    return min((node.device for node in cluster.nodes),
               key=lambda d: (d.peak_flops.get("bf16", d.peak_flops.get("fp32", 0.0)), d.memory_bytes))


def make_context(graph: Graph, cluster, options: Options, device=None) -> Context:
    """The context of an estimate; `device` pins it to one device type (a pipeline stage's)."""
    device = device or slowest_device(cluster)
    eff = default_efficiency(device)
    weights_per_device = graph.param_count * WEIGHT_BYTES[options.weight_dtype or options.dtype] / (options.tp * options.pp)
    cfg = ExecConfig(dtype=options.dtype, weight_dtype=options.weight_dtype or options.dtype, tp=options.tp,
                     execution="eager" if device.kind == "cpu" else "fused",
                     sequence_parallel=options.sequence_parallel,
                     streaming_weights=eff.streaming_above_bytes is not None
                     and weights_per_device > eff.streaming_above_bytes,
                     allreduce=allreduce_impl(options), attention=options.attention)
    node = next((n for n in cluster.nodes if n.device == device), cluster.nodes[0])
    inside = options.tp * options.pp <= node.devices_per_node
    dp_group = group_of(cluster, options.dp, options.tp * options.pp)
    # training ep groups are consecutive dp replicas, which placement puts tp ranks apart
    ep, over_dp = options.ep, options.ep_over_dp and options.ep > 1
    link = node.intra_link if inside else node.inter_node_link
    return Context(
        graph=graph, cluster=cluster, options=options, device=device, eff=eff, cfg=cfg,
        kv_bytes=KV_BYTES[options.kv_dtype or ("bf16" if options.dtype == "fp8" else options.dtype)],
        tp_group=group_of(cluster, options.tp), dp_group=dp_group,
        ep_group=group_of(cluster, ep, options.tp if over_dp else 1),
        edp_group=group_of(cluster, options.dp // ep, options.tp * options.pp * ep) if over_dp else dp_group,
        pp_link_bandwidth=link.pair_bandwidth_bytes_per_s,
        pp_link_latency_s=link.latency_s,
    )
