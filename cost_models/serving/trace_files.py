"""Trace files of serving workloads: their formats, the rows they hold (each row's line kept, so an error names
it) and their bounds. `cost_models.serving.workload.read_trace` builds a `Workload` from the rows.

- CSV: `num_prefill_tokens,num_decode_tokens` and optionally `arrived_at` (seconds) and `hash_ids`
  (space-separated ids of `HASH_BLOCK_TOKENS`-token prompt blocks), as in benchmarks/data/traces/;
- JSON lines (`.jsonl`): `timestamp` (s), `input_length`, `output_length`, `hash_ids`: the timed traces of
  vLLM's benchmark client (`--dataset-name timed_trace`) and of the Mooncake/Qwen traces.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ir.errors import UserError

if TYPE_CHECKING:
    from cost_models.serving.workload import Workload

HASH_BLOCK_TOKENS = 16  # tokens per prefix hash id: vLLM's timed_trace default (--timed-trace-chunk-hash-size)


def write_trace(path: str | Path, w: Workload) -> None:
    """Write `w` as a trace CSV that `workload.read_trace` (and `--workload PATH.csv`) reads back; block hashes go in a
    `hash_ids` column (space-separated ids of HASH_BLOCK_TOKENS-token blocks)."""
    if w.block_hashes is not None and w.hash_block_tokens != HASH_BLOCK_TOKENS:
        raise UserError(f"a trace CSV holds hash ids of {HASH_BLOCK_TOKENS}-token blocks; this workload has "
                        f"{w.hash_block_tokens}-token blocks (write it with write_timed_trace)")
    header = "arrived_at,num_prefill_tokens,num_decode_tokens" + (",hash_ids" if w.block_hashes is not None else "")
    lines = []
    for i, (a, p, o) in enumerate(zip(w.arrival_s.tolist(), w.prompt_tokens.tolist(), w.output_tokens.tolist())):
        extra = "" if w.block_hashes is None else "," + " ".join(map(str, w.block_hashes[i].tolist()))
        lines.append(f"{a:.6f},{p},{o}{extra}\n")
    Path(path).write_text(header + "\n" + "".join(lines))


def write_timed_trace(path: str | Path, w: Workload) -> None:
    """Write `w` as JSON lines for vLLM's benchmark client (`--dataset-name timed_trace --self-timed`, chunk size
    `w.hash_block_tokens`): timestamp (s), input_length, output_length, hash_ids. A request without hash ids
    gets fresh ones (content shared with no other request)."""
    fresh = 1 + max((int(ids.max()) for ids in (w.block_hashes if w.block_hashes is not None else []) if len(ids)),
                    default=0)
    lines = []
    for i, (a, p, o) in enumerate(zip(w.arrival_s.tolist(), w.prompt_tokens.tolist(), w.output_tokens.tolist())):
        blocks = -(-p // w.hash_block_tokens)
        ids = w.block_hashes[i].tolist() if w.block_hashes is not None else []
        ids = ids + list(range(fresh, fresh + blocks - len(ids)))
        fresh += max(blocks - len(ids), 0) + blocks
        lines.append(json.dumps({"timestamp": round(a, 6), "input_length": p, "output_length": o,
                                 "hash_ids": ids[:blocks]}) + "\n")
    Path(path).write_text("".join(lines))


TRACE_MAX_ROWS = 1_000_000  # input bounds of a trace file: requests, and tokens per request
TRACE_MAX_TOKENS = 2**24


def _open_rows(file: Path):
    try:
        return file.open(newline="")
    except OSError as exc:
        raise UserError(f"cannot read trace {file}: {exc.strerror}") from None


def csv_rows(file: Path) -> list[tuple[int, float, int, int, list | None]]:
    """(line, arrival, prompt, output, hash ids) of a trace CSV."""
    with _open_rows(file) as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        if not {"num_prefill_tokens", "num_decode_tokens"} <= set(header):
            raise UserError(f"{file}:1: a trace needs columns num_prefill_tokens,num_decode_tokens "
                            f"(and optionally arrived_at, hash_ids), got {','.join(header)!r}")
        ip, io = header.index("num_prefill_tokens"), header.index("num_decode_tokens")
        ia = header.index("arrived_at") if "arrived_at" in header else None
        ih = header.index("hash_ids") if "hash_ids" in header else None
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                a = float(row[ia]) if ia is not None else 0.0
                p, d = int(float(row[ip])), int(float(row[io]))
                ids = [int(x) for x in row[ih].split()] if ih is not None else None
            except (IndexError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
                raise UserError(f"{file}:{line}: expected numbers in arrived_at, num_prefill_tokens, "
                                f"num_decode_tokens (and space-separated integers in hash_ids), got {','.join(row)!r}") from None
            rows.append((line, a, p, d, ids))
            if len(rows) > TRACE_MAX_ROWS:
                raise UserError(f"{file}: more than {TRACE_MAX_ROWS:,} requests; sample the trace")
    return rows


def jsonl_rows(file: Path) -> list[tuple[int, float, int, int, list | None]]:
    """(line, arrival, prompt, output, hash ids) of a timed trace in JSON lines (vLLM's timed_trace fields)."""
    rows = []
    with _open_rows(file) as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                entry = json.loads(text)
                ids = entry.get("hash_ids")
                rows.append((line, float(entry["timestamp"]), int(entry["input_length"]), int(entry["output_length"]),
                             None if ids is None else [int(x) for x in ids]))
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
                raise UserError(f"{file}:{line}: expected a JSON object with numbers in timestamp, input_length, "
                                f"output_length (and a list of integers in hash_ids), got {text.strip()[:80]!r}") from None
            if len(rows) > TRACE_MAX_ROWS:
                raise UserError(f"{file}: more than {TRACE_MAX_ROWS:,} requests; sample the trace")
    return rows



def trace_lengths(path: str | Path) -> tuple[int, int]:
    """Mean prompt and output lengths of a trace CSV (what inference plans take as the workload's shape);
    a bad row names its line."""
    file = Path(path)
    try:
        with file.open(newline="") as handle:
            rows = list(itertools.islice(csv.DictReader(handle), TRACE_MAX_ROWS + 1))
    except OSError as exc:
        raise UserError(f"cannot read trace {file}: {exc.strerror}") from None
    if not rows or not {"num_prefill_tokens", "num_decode_tokens"} <= set(rows[0]):
        raise UserError(f"{file}: a trace needs columns num_prefill_tokens,num_decode_tokens")
    inputs, outputs = [], []
    for line, row in enumerate(rows, start=2):
        try:
            p, d = int(float(row["num_prefill_tokens"])), int(float(row["num_decode_tokens"]))
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
            raise UserError(f"{file}:{line}: num_prefill_tokens and num_decode_tokens must be numbers, "
                            f"got {row.get('num_prefill_tokens')!r}, {row.get('num_decode_tokens')!r}") from None
        if max(p, d) > TRACE_MAX_TOKENS or line > TRACE_MAX_ROWS + 1:
            raise UserError(f"{file}:{line}: more than {TRACE_MAX_ROWS:,} requests or {TRACE_MAX_TOKENS:,} tokens in "
                            f"one; sample the trace")
        if p < 1 or d < 0:
            raise UserError(f"{file}:{line}: token counts must be positive, got {p}, {d}")
        inputs.append(p)
        outputs.append(d)
    return round(sum(inputs) / len(inputs)), max(round(sum(outputs) / len(outputs)), 1)
