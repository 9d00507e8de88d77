"""Rows of the end-to-end development set, each with the setup the planner's estimator needs to predict it.

`data/validation/end_to_end.csv` (published end-to-end measurements: training steps, decode steps,
serving runs) and `data/validation/paper_timings.csv` (per-iteration timings of serving papers'
artifacts) become `Row`s: what was measured (SI units), the layout, the source, the family of rows
that differ only in layout or scale (for layout ratios). `end_to_end_predict.predict()` runs
`cost_models.estimator.estimate_graph` with the row's own setup and converts the estimate into the
row's metric with the source's conventions:

- Megatron-LM (Narayanan et al. 2021) reports TFLOP/s per GPU with its eq. 3,
  F = 96 B s l h^2 (1 + s/(6h) + V/(16 l h)) per step (full recomputation counted): predicted = F /
  (predicted step x GPUs). Korthikanti et al. 2022 and MT-NLG report iteration times.
- NeMo and llm-foundry report tokens/s/GPU: batch x seq / step / GPUs; the Llama 3 and FlashAttention-2
  rows report model TFLOP/s (6 N per token plus attention, the estimator's `flops`).
- gpt-fast and FasterTransformer rows: one decode step (tokens/s = 1 / TPOT) or one prefill at batch 1.
- TensorRT-LLM `max` rows: offline serving throughput (output tokens/s) of fixed input/output
  lengths; `QPS=2` rows: mean TTFT / ITL of the serving simulator at 2 req/s; the H200 launch rows:
  one static batch (prefill of the batch + output_len decode steps).
- paper timings: one prefill of `input_len` tokens, or one decode step at `batch` x `input_len` context.

Setups the estimator does not model are named, not guessed: context parallelism (cp) is counted as
cp-fold data parallelism on whole sequences (same tokens and attention work per GPU; its K/V
exchange is not priced), and rows where that is not equivalent are excluded with the reason.
Nothing here is keyed on a row id; every value comes from the row's own columns.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from end_to_end_models import ModelSpec, device_of, parse_model

DATA_DIR = Path(__file__).resolve().parent / "data" / "validation"
END_TO_END_CSV = DATA_DIR / "end_to_end.csv"
PAPER_TIMINGS_CSV = DATA_DIR / "paper_timings.csv"

# --- rows ----------------------------------------------------------------------------------------
VIRTUAL_STAGES_CHOSEN = 0  # Row.vp of a row whose source interleaves without stating v


@dataclass
class Row:
    """One measurement and the setup to predict it (see the module docstring)."""

    id: str
    group: str
    source: str  # short source key (leave-one-source-out unit)
    family: str  # rows differing only in layout/scale share it ("" = no family)
    kind: str
    phase: str  # train | prefill | decode | serve | serve_qps | static_batch
    metric: str
    measured: float  # in the row's unit
    unit: str
    model: ModelSpec | None
    device: str | None
    n_gpus: int
    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1
    vp: int = 1  # VIRTUAL_STAGES_CHOSEN: interleaved with v unstated
    batch: int = 1
    microbatch: int = 1
    input_len: int = 0
    output_len: int = 0
    dtype: str = "bf16"
    weight_dtype: str | None = None
    kv_dtype: str | None = None
    recompute: str = "none"
    sequence_parallel: bool = False
    zero_stage: int = 0
    qps: float | None = None
    flops_convention: str = "model"  # megatron-eq3 | model
    collectives: str = "auto"  # the engine's tensor-parallel all-reduce (Options.collectives)
    attention: str = "flash"  # the engine's attention kernel (Options.attention)
    runtime: str = "engine"  # serving engine, or a compiled generation loop (Options.runtime)
    p2p_overlap: bool = True  # interleaved pipeline sends under the next chunk (Options.p2p_overlap)
    cluster: str = ""  # the cluster the source ran on where its default node is not it ("" = `cluster_of`)
    reason: str = ""  # why the row is not scored ("" = scored)
    fit_reason: str = ""  # why a scored row is kept out of the fit: its setup is known not to be expressible
    notes: str = ""
    what: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def scored(self) -> bool:
        return not self.reason


def _int(text: str, default: int = 0) -> int:
    m = re.search(r"\d+", text or "")
    return int(m.group()) if m else default


def _source_key(source: str) -> str:
    s = source.lower()
    for needle, key in (("narayanan", "Megatron-LM 2021 (Narayanan)"), ("korthikanti", "Korthikanti 2022"),
                        ("mt-nlg", "MT-NLG 2022"), ("nemo", "NeMo perf summary"), ("llama 3 herd", "Llama 3 paper"),
                        ("llm-foundry", "llm-foundry"), ("gpt-fast", "gpt-fast"), ("kipply", "FasterTransformer (kipply)"),
                        ("online serving", "TRT-LLM online"), ("perf-overview", "TRT-LLM throughput"),
                        ("h200launch", "TRT-LLM H200 launch"), ("inference_results_v4.0", "MLPerf v4.0"),
                        ("inference_results_v4.1", "MLPerf v4.1"), ("flashattention-2", "FlashAttention-2"),
                        ("distserve", "DistServe"), ("sarathi", "Sarathi-Serve"), ("apex", "APEX")):
        if needle in s:
            return key
    return source.split()[0]


def _dtypes(precision: str) -> tuple[str, str | None, str | None]:
    """(compute dtype, weight dtype, kv dtype) of a precision column."""
    p = precision.lower()
    if "int8" in p and "weight-only" in p:
        return "bf16", "int8", None
    if "int4" in p:
        return "bf16", "int4", None
    if "fp8" in p:
        return "fp8", "fp8", "fp8" if "kv" in p else None
    if p.startswith("fp16"):
        return "fp16", None, None
    return "bf16", None, None


def _training_setup(r: dict, row: Row) -> None:
    notes = r["notes"].lower()
    metric = r["metric"]
    row.phase = "train"
    row.input_len = _int(r["input_len"], 2048)
    mb = re.search(r"microbatch (\d+)|mbs (\d+)", notes)
    row.microbatch = int(next(g for g in mb.groups() if g)) if mb else 1
    cp = re.search(r"cp[ =](\d+)", notes)
    row.cp = int(cp.group(1)) if cp else 1
    vp = re.search(r"vp (\d+)", notes)
    row.vp = int(vp.group(1)) if vp else 1
    if "batch" in r["batch"].lower() and "tokens" in r["batch"].lower():  # "16M tokens/batch"
        row.batch = int(16 * 2**20 // row.input_len)
    else:
        row.batch = _int(r["batch"], 1)
    if row.kind.startswith("training_pp_tp") and "narayanan" in r["source"].lower():
        row.flops_convention = "megatron-eq3"
        row.recompute = "full"
    if row.kind == "training_zero3":
        row.flops_convention = "megatron-eq3"
        row.zero_stage, row.recompute = 3, "full"
    if "full_recompute" in metric:
        row.recompute = "full"
    if "seqpar" in metric or "sequence parallel +" in notes:
        row.recompute, row.sequence_parallel = "selective", True
    if "mt-nlg" in r["source"].lower():
        row.recompute = "full"
    if row.source == "Korthikanti 2022" and row.pp > 1 and row.model and row.model.shape[0] in (12288, 20480):
        row.vp = 3  # "interleaved schedule (m=3) for 175B/530B" (the source's setup for all its runs of those models)
    if row.kind == "training_fsdp":
        row.zero_stage = 3
        row.recompute = "full" if "checkpointing=yes" in notes else "none"
        row.microbatch = row.batch // row.dp
    if "nemo" in r["source"].lower():
        row.sequence_parallel = row.tp > 1
        row.recompute = "selective"
    if row.kind == "training_single_node":  # FlashAttention-2 GPT training on 8 GPUs: data parallel
        row.tp, row.pp, row.dp = 1, 1, row.n_gpus
        row.batch = 8 * row.dp  # not stated: 8 sequences per GPU at 8k (FA2's repo configs use 8-16)
        row.microbatch = 1
    if "llama 3 herd" in r["source"].lower() and row.pp > 1 and row.model and row.model.preset:
        # the paper (Sec. 3.3.2) interleaves (bubble (pp - 1) / (v m)) with one layer fewer on the first and last
        # stage (126 layers over pp 16: `pipeline_schedule.chunk_sizes`), and does not state v: predicted at the
        # planner's own choice (VIRTUAL_STAGES_CHOSEN), kept out of the fit since v is the planner's, not the source's
        row.vp = VIRTUAL_STAGES_CHOSEN
        row.fit_reason = "virtual stages not stated: predicted with the planner's choice of v"
    if row.cp > 1:
        row.dp *= row.cp
        if row.batch // row.dp // row.microbatch < 2 * row.pp and row.pp > 1:
            row.reason = (f"context parallelism cp={row.cp} at {row.input_len} tokens: as cp-fold data parallelism "
                          f"the pipeline gets {row.batch // row.dp} microbatch(es) for pp={row.pp}, not equivalent; "
                          f"context parallelism is not modelled")


# What each source's engine runs, from its own documentation (setup, not fitted):
# - tensor-parallel all-reduce through NCCL: gpt-fast (torch funcol), FasterTransformer (custom all-reduce
#   off by default), DistServe's SwiftTransformer, Megatron/NeMo/DeepSpeed training; the serving engines
#   (TensorRT-LLM, vLLM for APEX) use their own custom all-reduce inside an NVLink node ("auto").
# - attention without FlashAttention (scores in memory): Megatron-LM 2021 (Narayanan), Korthikanti et al.
#   2022 and MT-NLG (their activation-memory equations keep the 5as/h score terms; FlashAttention was
#   published in May 2022, after these runs).
_NCCL_SOURCES = ("gpt-fast", "FasterTransformer (kipply)", "DistServe")
_UNFUSED_ATTENTION_SOURCES = ("Megatron-LM 2021 (Narayanan)", "Korthikanti 2022", "MT-NLG 2022")
# - Megatron-LM before 2023 sent pipeline activations in line (its overlap_p2p_comm came with Megatron-core);
#   NeMo turns the overlap on with virtual stages, and Llama 3 sends asynchronously (Dubey et al. 2024, 3.3.2)
_IN_LINE_P2P_SOURCES = ("Megatron-LM 2021 (Narayanan)", "Korthikanti 2022", "MT-NLG 2022")
# - a compiled generation loop with no serving scheduler: gpt-fast (torch.compile, CUDA graphs) and
#   FasterTransformer's C++ decoder; the rest are serving engines (TensorRT-LLM, vLLM, DistServe, Sarathi).
_COMPILED_LOOP_SOURCES = ("gpt-fast", "FasterTransformer (kipply)")
# - TensorRT-LLM schedules in its C++ executor (the rest are Python-scheduled engines)
# - Sarathi-Serve's A100 PCIe GPUs are NVLink-bridged pairs: Azure 4 x A100 80GB nodes with pairwise NVLink
#   (Azure NC A100 v4; its authors' simulator Vidur lists the "4xA100 80GB Pairwise NVLink Node" it profiled,
#   microsoft/vidur README; secondary comparisons of the papers' testbeds say the same): a tp-2 instance
#   all-reduces over the bridge, not over PCIe.
_SARATHI_NODE = "azure-nc-a100-v4-pair"
_CPP_ENGINE_SOURCES = ("TRT-LLM throughput", "TRT-LLM online", "TRT-LLM H200 launch")


def _row_from_end_to_end(r: dict) -> Row:
    model = parse_model(r["model"])
    device = device_of(r["hardware"])
    n = _int(r["n_gpus"], 1)
    dtype, wdtype, kvdtype = _dtypes(r["precision"])
    source = _source_key(r["source"])
    row = Row(r["id"], "", source, "", r["kind"], "", r["metric"], float(r["value"]), r["unit"], model, device, n,
              tp=_int(r["tp"], 1), pp=_int(r["pp"], 1), dp=_int(r["dp"], 1), dtype=dtype, weight_dtype=wdtype,
              kv_dtype=kvdtype, notes=r["notes"], what=r["model"])
    if row.kind.startswith("training"):
        _training_setup(r, row)
    elif row.kind.startswith("inference_decode") or row.metric == "decode_latency_per_token":
        row.phase, row.batch = "decode", _int(r["batch"], 1)
        row.input_len = _int(r["input_len"], 1) + (_int(r["output_len"], 200) // 2)
    elif row.kind == "inference_prefill":
        row.phase, row.batch, row.input_len = "prefill", _int(r["batch"], 1), _int(r["input_len"], 1)
    elif row.kind.startswith("inference_throughput"):
        row.input_len, row.output_len = _int(r["input_len"]), _int(r["output_len"])
        row.phase = "static_batch" if r["batch"].strip().isdigit() else "serve"
        row.batch = _int(r["batch"], 1) if row.phase == "static_batch" else 1
    elif row.kind.startswith("inference_serving"):
        row.phase, row.qps = "serve_qps", float(re.search(r"QPS=([\d.]+)", r["batch"]).group(1))
        row.input_len, row.output_len = _int(r["input_len"]), _int(r["output_len"])
    elif row.kind == "inference_mlperf":
        row.phase = "mlperf"
    row.collectives = "nccl" if source in _NCCL_SOURCES else "auto"
    row.runtime = "compiled" if source in _COMPILED_LOOP_SOURCES else "cpp-engine" if source in _CPP_ENGINE_SOURCES \
        else "engine"
    row.attention = "unfused" if source in _UNFUSED_ATTENTION_SOURCES else "flash"
    row.p2p_overlap = source not in _IN_LINE_P2P_SOURCES
    row.group = _group(row)
    row.family = _family(row, r)
    row.reason = row.reason or _exclusion(row, r)
    return row


def _row_from_paper(r: dict) -> Row:
    model = parse_model(r["model"])
    source = _source_key(r["source"])
    prefill = r["phase"] == "prefill"
    row = Row(r["id"], "paper_" + source.split()[0].split("-")[0].lower(), source, "", "paper_" + r["phase"],
              r["phase"], r["metric"], float(r["value_ms"]), "ms", model, device_of(r["hardware"]),
              _int(r["n_gpus"], 1), tp=_int(r["tp"], 1), dtype=_dtypes(r["precision"])[0],
              batch=_int(r["batch"], 1), input_len=_int(r["input_len"], 1), what=f"{r['model']} {r['phase']}",
              collectives="nccl" if source in _NCCL_SOURCES else "auto")
    if source == "Sarathi-Serve" and row.device == "A100-PCIE-80GB" and row.n_gpus <= 2:
        row.cluster = f"1x{_SARATHI_NODE}"
    row.family = f"{source}|{r['model']}|{r['phase']}|b{row.batch}|s{row.input_len}" if not prefill else \
        f"{source}|{r['model']}|prefill|s{row.input_len}"
    row.reason = "" if model and row.device else "model or device not in the planner"
    return row


def _group(row: Row) -> str:
    k = row.kind
    if k.startswith("training"):
        if row.dtype == "fp8":
            return "train_fp8"
        if row.source in ("Megatron-LM 2021 (Narayanan)", "Korthikanti 2022", "MT-NLG 2022"):
            return "train_megatron"
        return "train_other"
    if row.phase == "decode":
        return "decode_b1"
    if row.phase == "prefill":
        return "prefill"
    if row.phase in ("serve", "static_batch"):
        return "serve_offline"
    if row.phase == "serve_qps":
        return "serve_low_load"
    return "mlperf"


def _family(row: Row, r: dict) -> str:
    """Rows of one source table that differ only in layout (tp/pp/dp) or model scale."""
    if row.kind.startswith("training"):
        table = r["source"].split(";")[0]  # the source's table (Table 1 and Table 2 are separate series)
        return f"{table}|{row.kind}|{row.device}|{row.metric}|{row.dtype}|s{row.input_len}" + \
            (f"|{row.model.name}" if row.source in ("Korthikanti 2022", "NeMo perf summary") else "")
    return f"{row.source}|{r['model']}|{row.device}|{r['precision']}|{row.metric}|{r['batch']}|{r['input_len']}|{r['output_len']}"


def _exclusion(row: Row, r: dict) -> str:
    if row.model is None:
        return f"model '{r['model'][:40]}' has no architecture in the planner"
    if row.device is None:
        return f"no '{r['hardware'][:30]}' device in the hardware database"
    if row.phase == "mlperf":
        return "MLPerf: submitter-chosen layout and dataset length distribution not in the row"
    return ""


def load_rows() -> list[Row]:
    with open(END_TO_END_CSV, newline="") as f:
        rows = [_row_from_end_to_end(r) for r in csv.DictReader(f)]
    with open(PAPER_TIMINGS_CSV, newline="") as f:
        rows += [_row_from_paper(r) for r in csv.DictReader(f)]
    return rows
