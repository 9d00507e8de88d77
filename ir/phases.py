"""Per-phase cost views of one captured Graph: prefill, decode and training.

The graph is captured once at a reference shape; each op's `scaling` says how its work changes
with the shape (see `ir.graph`). Identical layers (equal signature) are evaluated once.

Definitions (documented because every estimate downstream uses them):
- prefill(batch, seq_len): `batch` prompts of `seq_len` tokens, no cache; causal attention over
  the prompt; K/V of every token is written to the KV cache.
- decode(batch, context_len): one new token per sequence attending to `context_len` tokens
  (the cached ones, the new token included): K/V of `context_len` tokens read, 1 written.
- train(batch, seq_len): forward + backward. Backward FLOPs are 2x forward for GEMM-like ops
  (input and weight gradients), 2.5x for flash attention (its backward recomputes QK^T: 5
  products against 2), 1x for everything else. `saved_activation_bytes` are the tensors the
  backward pass reads, counted from the op kinds (GEMM inputs, attention q/k/v/out and its
  log-sum-exp, norm inputs, inputs of non-linear element-wise ops), each tensor once.
- MoE: a grouped expert GEMM reads the weights of the experts its tokens touch; with uniform
  routing of `tokens` tokens to top-k of E experts, E * (1 - (1 - k/E)^tokens) are touched.
- KV: an attention op reads the cached K/V its queries see (at most the window for sliding-window
  and chunked layers; the latent and rotary key for multi-latent attention, whose decode runs
  absorbed, `AttentionSpec.flops`) and writes its new tokens'. `kv_bytes_per_token` of a layer is
  its caches' growth per token (`ir.kv_cache`); recurrent layers instead read and write their
  constant state once per sequence per decode step (and write it once per prefilled sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ir.errors import UserError
from ir.graph import Graph, OpNode, dtype_bytes

PHASES = ("prefill", "decode", "train")
_GEMM_KINDS = {"linear", "matmul", "grouped_matmul", "conv"}
_LINEAR_ELEMENTWISE = {"add", "sub", "neg", "add_", "iadd", "to", "_to_copy", "rsub", "sum"}
_SAVES_NOTHING = {"view", "copy", "embedding", "routing", "reduction", "other"}
_LSE_BYTES = 4  # float32 log-sum-exp per (batch, head, query) kept by flash attention


@dataclass(frozen=True)
class LayerCost:
    """Work and traffic of one layer in one phase (bytes in the graph's dtypes)."""

    layer: int
    flops: int
    gemm_flops: int
    attention_flops: int
    weight_bytes_read: int
    activation_bytes_read: int
    activation_bytes_written: int
    kv_read_bytes: int
    kv_write_bytes: int
    kv_bytes_per_token: int
    saved_activation_bytes: int  # train only; 0 otherwise
    experts_touched: float  # per MoE op, mean over MoE ops; 0 for dense layers
    state_bytes_per_sequence: int = 0  # recurrent layers: constant state per sequence


@dataclass(frozen=True)
class PhaseCosts:
    """Costs of every layer of a graph in one phase at one shape."""

    phase: str
    batch: int
    seq_len: int
    context_len: int
    tokens: int
    layers: tuple[LayerCost, ...]

    def total(self, field: str) -> float:
        return sum(getattr(layer, field) for layer in self.layers)


def expected_experts_touched(num_experts: int, top_k: int, tokens: int) -> float:
    """Expected distinct experts hit by `tokens` tokens routed uniformly to top-k of E.

    >>> round(expected_experts_touched(8, 2, 1), 3), round(expected_experts_touched(8, 2, 4096), 3)
    (2.0, 8.0)
    """
    if tokens <= 0:
        return 0.0
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


@dataclass(frozen=True)
class PhaseShape:
    """Token counts of one phase evaluation, and the capture shape they are scaled from."""

    tokens: int
    batch: int
    q_len: int
    kv_len: int
    ref_tokens: int
    ref_pairs: int  # batch x seq x seq at capture


def _storage_owner(graph: Graph, producer: int) -> int:
    """The op whose output a view aliases (views share storage with their base)."""
    for _ in range(16):
        op = graph.ops[producer]
        if op.kind != "view" or not op.inputs:
            break
        producer = op.inputs[0]
    return producer


def _saved_bytes(op: OpNode, graph: Graph, saved: set) -> int:
    """Bytes of this op's inputs (by producer) that backward needs and nobody saved yet."""
    if op.kind in _SAVES_NOTHING or (op.kind == "elementwise" and op.name.rsplit("_", 1)[0] in _LINEAR_ELEMENTWISE):
        return 0
    total = 0
    for producer in map(lambda p: _storage_owner(graph, p), op.inputs):
        if producer in saved:
            continue
        saved.add(producer)
        total += graph.ops[producer].outputs[0].nbytes if graph.ops[producer].outputs else 0
    if op.kind == "attention" and op.attention is not None:
        a = op.attention
        total += op.outputs[0].nbytes + a.batch * a.heads * a.q_len * _LSE_BYTES
    return total


@dataclass(frozen=True)
class OpWork:
    """One op's work at a phase shape; GEMMs also carry their (m, n, k) for efficiency curves."""

    kind: str
    flops: int
    weight_bytes: int
    activation_bytes_read: int
    activation_bytes_written: int
    kv_read_bytes: int = 0
    kv_write_bytes: int = 0
    kv_bytes_per_token: int = 0
    gemm_mnk: tuple[int, int, int] | None = None  # per expert for MoE GEMMs
    gemm_groups: float = 1.0  # experts touched (MoE): the GEMM runs as this many groups
    experts_touched: float = 0.0
    query_len: int = 0  # attention: new tokens per sequence (the rows one (batch, head) pair computes)
    decode_step: bool = False  # the op runs in a decode step (one new token per sequence, with a cache)


def _gemm_mnk(op: OpNode, flops: int, groups: float) -> tuple[int, int, int] | None:
    if op.kind not in _GEMM_KINDS or not op.outputs or not op.input_specs:
        return None
    n = op.outputs[0].shape[-1] if op.kind != "conv" else op.outputs[0].shape[1]
    k = max(flops // max(2 * n * max(op.outputs[0].numel // n, 1), 1), 1) if op.kind == "conv" else (
        op.input_specs[1].shape[-1] if op.name.startswith("addmm") and len(op.input_specs) > 2
        else op.input_specs[0].shape[-1])
    m = max(round(flops / (2 * n * k * max(groups, 1.0))), 1)
    return (m, n, k)


def op_work(op: OpNode, s: PhaseShape, kv_bytes: int) -> OpWork:
    """The work of `op` at shape `s` (see the module docstring for the conventions)."""
    if op.scaling == "attention" and op.attention is not None:
        a = op.attention
        per_token_kv = a.kv_elements_per_token() * kv_bytes
        q_bytes = op.input_specs[0].nbytes * s.batch * s.q_len // max(a.batch * a.q_len, 1)
        return OpWork(
            kind="attention", flops=a.flops(s.batch, s.q_len, s.kv_len, absorbed=_is_decode(s)), weight_bytes=0,
            activation_bytes_read=q_bytes, activation_bytes_written=q_bytes * a.value_dim // max(a.head_dim, 1),
            kv_read_bytes=s.batch * a.cached_keys_read(s.q_len, s.kv_len) * per_token_kv,
            kv_write_bytes=s.batch * s.q_len * per_token_kv, kv_bytes_per_token=per_token_kv, query_len=s.q_len,
            decode_step=_is_decode(s),
        )
    factor = s.tokens / s.ref_tokens
    if op.scaling == "fixed":
        factor = 1.0
    elif op.scaling == "token_pairs":
        factor = s.batch * s.q_len * s.kv_len / s.ref_pairs
    flops = round(op.flops * factor)
    weight, touched, groups = op.param_bytes, 0.0, 1.0
    if op.kind == "embedding":
        weight = round(op.param_bytes * factor)
    elif op.experts is not None:
        touched = expected_experts_touched(op.experts.num_experts, op.experts.top_k, s.tokens)
        weight, groups = round(op.experts.expert_param_bytes * touched), max(touched, 1.0)
    act_read = max(op.bytes_read - op.param_bytes, 0)
    return OpWork(
        kind=op.kind, flops=flops, weight_bytes=weight, activation_bytes_read=round(act_read * factor),
        activation_bytes_written=round(op.bytes_written * factor),
        gemm_mnk=_gemm_mnk(op, flops, groups), gemm_groups=groups, experts_touched=touched, decode_step=_is_decode(s),
    )


def _is_decode(s: PhaseShape) -> bool:
    return s.q_len == 1 and s.kv_len > 1


def _accumulate(work: OpWork, acc: dict) -> None:
    acc["flops"] += work.flops
    acc["weight_bytes_read"] += work.weight_bytes
    acc["activation_bytes_read"] += work.activation_bytes_read
    acc["activation_bytes_written"] += work.activation_bytes_written
    acc["kv_read_bytes"] += work.kv_read_bytes
    acc["kv_write_bytes"] += work.kv_write_bytes
    acc["kv_bytes_per_token"] += work.kv_bytes_per_token
    if work.kind == "attention":
        acc["attention_flops"] += work.flops
    elif work.kind in _GEMM_KINDS:
        acc["gemm_flops"] += work.flops
    if work.experts_touched:
        acc["experts"].append(work.experts_touched)


def _layer_cost(graph: Graph, index: int, s: PhaseShape, phase: str, kv_bytes: int) -> LayerCost:
    layer = graph.layers[index]
    keys = ("flops", "gemm_flops", "attention_flops", "weight_bytes_read", "activation_bytes_read",
            "activation_bytes_written", "kv_read_bytes", "kv_write_bytes", "kv_bytes_per_token")
    acc: dict = dict.fromkeys(keys, 0)
    acc["experts"] = []
    saved_producers: set = set()
    saved = 0
    for op in graph.layer_ops(layer):
        _accumulate(op_work(op, s, kv_bytes), acc)
        if phase == "train":
            saved += _saved_bytes(op, graph, saved_producers)
    if phase == "train":
        other = acc["flops"] - acc["gemm_flops"] - acc["attention_flops"]
        acc["flops"] += 2 * acc["gemm_flops"] + round(2.5 * acc["attention_flops"]) + other
        acc["gemm_flops"] *= 3
        acc["attention_flops"] = round(3.5 * acc["attention_flops"])
        saved = round(saved * s.tokens / s.ref_tokens)
    experts = acc.pop("experts")
    state = _state_traffic(layer, s, phase, kv_bytes, acc)
    return LayerCost(layer=index, **{k: int(acc[k]) for k in keys},
                     saved_activation_bytes=int(saved),
                     experts_touched=sum(experts) / len(experts) if experts else 0.0, state_bytes_per_sequence=state)


def _state_traffic(layer, s: PhaseShape, phase: str, kv_bytes: int, acc: dict) -> int:
    """Per-token KV growth from the layer's caches; recurrent state read/written per sequence."""
    if not layer.caches:
        return 0
    acc["kv_bytes_per_token"] = sum(c.elements_per_token for c in layer.caches) * kv_bytes
    state = sum(c.state_elements for c in layer.caches) * kv_bytes
    if state and phase != "train":
        acc["kv_write_bytes"] += s.batch * state
        if _is_decode(s):
            acc["kv_read_bytes"] += s.batch * state
    return state


def phase_shape(graph: Graph, phase: str, batch: int, seq_len: int | None = None,
                context_len: int | None = None) -> PhaseShape:
    """The token counts of `phase` at a shape; decode has one query per sequence."""
    sequence = graph.token_kind == "sequence"
    seq = (seq_len or graph.seq_len) if sequence else 1
    context = (context_len or seq) if sequence else 1
    if seq < 1 or context < 1:
        raise UserError("sequence and context lengths must be positive integers")
    if phase == "decode":
        q_len, kv_len, tokens = 1, context, batch
    else:
        q_len, kv_len, tokens = seq, seq, batch * seq
    ref_seq = graph.seq_len if sequence else 1
    return PhaseShape(tokens=tokens, batch=batch, q_len=q_len, kv_len=kv_len,
                      ref_tokens=graph.capture_tokens, ref_pairs=graph.batch * ref_seq * ref_seq)


def phase_costs(graph: Graph, phase: str, batch: int = 1, seq_len: int | None = None,
                context_len: int | None = None, kv_dtype: str | None = None) -> PhaseCosts:
    """Per-layer costs of `graph` in `phase` at the given shape.

    >>> import planner
    >>> g = planner.capture("tiny-llama", seq_len=16)
    >>> phase_costs(g, "decode", batch=4, context_len=64).tokens
    4
    """
    if phase not in PHASES:
        raise UserError(f"unknown phase '{phase}'; use one of {', '.join(PHASES)}")
    if batch < 1:
        raise UserError(f"batch must be a positive integer, got {batch}")
    s = phase_shape(graph, phase, batch, seq_len, context_len)
    seq = (seq_len or graph.seq_len) if graph.token_kind == "sequence" else 1
    kv_bytes = dtype_bytes(kv_dtype or graph.dtype)
    by_signature: dict[str, LayerCost] = {}
    layers = []
    for layer in graph.layers:
        cached = by_signature.get(layer.signature)
        if cached is None:
            cached = by_signature[layer.signature] = _layer_cost(graph, layer.index, s, phase, kv_bytes)
        layers.append(cached if cached.layer == layer.index else _with_index(cached, layer.index))
    return PhaseCosts(phase, batch, seq, s.kv_len, s.tokens, tuple(layers))


def _with_index(cost: LayerCost, index: int) -> LayerCost:
    return replace(cost, layer=index)
