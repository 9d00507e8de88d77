"""Rows of the published measurement set turned into predictions by the project's cost functions.

Each usable row of `published_measurements.csv` becomes a `Case`: what was measured (in SI units),
the device, and a `predict(params)` closure that evaluates the same formulas the estimator uses:
`cost_models.compute.op_time` for GEMMs, batched matmuls, norms, softmax and flash attention,
`cost_models.layer_times.layer_times` on a captured layer for per-layer rows,
`cost_models.estimate_train.layer_step_times` for training backward, and
`cost_models.communication.collective_time` on the cluster's `Group` for collectives.
`Params` holds one `Efficiency` per device family plus link latencies, so that
`benchmarks/bench_validation.py` can refit them. Shapes are parsed from the row's own columns
(model text, batch, input/output length, tp, notes); nothing is keyed on a row id.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

from cost_models.cluster import parse_cluster
from cost_models.communication import collective_time, group_of
from cost_models.compute import ExecConfig, op_time
from cost_models.efficiency import Efficiency, default_efficiency
from cost_models.hardware import get_device
from ir.graph import AttentionSpec, OpNode, TensorSpec
from ir.phases import OpWork, phase_shape
from planner.presets import get_preset

CSV_PATH = Path(os.environ.get("AOT_MEASUREMENTS_CSV", "")) if os.environ.get("AOT_MEASUREMENTS_CSV") else \
    Path(__file__).resolve().parent / "data" / "calibration" / "published_measurements.csv"
FAMILIES = ("A100", "H100", "H200", "MI300X")
_UNITS = {"ms": 1e-3, "us": 1e-6, "s": 1.0, "TFLOP/s": 1e12, "GB/s": 1e9}
_LARGE_MESSAGE = 2**30  # bytes, for "large" / peak-bandwidth rows without a size
# Per-call overhead of a source's timing harness, added to each timed op of its rows: LLMCompass times
# every op separately from eager PyTorch and its own simulator adds 2.1e-5 s per op for A100
# (ae/figure5/ab/test_matmul.py @2e015fd2: `roofline_model(pcb) + 2.1e-5`); its 67 MFLOP GEMM takes
# 29.6 us. Vidur's rows are CUDA-graph kernel times (no harness term).
HARNESS_OVERHEAD_S = {"LLMCompass": 2.1e-5}


@dataclass
class Params:
    """What the fit varies: one Efficiency per family (key "GPU" for the rest), link latencies."""

    eff: dict[str, Efficiency]
    latency_s: dict[str, float] = field(default_factory=dict)

    def for_device(self, device) -> Efficiency:
        return self.eff.get(family_of(device.name), self.eff["GPU"])

    @classmethod
    def defaults(cls) -> Params:
        """The values the estimator uses now (cost_models.efficiency defaults, nodes.yaml latencies)."""
        eff = {"GPU": default_efficiency(SimpleNamespace(name="generic-gpu", kind="gpu", efficiency=None))}
        for fam in FAMILIES:
            eff[fam] = default_efficiency(SimpleNamespace(name=fam, kind="gpu", efficiency=None))
        return cls(eff)


@dataclass
class Case:
    """One measurement and how to predict it; role is "fit", "holdout" or "excluded"."""

    id: str
    kind: str
    group: str  # gemm | attention | prefill | decode | train_layer | collective
    what: str
    device: str
    measured: float  # SI units (s, FLOP/s, B/s) or a fraction
    unit: str  # display unit of measured/predicted
    predict: Callable[[Params], float] | None
    role: str = "fit"
    reason: str = ""
    source: str = ""

    @property
    def family(self) -> str:
        return family_of(self.device)


def family_of(device_name: str) -> str:
    up = device_name.upper()
    return next((f for f in FAMILIES if up.startswith(f)), "GPU")


def _device_name(hardware: str) -> str | None:
    h = hardware.upper()
    if "GH200" in h:
        return None
    if "MI300X" in h:
        return "MI300X"
    if "PCIE" in h:
        return "H100-PCIE" if "H100" in h else "A100-PCIE-80GB"
    return "H100-SXM" if "H100" in h else "A100-SXM-80GB" if "A100" in h else None


def _dtype(precision: str) -> str:
    p = precision.lower()
    return "fp8" if "fp8" in p else "bf16" if p.startswith("bf16") else "fp16"


# --- per-op predictions through cost_models.compute.op_time ---------------------------------------
def _op(kind: str, in_shape: tuple, out_shape: tuple, attention: AttentionSpec | None = None) -> OpNode:
    specs = (TensorSpec(in_shape, "float16"),)
    return OpNode(0, kind, kind, kind, (), specs, (TensorSpec(out_shape, "float16"),), 0, 0, 0, 0, (),
                  "", 0, "attention" if attention else "tokens", attention)


def gemm_time(m: int, n: int, k: int, device, eff: Efficiency, dtype: str = "fp16", batch: int = 1,
              weights: bool = True) -> float:
    """Seconds of `batch` GEMMs [m,k]@[k,n] (weights: the [k,n] operand is a weight, read once)."""
    kind = "linear" if weights else "matmul"
    b = 2 if dtype != "fp8" else 1
    rhs = k * n * b * (1 if weights else batch)
    work = OpWork(kind, 2 * batch * m * n * k, rhs if weights else 0, batch * m * k * b + (0 if weights else rhs),
                  batch * m * n * b, gemm_mnk=(batch * m, n, k))
    op = _op(kind, (batch * m, k), (batch * m, n))
    return op_time(op, work, device, eff, ExecConfig(dtype=dtype, weight_dtype=dtype)).total_s


def streaming_time(kind: str, out_bytes: float, device, eff: Efficiency) -> float:
    """Seconds of a fused norm/softmax kernel writing `out_bytes` (op_time's fused-kernel rule)."""
    work = OpWork(kind, 0, 0, int(out_bytes), int(out_bytes))
    return op_time(_op(kind, (1,), (1,)), work, device, eff, ExecConfig(dtype="fp16")).total_s


def attention_rate(device, eff: Efficiency, dtype: str, seq: int = 16384, heads: int = 16, dim: int = 128) -> float:
    """FLOP/s of one large non-causal flash-attention forward as op_time prices it."""
    spec = AttentionSpec(1, heads, heads, seq, seq, dim, dim, False)
    q = (1, heads, seq, dim)
    work = OpWork("attention", spec.flops(1, seq, seq), 0, 2 * heads * seq * dim, 2 * heads * seq * dim)
    return work.flops / op_time(_op("attention", q, q, spec), work, device, eff, ExecConfig(dtype=dtype)).total_s


# --- collectives --------------------------------------------------------------------------------
@functools.cache
def _base_group(device: str, n: int, per_node: int):
    nodes = -(-n // per_node)
    cluster = parse_cluster(f"{nodes}x8x{device}" if nodes > 1 else f"8x{device}")
    node = cluster.nodes[0]
    g = group_of(cluster, n, stride=max(node.devices_per_node // per_node, 1))
    return g, node.intra_link.name, node.inter_node_link.name


def _group(device: str, n: int, per_node: int, params: Params):
    """The Group of n ranks, per_node on each node, with the fitted link latencies."""
    g, intra, inter = _base_group(device, n, per_node)
    lat = params.latency_s
    return replace(g, intra_latency_s=lat.get(intra, g.intra_latency_s),
                   inter_latency_s=lat.get(inter, g.inter_latency_s))


def collective_seconds(kind: str, nbytes: float, device: str, n: int, per_node: int, params: Params) -> float:
    eff = params.for_device(get_device(device))
    return collective_time(kind, nbytes, _group(device, n, per_node, params), eff)


def busbw_factor(kind: str, n: int) -> float:
    return 2 * (n - 1) / n if kind == "all_reduce" else (n - 1) / n if kind != "send_recv" else 1.0


# --- captured layers (lazy: capture only when a layer row is predicted) ----------------------------
_GRAPHS: dict[tuple, object] = {}


def gpt_layer_graph(hidden: int, heads: int, seq: int):
    """A 2-block GPT-3-like model (OPT architecture, GeLU, 4h FFN, biases) captured at `seq`."""
    key = (hidden, heads, seq)
    if key not in _GRAPHS:
        import planner

        cfg = {"model_type": "opt", "architectures": ["OPTForCausalLM"], "vocab_size": 50272,
               "hidden_size": hidden, "ffn_dim": 4 * hidden, "num_hidden_layers": 2,
               "num_attention_heads": heads, "word_embed_proj_dim": hidden, "max_position_embeddings": seq,
               "do_layer_norm_before": True, "activation_function": "gelu", "enable_bias": True}
        path = Path(tempfile.mkdtemp(prefix="bench-validation-")) / "config.json"
        path.write_text(json.dumps(cfg))
        _GRAPHS[key] = planner.capture(str(path), seq_len=seq, dtype="fp16")
    return _GRAPHS[key]


def block_time(hidden: int, heads: int, phase: str, batch: int, seq: int, context: int | None, tp: int,
               device: str, params: Params, sequence_parallel: bool = False):
    """LayerTime of one transformer block on one rank of a tp group (the estimator's layer_times)."""
    from cost_models.layer_times import layer_times

    graph = gpt_layer_graph(hidden, heads, seq if phase != "decode" else 2048)
    dev = get_device(device)
    eff = params.for_device(dev)
    shape = phase_shape(graph, phase, batch, seq, context)
    cfg = ExecConfig(dtype="fp16", weight_dtype="fp16", tp=tp, sequence_parallel=sequence_parallel)
    times = layer_times(graph, shape, dev, eff, cfg, 2, _group(device, tp, tp, params))
    return next(t for t, layer in zip(times, graph.layers) if layer.kind == "block")


def train_layer_seconds(row: dict, params: Params, metric: str) -> float:
    from cost_models.estimate_train import layer_step_times

    hidden, heads = (int(x) for x in re.search(r"h=(\d+),\s*heads=(\d+)", row["model"]).groups())
    notes = row["notes"].lower()
    recompute = "full" if "full recompute" in notes else "selective" if "selective" in notes else "none"
    t = block_time(hidden, heads, "prefill", int(row["batch"]), int(row["input_len"]), None, int(row["tp"]),
                   _device_name(row["hardware"]), params, sequence_parallel="sequence parallel" in notes)
    if metric == "layer_forward_time":
        return t.total_s
    ctx = SimpleNamespace(options=SimpleNamespace(recompute=recompute))
    return layer_step_times(ctx, SimpleNamespace(layer_times=[t]))[0] - t.total_s


# --- LLMCompass per-op rows: GPT-3 175B layer ops on one rank ------------------------------------
def layer_op_seconds(row: dict, params: Params) -> float | None:
    """Per-rank time of one named op of a GPT-3 layer (prefill or one decode step); None: unknown op."""
    pre = get_preset("opt-175b").values  # GPT-3 175B's shape (96 layers, 96 heads, d_model 12288)
    h, heads, tp = pre["hidden_size"], pre["num_attention_heads"], int(row["tp"])
    b, decode = int(row["batch"]), row["kind"].endswith("decode")
    q_len, kv_len = (1, int(row["input_len"])) if decode else (int(row["input_len"]),) * 2
    tokens, d, hp = b * q_len, h // heads, heads // tp
    dev = get_device(_device_name(row["hardware"]))
    eff = params.for_device(dev)
    name = re.search(r"op (\w+)", row["model"])
    op = name.group(1) if name else "layer"
    if op == "layer":
        t = block_time(h, heads, "decode" if decode else "prefill", b, q_len if not decode else 1,
                       kv_len if decode else None, tp, dev.name, params)
        return t.total_s
    gemms = {"Q_K_V": (tokens, 3 * h // tp, h), "W1_proj": (tokens, 4 * h // tp, h),
             "W2_proj": (tokens, h, 4 * h // tp)}
    if op in gemms:
        return gemm_time(*gemms[op], dev, eff)
    if op == "Q_mul_K":
        return gemm_time(q_len, kv_len, d, dev, eff, batch=b * hp, weights=False)
    if op == "A_mul_V":
        return gemm_time(q_len, d, kv_len, dev, eff, batch=b * hp, weights=False)
    if op == "Softmax":
        return streaming_time("softmax", b * hp * q_len * kv_len * 2, dev, eff)
    if op == "LayerNorm":
        return streaming_time("norm", tokens * h * 2, dev, eff)
    if op.startswith("AllReduce"):
        return collective_seconds("all_reduce", tokens * h * 2, dev.name, tp, tp, params)
    return None


# --- building the cases -------------------------------------------------------------------------
def _gemm_case(row: dict, dev: str) -> Callable[[Params], float] | None:
    text, dtype = row["model"], _dtype(row["precision"])
    if "norm" in text.lower():
        hidden = get_preset(text.split()[0].lower()).values["hidden_size"]
        tokens = int(row["batch"])
        return lambda p: streaming_time("norm", tokens * hidden * 2, get_device(dev), p.for_device(get_device(dev)))
    square = re.search(r"M=(\d+), K=N=(\d+)", text)
    if square:
        m, k = int(square.group(1)), int(square.group(2))
        n = k
    else:
        k_, mult, n_, div = re.search(r"(\d+) -> (?:(\d+)x)?(\d+)(?:/(\d+))?", text).groups()
        m, k, n = int(row["batch"]), int(k_), int(mult or 1) * int(n_) // int(div or 1)
    return lambda p: gemm_time(m, n, k, get_device(dev), p.for_device(get_device(dev)), dtype)


def _collective_case(row: dict, dev: str) -> tuple[Callable[[Params], float], str]:
    n = int(row["n_gpus"])
    per = re.search(r"(\d+)/node", row["hardware"])
    per_node = int(per.group(1)) if per else min(n, 8)
    kind = row["kind"].removeprefix("collective_")
    kind = "all_gather" if kind == "other" else kind
    if row["unit"] == "ms":
        nbytes = float(row["input_len"])
        return (lambda p: collective_seconds(kind, nbytes, dev, n, per_node, p)), f"{kind} {nbytes / 2**20:g} MiB x{n}"
    sizes = [float(x) * (1e9 if "GB" in row["input_len"] else 1) for x in re.findall(r"[\d.]+(?:e\d+)?",
                                                                                 row["input_len"])]
    nbytes = max(sizes) if sizes else _LARGE_MESSAGE

    def busbw(p: Params) -> float:
        return busbw_factor(kind, n) * nbytes / collective_seconds(kind, nbytes, dev, n, per_node, p)
    return busbw, f"{kind} busbw {nbytes / 1e9:g} GB x{n}"


def _exclusion(row: dict, dev: str | None) -> str:
    notes, hw = row["notes"].lower(), row["hardware"].lower()
    if row["kind"] == "spec":
        return "spec-sheet value (device data, checked by tests/test_hardware.py), not a timing"
    if dev is None:
        return f"no '{row['hardware']}' device in the hardware database"
    if "bridge" in hw:
        return "NVLink-bridged PCIe pair: no node preset has that link (H100-PCIE nodes are PCIe-only)"
    if "nic" in notes and ("unknown" in notes or "cluster-specific" in notes):
        return "inter-node bound on a cluster whose NIC configuration is unknown (row notes)"
    if "nvls" in notes:
        return "NVLS in-switch reduction: ring alpha-beta cannot exceed comm x line rate (structural)"
    if row["kind"] == "kernel_attention" and _dtype(row["precision"]) == "fp8":
        return "fp8 flash attention: op_time prices attention at the bf16 peak (structural)"
    return ""


def _role(row: dict) -> str:
    """Kernel and collective rows are fitted; layer-level rows and user reports are held out."""
    if "user report" in row["source"].lower():
        return "holdout"
    if row["kind"].startswith(("operator_layer", "training_layer")):
        return "holdout"
    return "fit"


_GROUP = {"operator_gemm": "gemm", "kernel_gemm": "gemm", "kernel_attention": "attention",
          "operator_layer_prefill": "prefill", "operator_layer_decode": "decode", "training_layer": "train_layer"}


def _predictor(row: dict, dev: str) -> tuple[Callable[[Params], float], str, str]:
    """(predict, group, what) for a usable row."""
    kind, text = row["kind"], row["model"]
    if kind.startswith("collective"):
        fn, what = _collective_case(row, dev)
        return fn, "collective", what
    if kind == "operator_gemm":
        return _gemm_case(row, dev), "gemm", text
    if kind == "kernel_gemm":
        m, n, k = (int(x) for x in row["batch"].split("x"))
        dtype = _dtype(row["precision"])
        return (lambda p: 2 * m * n * k / gemm_time(m, n, k, get_device(dev), p.for_device(get_device(dev)), dtype),
                "gemm", f"GEMM {m}x{n}x{k} best shape")
    if kind == "kernel_attention":
        dtype, fraction = _dtype(row["precision"]), "fraction" in row["unit"]
        peak = get_device(dev).peak_flops_for(dtype)

        def rate(p: Params) -> float:
            r = attention_rate(get_device(dev), p.for_device(get_device(dev)), dtype)
            return r / peak if fraction else r
        return rate, "attention", text
    if kind == "training_layer":
        metric = row["metric"]
        return (lambda p: train_layer_seconds(row, p, metric)), "train_layer", f"{text} {metric} ({row['notes'][:24]})"
    group = "decode" if kind.endswith("decode") else "prefill"
    if "AllReduce" in text:
        group = "collective"
    return (lambda p: layer_op_seconds(row, p)), group, text


def _timed_ops(row: dict) -> int:
    """Compute ops a row times: 1, or for a summed layer its N ops less the block's two TP
    all-reduces (collectives are nccl-style timings, no harness term)."""
    summed = re.search(r"sum of (\d+) ops", row["model"])
    if not summed:
        return 1
    return int(summed.group(1)) - (2 if int(row["tp"] or 1) > 1 else 0)


def _with_harness(row: dict, fn: Callable[[Params], float], group: str, what: str):
    """Add the source's per-op harness overhead to timed compute rows (x the ops a summed row adds)."""
    extra = next((v for k, v in HARNESS_OVERHEAD_S.items() if k in row["source"]), 0.0)
    if not extra or row["unit"] != "ms" or group == "collective":
        return fn, group, what
    extra *= _timed_ops(row)
    return (lambda p: fn(p) + extra), group, f"{what} [+{extra * 1e6:g} us harness]"


def load_rows(path: Path = CSV_PATH) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def build_cases(rows: list[dict] | None = None) -> list[Case]:
    """Every row as a Case; excluded ones carry the reason and no predictor."""
    cases = []
    for row in rows if rows is not None else load_rows():
        dev = _device_name(row["hardware"]) if row["kind"] != "spec" else None
        reason = _exclusion(row, dev)
        unit = row["unit"].split(" ")[0]
        try:
            measured = float(row["value"]) * _UNITS.get(unit, 1.0)
        except ValueError:
            measured, reason = float("nan"), reason or "no numeric value"
        if reason:
            cases.append(Case(row["id"], row["kind"], _GROUP.get(row["kind"], "collective"), row["model"] or
                              row["metric"], dev or row["hardware"], measured, unit, None, "excluded", reason))
            continue
        fn, group, what = _with_harness(row, *_predictor(row, dev))
        cases.append(Case(row["id"], row["kind"], group, what, dev, measured, unit, fn, _role(row),
                          source=row["source"].split()[0]))
    return cases


def scale_of(unit: str) -> float:
    return _UNITS.get(unit, 1.0)
