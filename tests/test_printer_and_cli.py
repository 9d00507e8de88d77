"""Golden text of the printer, and `planner inspect` end to end."""

from __future__ import annotations

import json
from pathlib import Path

from ir.printer import format_graph
from planner.cli import main
from tests.conftest import UPDATE_GOLDEN

GOLDEN = Path(__file__).parent / "golden"


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE_GOLDEN:  # only an explicit flag writes goldens; a missing one is a failure, never made up here
        path.write_text(text)
    assert path.exists(), f"golden {name} is missing; create it with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} changed; rerun with UPDATE_GOLDEN=1 if intended"


def test_printer_golden_tiny_llama(graph_of):
    _check_golden("tiny_llama_s16.txt", format_graph(graph_of("tiny-llama", seq_len=16)))


def test_printer_golden_tiny_mixtral_layers(graph_of):
    _check_golden("tiny_mixtral_layers.txt", format_graph(graph_of("tiny-mixtral", seq_len=16), ops=False))


def test_inspect_json_keys(capsys):
    assert main(["inspect", "tiny-llama", "--seq-len", "32", "--phase", "train", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["param_count"] == 250432
    assert report["phase"] == "train" and report["tokens"] == 32
    assert report["distinct_blocks"] == 1 and len(report["layers"]) == 6
    for row in report["layers"]:
        assert {"param_count", "flops", "activation_bytes", "kv_bytes_per_token"} <= set(row)
        assert row["flops"] >= 0 and row["activation_bytes"] >= 0


def test_inspect_table_and_list(capsys):
    assert main(["inspect", "tiny-mixtral", "--phase", "decode", "--context-len", "64"]) == 0
    out = capsys.readouterr().out
    assert "moe" in out and "distinct block" in out and "KV cache" in out
    assert main(["inspect", "--list"]) == 0
    assert "llama-3.1-405b" in capsys.readouterr().out
