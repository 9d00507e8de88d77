"""The generated program as a trainer, under real torchrun (gloo, CPU): it learns from a text file with a
tokenizer built offline (tests/data, see tools/build_test_tokenizer.py), writes DCP checkpoints and resumes
from them exactly; `--checkpoint` reads a `save_pretrained` folder into tp, pp, dp and ep shards and gives
the single-process model's logits and loss. Paths are given relative to the launching directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import planner
from codegen import codegen
from codegen.context import build_context, model_spec
from codegen.runtime.data import TokenSource
from codegen.runtime.model import build_model
from planner.model_source import model_record

DATA = Path(__file__).parent / "data"
BATCH, SEQ = 8, 32


def _launch(cwd: Path, gen: Path, *args: str) -> subprocess.CompletedProcess:
    """./launch.sh of the generated folder, started from `cwd` (so relative paths are the caller's)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHON": sys.executable}
    env.pop("PYTHONPATH", None)  # the launch folder carries its runtime: nothing of this checkout is imported
    return subprocess.run([str(gen / "launch.sh"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _logged(stdout: str) -> dict[int, float]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"step"')]
    return {line["step"]: line["loss"] for line in lines}


def _dumps(folder: Path) -> list[dict]:
    return [torch.load(f, weights_only=False) for f in sorted(folder.glob("rank*.pt"))]


@pytest.mark.slow
def test_trains_on_a_text_file_saves_and_resumes_exactly(tmp_path):
    plan = planner.plan("tiny-llama", "2xcpu", "train", batch=BATCH, seq_len=SEQ, dp=2).to_dict()
    plan["decision"]["zero_stage"] = 3  # FSDP2 per block, resharded after forward
    codegen(plan, tmp_path / "gen", verify=False)  # deliberately: the edited decision no longer matches its predictions
    shutil.copytree(DATA, tmp_path / "data")
    common = ["--mode", "train", "--steps", "50", "--data", "data/tiny_corpus.txt", "--tokenizer",
              "data/tiny_tokenizer.json", "--lr", "3e-3", "--warmup-steps", "5", "--log-every", "5"]
    first = _launch(tmp_path, tmp_path / "gen", *common, "--save", "ckpt", "--save-every", "25", "--dump", "a")
    assert first.returncode == 0, first.stderr[-3000:]
    logged = _logged(first.stdout)
    assert sorted(logged) == [1, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert logged[50] < 0.75 * logged[1], logged  # it learns: ln(512) = 6.24 at the start
    for step in (25, 50):
        assert (tmp_path / "ckpt" / f"step-{step:07d}" / ".metadata").is_file()

    resumed = _launch(tmp_path, tmp_path / "gen", *common, "--resume", "ckpt/step-0000025", "--dump", "b")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = _logged(resumed.stdout)
    assert sorted(again) == [26, 30, 35, 40, 45, 50]
    for step in (30, 35, 40, 45, 50):
        assert again[step] == pytest.approx(logged[step], abs=1e-5), step
    for a, b in zip(_dumps(tmp_path / "a"), _dumps(tmp_path / "b")):  # each replica's own losses, step by step
        assert b["first_step"] == 25 and len(b["loss"]) == 25
        assert b["loss"] == pytest.approx(a["loss"][25:], abs=1e-5)


CHECKPOINT_CASES = {  # name: (model, fixed degrees)
    "tp2": ("tiny-llama", {"tp": 2, "sequence_parallel": False}),
    "pp2": ("tiny-llama", {"pp": 2, "schedule": "1f1b"}),
    "dp2": ("tiny-llama", {"dp": 2}),
    "moe_dp2_ep2": ("tiny-mixtral", {"dp": 2, "ep": 2}),  # experts stored per expert (w1/w2/w3) by save_pretrained
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_checkpoint_from_save_pretrained_gives_the_models_logits(case, tmp_path):
    model_name, fixed = CHECKPOINT_CASES[case]
    model = build_model(model_spec(model_record(model_name, {})), torch.float32, "cpu", seed=7)  # not --seed 0
    model.to(torch.bfloat16).save_pretrained(tmp_path / "hf")  # bf16 on disk, read into fp32 shards
    model.float()
    plan = planner.plan(model_name, "2xcpu", "train", batch=4, seq_len=8, **fixed).to_dict()
    plan["decision"]["zero_stage"] = 3 if case == "dp2" else plan["decision"]["zero_stage"]
    if plan["decision"]["pp"] > 1:
        plan["decision"].update(microbatches=2, microbatch_size=2)
    codegen(plan, tmp_path / "gen", verify=False)  # deliberately: the edited decision no longer matches its predictions
    proc = _launch(tmp_path, tmp_path / "gen", "--mode", "both", "--checkpoint", "hf", "--batch", "4", "--seq-len",
                   "8", "--new-tokens", "1", "--optimizer", "sgd", "--lr", "0", "--dump", "dump")
    assert proc.returncode == 0, proc.stderr[-3000:]
    x, y = TokenSource(None, model.config.vocab_size, seed=0).batch(0, 4, 8)
    with torch.no_grad():
        logits = model(x).logits
    loss = float(F.cross_entropy(logits.flatten(0, 1), y.flatten()))
    last = [d for d in _dumps(tmp_path / "dump") if d["stage"] == plan["decision"]["pp"] - 1]
    assert {d["dp"] for d in last} == set(range(build_context(plan)["runtime"]["dp"]))
    for d in last:
        lo, hi = d["rows"]
        torch.testing.assert_close(d["logits"], logits[lo:hi], atol=1e-4, rtol=0)
    rows = {d["dp"]: (d["rows"], d["loss"][0]) for d in last}  # training read the checkpoint into FSDP shards too
    for (lo, hi), replica_loss in rows.values():
        expected = float(F.cross_entropy(logits[lo:hi].flatten(0, 1), y[lo:hi].flatten()))
        assert replica_loss == pytest.approx(expected, abs=1e-4)
    assert sum(v[1] for v in rows.values()) / len(rows) == pytest.approx(loss, abs=1e-4)


def test_missing_checkpoint_folder_is_one_line(tmp_path):
    plan = planner.plan("tiny-llama", "1xcpu", "train", batch=2, seq_len=8).to_dict()
    planner.codegen(plan, tmp_path / "gen")
    proc = subprocess.run([sys.executable, str(tmp_path / "gen" / "run_plan.py"), "--checkpoint", "nowhere"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0",
                               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: checkpoint folder nowhere does not exist; pass a folder written by save_pretrained"]


@pytest.mark.slow
def test_local_init_draws_each_shard_once_and_trains(tmp_path):
    """`--init local` (no rank builds the whole model): tensor-parallel shards drawn per shard, norms at 1,
    a near-uniform first loss (std 0.02 weights), and the loss falls."""
    plan = planner.plan("tiny-llama", "2xcpu", "train", batch=4, seq_len=16, tp=2, sequence_parallel=False).to_dict()
    planner.codegen(plan, tmp_path / "gen")
    shutil.copytree(DATA, tmp_path / "data")
    proc = _launch(tmp_path, tmp_path / "gen", "--mode", "train", "--init", "local", "--steps", "8", "--lr", "1e-2",
                   "--batch", "4", "--seq-len", "16", "--log-every", "1", "--dump", "dump", "--data",
                   "data/tiny_corpus.txt", "--tokenizer", "data/tiny_tokenizer.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = _logged(proc.stdout)
    assert abs(logged[1] - 6.238) < 0.05 and logged[8] < logged[1] - 0.2, logged
    first, second = _dumps(tmp_path / "dump")
    q = first["params"]["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(q, second["params"]["model.layers.0.self_attn.q_proj.weight"])  # one tensor, two shards
    halves = q.chunk(2)  # the two tp ranks' rows were drawn from different generators
    assert not torch.equal(halves[0], halves[1])
