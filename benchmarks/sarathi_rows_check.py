"""Cross-check of the Sarathi-Serve rows (validation/paper_timings.csv, Yi-34B, tp 2, A100 80GB) against a bottom-up
sum of the same engine's own published profiles (Vidur, `benchmarks/data/vidur/`, README there):

    step >= layers x (non-attention ops of one layer at the iteration's tokens, scaled from CodeLlama-34B to Yi-34B
                      by the weights each layer holds: the GEMMs' bytes when weight-bound, their FLOPs when not)
          + layers x (attention of one layer: FlashAttention decode of b sequences of 1024 cached tokens, the same 4
                      K/V heads of 128 per GPU at tp 2; or causal prefill of one prompt, scaled by query heads)
          + the engine's host time of one iteration at b sequences, tp 2 (linear fit of the profile at 8-128)

All-reduces (two per layer) and the LM head are left out, so the sum is a lower bound of what this engine's kernels
and host work take. It prints the sum, the planner's prediction and the measured row: where a measured step is
several times the sum, the row holds time that neither the engine's profiles nor the planner model.

How the rows were measured (microsoft/sarathi-serve, osdi-experiments/figure-2 at 02d2567: operation_time_split_runs.sh,
decode.csv, prefill.csv): the engine's `batch_execution_time` per batch (the whole iteration as its metrics store
times it), averaged over the batches of one shape, on 2 A100 80GB PCIe joined pairwise by NVLink. Prefill rows: one
prompt per batch. Decode rows: 2b requests of 1,024 tokens (1,020 prompt, 4 output) under the vLLM-style scheduler
with batch size b and a 1,024-token budget, so each pure decode batch holds b sequences at 1,020-1,023 tokens of
context. The decode steps rise unevenly with b (46.8, 47.5, 48.8 ms at b 1, 2, 4, then 69.7 ms at 8 and 127.8 ms at
64), which no per-token or per-sequence term of the profiles gives.

The second table holds the same engine's own CUDA-event timers (the artifact's table-2 experiment, same GPUs, model
and tp, `benchmarks/data/sarathi/`): the four projections ("linear") and the attention of a decode-only batch of 4
sequences at 1,025-1,039 tokens of context and of a 1,024-token prefill, beside the planner's GEMM and attention time
of the same blocks. Its batch times are medians over runs with and without those timers, so they hold the timers'
own cost in part, and are printed for reference only.

    python3 benchmarks/sarathi_rows_check.py
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = Path(__file__).resolve().parent / "data" / "vidur"
ENGINE_TIMERS = Path(__file__).resolve().parent / "data" / "sarathi" / "table2_results.csv"
TABLE2_DECODE_CONTEXT = 1032  # the decode-only batches of table 2 run at 1,025-1,039 tokens of context
CODELLAMA_34B = {"hidden": 8192, "intermediate": 22016, "heads": 64, "kv_heads": 8, "head_dim": 128}
CPU_COLUMNS = ("schedule_mean", "sampler_e2e_mean", "prepare_inputs_e2e_mean", "process_model_outputs_mean")


def layer_weight_params(hidden: int, intermediate: int, heads: int, kv_heads: int, head_dim: int) -> int:
    """Weights one gated-MLP transformer layer reads per step: QKV, output projection, gate/up and down.

    >>> layer_weight_params(**CODELLAMA_34B)
    692060160
    """
    return hidden * (heads + 2 * kv_heads) * head_dim + heads * head_dim * hidden + 3 * hidden * intermediate


def _rows(name: str) -> list[dict]:
    with open(DATA / name, newline="") as f:
        return list(csv.DictReader(f))


def layer_ops_ms(tokens: int) -> float:
    """CodeLlama-34B's non-attention ops of one layer at `tokens` tokens, tp 2 (two residual adds per layer)."""
    row = next(r for r in _rows("a100_codellama34b_tp2_layer_ops.csv") if int(r["num_tokens"]) == tokens)
    return sum(float(v) * (2 if k.startswith("add") else 1) for k, v in row.items() if k != "num_tokens")


def attention_prefill_ms(tokens: int) -> float:
    """Causal FlashAttention prefill of one `tokens`-token prompt, one layer, 32 query heads per GPU (64 at tp 2)."""
    row = next(r for r in _rows("a100_attention_prefill_tp2.csv") if int(r["prefill_chunk_size"]) == tokens)
    return float(row["attn_prefill_median_ms"])


def attention_decode_ms(batch: int) -> float:
    row = next(r for r in _rows("a100_attention_decode_tp2_kv1024.csv") if int(r["batch_size"]) == batch)
    return float(row["attn_decode_median_ms"])


def host_ms(batch: int, tp: int = 2) -> float:
    """The sarathi engine's host time per iteration at `batch` sequences: least-squares line over the profile's
    rows at this tp (all models; the per-model spread is printed by `main`)."""
    rows = [r for r in _rows("a100_cpu_overheads.csv") if int(r["tensor_parallel_degree"]) == tp]
    xs = [float(r["batch_size"]) for r in rows]
    ys = [sum(float(r[c]) for c in CPU_COLUMNS) + (float(r["ray_comm_time_mean"]) if tp > 1 else 0.0) for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my + slope * (batch - mx)


def main() -> None:
    import end_to_end_rows as e2e
    from end_to_end_models import graph_of
    from end_to_end_predict import predict

    rows = [r for r in e2e.load_rows() if r.id.startswith("PT-yi34b-")]
    graph = graph_of(rows[0].model)
    config = graph.config
    yi = {"hidden": config["hidden_size"], "intermediate": config["intermediate_size"], "heads": config["num_heads"],
          "kv_heads": config["num_kv_heads"], "head_dim": config["hidden_size"] // config["num_heads"]}
    layers = sum(1 for layer in graph.layers if layer.kind == "block")
    scale = layer_weight_params(**yi) / layer_weight_params(**CODELLAMA_34B)
    heads = yi["heads"] / CODELLAMA_34B["heads"]
    print(f"Yi-34B: {layers} layers, weights per layer x{scale:.3f} of CodeLlama-34B's, query heads x{heads:.3f}; host "
          f"time per iteration (sarathi engine, tp 2, fit over 8-128 sequences): {host_ms(8):.1f} ms at 8, "
          f"{host_ms(128):.1f} ms at 128")
    print(f"{'row':16} {'tokens':>6} {'ops':>7} {'attn':>7} {'host':>6} {'sum':>7} {'planner':>8} {'measured':>9} "
          f"{'planner/sum':>12} {'measured/sum':>13}")
    ratios: dict[str, list[tuple[float, float]]] = {"prefill": [], "decode": []}
    for row in rows:
        decode = row.phase == "decode"
        tokens = row.batch if decode else row.input_len
        if not decode and tokens > 4096:
            print(f"{row.id:16} {tokens:6d}  (the profiles stop at 4,096 prompt tokens)")
            continue
        ops = layers * layer_ops_ms(tokens) * scale
        attn = layers * (attention_decode_ms(tokens) if decode else attention_prefill_ms(tokens) * heads)
        host = host_ms(row.batch)
        total, predicted = ops + attn + host, predict(row)
        ratios["decode" if decode else "prefill"].append((predicted / total, row.measured / total))
        print(f"{row.id:16} {tokens:6d} {ops:7.1f} {attn:7.1f} {host:6.1f} {total:7.1f} {predicted:8.1f} "
              f"{row.measured:9.1f} {predicted / total:11.2f}x {row.measured / total:12.2f}x")
    for phase, pairs in ratios.items():
        planner, measured = [p for p, _ in pairs], [m for _, m in pairs]
        print(f"summary {phase}: planner / sum x{min(planner):.2f}-x{max(planner):.2f}; "
              f"measured / sum x{min(measured):.2f}-x{max(measured):.2f}")
    engine_timer_check(rows, graph)


def engine_timer_check(rows: list, graph) -> None:
    """The planner's GEMM and attention time of Yi-34B's 60 blocks against the engine's own CUDA-event timers
    (table 2 of the artifact) for the two pure batches the estimator prices; the mixed batch is left out."""
    from dataclasses import replace

    from end_to_end_predict import inference_pass

    by_id = {row.id: row for row in rows}
    shapes = {(0, 4, 4): replace(by_id["PT-yi34b-d1"], batch=4, input_len=TABLE2_DECODE_CONTEXT),
              (1024, 0, 1): by_id["PT-yi34b-p1024"]}
    print("\nthe engine's own CUDA-event timers (table 2; ms over the 60 blocks) against the planner's")
    print(f"{'batch':34} {'linear':>7} {'GEMMs':>7} {'ratio':>6} {'attn':>6} {'planner':>8} {'ratio':>6} "
          f"{'batch time':>11} {'planner':>8}")
    with open(ENGINE_TIMERS, newline="") as f:
        for timed in csv.DictReader(f):
            key = tuple(int(float(timed[c])) for c in ("batch_num_prefill_tokens", "batch_num_decode_tokens",
                                                       "batch_size"))
            if key not in shapes:
                print(f"{key[0]} prompt + {key[1]} decode tokens: a mixed batch, which the estimator does not price "
                      f"on its own")
                continue
            p = inference_pass(shapes[key])
            blocks = [t for layer, t in zip(graph.layers, p.layer_times) if layer.kind == "block"]
            gemm, attn = (1e3 * sum(getattr(t, f) for t in blocks) for f in ("gemm_s", "attention_s"))
            linear, attention = float(timed["linear"]), float(timed["attention"])
            label = (f"decode-only, {key[2]} sequences" if key[0] == 0 else f"prefill-only, {key[0]} tokens")
            print(f"{label:34} {linear:7.1f} {gemm:7.1f} {gemm / linear:5.2f}x {attention:6.1f} {attn:8.1f} "
                  f"{attn / attention:5.2f}x {float(timed['batch_execution_time']):11.1f} {1e3 * p.time_s:8.1f}")


if __name__ == "__main__":
    main()
