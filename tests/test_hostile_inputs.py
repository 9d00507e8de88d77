"""Hostile and careless inputs across every command (listed, over 200): model references and config files,
clusters and cluster YAML, numbers, SLOs, sweeps, traces, plan files, output paths, engine profiles, buffer
CSVs. Each runs the CLI in-process (`planner.cli.main`) in a scratch folder with a canary module on the import
path, and must end with exit code 0 or 2, a single `error:` line when it fails, no traceback, the canary never
imported (no code a model reference, plan or file names is run without --trust-model-code) and no PWNED file
anywhere (no command smuggled into a value ran). The issue's own list is asserted with its reason.

Generated scripts are run end to end in `tests/test_generated_scripts.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from planner.cli import main

CANARY = "aot_hostile_canary"
MARK = "CANARY_RAN"
PWN = "touch PWNED"
CONFIG = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 512}
DEVICE = "{name: g, kind: gpu, peak_flops: {bf16: %s}, memory_bytes: %s, memory_bandwidth_bytes_per_s: %s}"
NODE = "{device: g, intra_link: nvlink4-nvswitch, nic_link: ib-ndr-400g, nics: 1%s}"


def _config(**changes) -> str:
    values = {**CONFIG, **changes}
    return json.dumps({k: v for k, v in values.items() if v is not ...}, allow_nan=True)


FILES = {  # name in the scratch folder -> text
    f"{CANARY}.py": f"import pathlib\npathlib.Path(__file__).with_name('{MARK}').touch()\n"
                    f"def make():\n    pathlib.Path(__file__).with_name('{MARK}').touch()\n",
    "cfg/only_type/config.json": '{"model_type": "llama"}',
    "cfg/no_hidden.json": _config(hidden_size=...),
    "cfg/no_layers.json": _config(num_hidden_layers=...),
    "cfg/layers0.json": _config(num_hidden_layers=0),
    "cfg/layers_neg.json": _config(num_hidden_layers=-3),
    "cfg/layers_100k.json": _config(num_hidden_layers=100_000),
    "cfg/layers_bool.json": _config(num_hidden_layers=True),
    "cfg/layers_str.json": _config(num_hidden_layers="8"),
    "cfg/layers_float.json": _config(num_hidden_layers=2.5),
    "cfg/heads0.json": _config(num_attention_heads=0),
    "cfg/kv_heads3.json": _config(num_key_value_heads=3),
    "cfg/hidden_odd.json": _config(hidden_size=65),
    "cfg/vocab0.json": _config(vocab_size=0),
    "cfg/vocab_neg.json": _config(vocab_size=-5),
    "cfg/vocab_huge.json": _config(vocab_size=10**12),
    "cfg/activation.json": _config(hidden_act="nosuch"),
    "cfg/activation_list.json": _config(hidden_act=["silu"]),
    "cfg/nan.json": _config(rms_norm_eps=float("nan")),
    "cfg/infinity.json": _config(rope_theta=float("inf")),
    "cfg/unknown_type.json": _config(model_type="llamma"),
    "cfg/type_path.json": _config(model_type="../../etc/passwd"),
    "cfg/type_number.json": _config(model_type=7),
    "cfg/arch_os.json": _config(architectures=["system"]),
    "cfg/arch_pipeline.json": _config(architectures=["pipeline"]),
    "cfg/arch_canary.json": _config(architectures=[CANARY]),
    "cfg/auto_map.json": _config(auto_map={"AutoConfig": f"{CANARY}.make", "AutoModelForCausalLM": f"{CANARY}.make"}),
    "cfg/list.json": "[1, 2, 3]",
    "cfg/string.json": '"llama"',
    "cfg/empty.json": "",
    "cfg/binary.json": "\udcff\udcfe garbage",
    "cfg/deep.json": "[" * 100_000 + "]" * 100_000,
    "cfg/experts_over.json": json.dumps({**CONFIG, "model_type": "mixtral", "num_local_experts": 4,
                                         "num_experts_per_tok": 8}),
    "cfg/moe_no_experts.json": json.dumps({**CONFIG, "model_type": "mixtral"}),
    "cfg/gpt2_no_embd.json": json.dumps({"model_type": "gpt2", "n_layer": 2, "n_head": 2, "vocab_size": 100}),
    "cfg/text_config_missing.json": json.dumps({"model_type": "gemma3"}),
    "cfg/empty_folder/.keep": "",
    "cluster/zero_flops.yaml": f"devices: [{DEVICE % (0, '80 GB', '1 TB/s')}]\nnodes: [{NODE % ''}]\n",
    "cluster/nan_flops.yaml": f"devices: [{DEVICE % ('.nan', '80 GB', '1 TB/s')}]\nnodes: [{NODE % ''}]\n",
    "cluster/inf_flops.yaml": f"devices: [{DEVICE % ('.inf', '80 GB', '1 TB/s')}]\nnodes: [{NODE % ''}]\n",
    "cluster/neg_bandwidth.yaml": f"devices: [{DEVICE % ('1 PFLOP/s', '80 GB', '-1 TB/s')}]\nnodes: [{NODE % ''}]\n",
    "cluster/zero_bandwidth.yaml": f"devices: [{DEVICE % ('1 PFLOP/s', '80 GB', 0)}]\nnodes: [{NODE % ''}]\n",
    "cluster/zero_memory.yaml": f"devices: [{DEVICE % ('1 PFLOP/s', 0, '1 TB/s')}]\nnodes: [{NODE % ''}]\n",
    "cluster/nan_memory.yaml": f"devices: [{DEVICE % ('1 PFLOP/s', '.nan', '1 TB/s')}]\nnodes: [{NODE % ''}]\n",
    "cluster/count0.yaml": "nodes: [{preset: dgx-h100, count: 0}]\n",
    "cluster/count_neg.yaml": "nodes: [{preset: dgx-h100, count: -2}]\n",
    "cluster/count_huge.yaml": "nodes: [{preset: dgx-h100, count: 1000000000}]\n",
    "cluster/per_node_huge.yaml": "nodes: [{preset: dgx-h100, devices_per_node: 100000000}]\n",
    "cluster/link_zero.yaml": "nodes: [{preset: dgx-h100, intra_link: {name: x, bandwidth_bytes_per_s: 0, latency_s: 1 us}}]\n",
    "cluster/link_nan.yaml": "nodes: [{preset: dgx-h100, nic_link: {name: x, bandwidth_bytes_per_s: .nan, latency_s: 1 us}}]\n",
    "cluster/latency_neg.yaml": "nodes: [{preset: dgx-h100, intra_link: {name: x, bandwidth_bytes_per_s: 1 GB/s, "
                                "latency_s: -1}}]\n",
    "cluster/tier_neg.yaml": "nodes: [{preset: dgx-h100, tiers: [{name: nvme, capacity_bytes: -1, bandwidth_bytes_per_s: 1}]}]\n",
    "cluster/no_nodes.yaml": "name: x\n",
    "cluster/nodes_empty.yaml": "nodes: []\n",
    "cluster/python_tag.yaml": f"!!python/object/apply:os.system ['{PWN}']\n",
    "cluster/python_tag_node.yaml": f"nodes: [!!python/object/apply:os.system ['{PWN}']]\n",
    "cluster/anchors.yaml": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                            "nodes: [*d]\n",
    "cluster/garbage.yaml": "nodes: [{{{\n",
    "cluster/unknown_key.yaml": "nodes: [{preset: dgx-h100, colour: red}]\n",
    "cluster/device_path.yaml": "nodes: [{device: ../../../../etc/passwd.yaml}]\n",
    "trace/inf.csv": "num_prefill_tokens,num_decode_tokens\n100,inf\n200,20\n",
    "trace/nan.csv": "num_prefill_tokens,num_decode_tokens\nnan,5\n",
    "trace/negative.csv": "num_prefill_tokens,num_decode_tokens\n-100,5\n",
    "trace/huge.csv": "num_prefill_tokens,num_decode_tokens\n1e30,5\n",
    "trace/empty.csv": "",
    "trace/header_only.csv": "num_prefill_tokens,num_decode_tokens\n",
    "trace/no_columns.csv": "a,b\n1,2\n",
    "trace/words.csv": "num_prefill_tokens,num_decode_tokens\nmany,few\n",
    "trace/arrival_nan.csv": "arrived_at,num_prefill_tokens,num_decode_tokens\nnan,100,5\n",
    "trace/arrival_neg.csv": "arrived_at,num_prefill_tokens,num_decode_tokens\n-1,100,5\n",
    "trace/long_line.csv": "num_prefill_tokens,num_decode_tokens\n" + "9" * 100_000 + ",5\n",
    "trace/command.csv": f"num_prefill_tokens,num_decode_tokens\n$({PWN}),5\n",
    "engine/garbage.yaml": "engine: [\n",
    "engine/python_tag.yaml": f"!!python/object/apply:os.system ['{PWN}']\n",
    "buffers/neg.csv": "id,lower,upper,size\na,0,2,-4\n",
    "buffers/words.csv": "id,lower,upper,size\na,zero,2,4\n",
    "buffers/reversed.csv": "id,lower,upper,size\na,5,2,4\n",
    "buffers/huge.csv": "id,lower,upper,size\na,0,2,99999999999999999999999\n",
    "buffers/empty.csv": "",
    "outdir/.keep": "",
    "a_file": "not a folder",
}


PLAN_DECODE = ["plan", "tiny-llama", "--cluster", "2xcpu", "--workload", "decode", "--input-len", "64"]


def _model_cases() -> list[tuple[str, list[str], str | None]]:
    """Model references and config files: (name, argv with {root} for the scratch folder, reason or None)."""
    cases = []
    models = ["", " ", f"{CANARY}:make", f"{CANARY}.sub:make", "os:system", "sys:exit", "subprocess:run",
              "builtins:eval", "importlib:import_module", f"{CANARY}", "../../etc/passwd", "/dev/zero", "/dev/null",
              "/etc", "/proc/self/mem", "x" * 5000, f"m$({PWN})", f"`{PWN}`", f"x;{PWN}", "__import__('os')",
              "{{7*7}}", "%s%s%n", "💥", "llama-3-70b", "gpt-3", "mixtral", "qwen3-moe", "-", "tiny-llama:", ":make",
              "{root}/cfg/empty_folder", "{root}/cfg/missing.json", "{root}/a_file"]
    for i, model in enumerate(models):
        cases.append((f"inspect model {i}", ["inspect", model], None))
    for i, model in enumerate(models[:12]):
        cases.append((f"estimate model {i}", ["estimate", model, "--cluster", "2xcpu"], None))
        cases.append((f"plan model {i}", ["plan", model, "--cluster", "2xcpu", "--workload", "decode"], None))
    named = {"only_type/config.json": "missing hidden_size", "no_hidden.json": "missing hidden_size",
             "layers0.json": "num_hidden_layers must be a positive integer, got 0",
             "layers_neg.json": "num_hidden_layers must be a positive integer, got -3",
             "layers_100k.json": "num_hidden_layers 100,000 is above", "heads0.json": "num_attention_heads",
             "activation.json": "unknown activation", "vocab0.json": "vocab_size must be a positive integer, got 0",
             "vocab_neg.json": "vocab_size must be a positive integer", "nan.json": "rms_norm_eps is nan"}
    configs = sorted(k.split("/", 1)[1] for k in FILES if k.startswith("cfg/") and not k.endswith(".keep"))
    for name in configs:
        cases.append((f"config {name}", ["inspect", f"{{root}}/cfg/{name}"], named.get(name)))
        cases.append((f"plan config {name}", ["plan", f"{{root}}/cfg/{name}", "--cluster", "2xcpu", "--workload",
                                               "decode", "--input-len", "64", "-o", "{root}/out.json"], named.get(name)))
    return cases


def _cluster_cases() -> list[tuple[str, list[str], str | None]]:
    cases = []
    clusters = ["", "0xH100-SXM", "-1xH100-SXM", "99999999999999999999xH100-SXM", "65537xH100-SXM",
                "9" * 5000 + "xL4", "1x", "x", "2x9xH100-SXM", "nosuchgpu", "4xcpu+", "+", "8xH100-SXM,", ",",
                "H100-SXM,H100-SXM", "0xL4,H100-SXM", f"$({PWN})", "../../etc/passwd.yaml", "/dev/zero",
                f"{CANARY}:make", "8192x8xH100-SXM+1xL4"]
    clusters += [f"{{root}}/cluster/{k.split('/', 1)[1]}" for k in FILES if k.startswith("cluster/")]
    for i, cluster in enumerate(clusters):
        cases.append((f"cluster {i}: {cluster[-30:]}", ["estimate", "tiny-llama", "--cluster", cluster], None))
    for name, reason in (("zero_flops.yaml", "peak_flops.bf16 must be above zero"), ("nan_flops.yaml", "nan"),
                         ("neg_bandwidth.yaml", "memory_bandwidth_bytes_per_s"), ("count0.yaml", "count")):
        cases.append((f"cluster reason {name}", ["estimate", "tiny-llama", "--cluster", f"{{root}}/cluster/{name}"],
                      reason))
    cases.append(("cluster 10^20 devices", ["estimate", "tiny-llama", "--cluster", "99999999999999999999xH100-SXM"],
                  "65,536"))
    return cases


def _plan_flag_cases() -> list[tuple[str, list[str], str | None]]:
    cases = []
    base = PLAN_DECODE
    numbers = [("--batch", ["0", "-1", "1000000000000", "1e3", "nan", "", "0x10", "65537"]),
               ("--seq-len", ["0", "33554432", "-5"]), ("--input-len", ["0", "-64", "99999999999999999999"]),
               ("--output-len", ["0", "-1", "nan"]), ("--rate", ["0", "-1", "nan", "inf", "1e309", "1/0", "1e9"]),
               ("--tp", ["0", "1000000", "-2"]), ("--pp", ["0", "x"]), ("--dp", ["-2", "65537"]), ("--ep", ["0"]),
               ("--virtual-stages", ["0", "1000"]),
               ("--slo", ["ttft=inf", "ttft=nan", "ttft=-1", "ttft=0", "tpot=1e400", "speed=1", "ttft=", "=,=",
                          "ttft=1e7"]),
               ("--dtype", ["int3"]), ("--objective", ["fastest"]), ("--schedule", ["zigzag"]),
               ("--workload", ["banana", "", f"$({PWN})", "{root}/cfg/nan.json"]),
               ("--engine-profile", ["no-such-engine", f"{CANARY}:make", "{root}/engine/garbage.yaml",
                                     "{root}/engine/python_tag.yaml", "/dev/zero", "colocated="]),
               ("--warm-start", ["{root}/cfg/nan.json", "/dev/null", "{root}/missing.json"])]
    for flag, values in numbers:
        for value in values:
            cases.append((f"plan {flag} {value[:20]!r}", [*base, flag, value], None))
    issue = {("--batch", "1000000000000"): "1000000000000 is not between 1 and 65,536",
             ("--output-len", "0"): "0 is not between 1", ("--slo", "ttft=inf"): "--slo ttft must be a positive finite"}
    for (flag, value), reason in issue.items():
        cases.append((f"issue {flag} {value}", [*base, flag, value], reason))
    return cases


def _other_cases() -> list[tuple[str, list[str], str | None]]:
    cases = []
    estimate = ["estimate", "tiny-llama", "--cluster", "2xcpu"]
    for flag, value in (("--qps", "nan"), ("--qps", "-3"), ("--microbatch-size", "0"), ("--zero-stage", "7"),
                        ("--batch", "99999999"), ("--input-len", "0"), ("--tp", "3"), ("--phase", "serve"),
                        ("--weight-dtype", "int1"), ("--recompute", "sometimes")):
        cases.append((f"estimate {flag} {value}", [*estimate, flag, value], None))
    for flag, value in (("--batch", "0"), ("--seq-len", "-1"), ("--context-len", "0"), ("--phase", "serve")):
        cases.append((f"inspect {flag} {value}", ["inspect", "tiny-llama", flag, value], None))
    whatif = ["whatif", "tiny-llama", "--cluster", "2xcpu", "--workload", "decode", "--mode", "estimate"]
    for vary in ("rate=nan", "rate=inf", "batch=0", "batch=1e3", "tp=-1", "foo=1", "batch=", "ttft=-1",
                 "batch=99999999", "input_len=" + ",".join(str(i) for i in range(1, 2000))):
        cases.append((f"whatif --vary {vary[:20]}", [*whatif, "--vary", vary], None))
    cases.append(("issue whatif rate=nan", [*whatif, "--vary", "rate=nan"], "give positive values"))
    for flag, value in (("--jobs", "0"), ("--jobs", "1000"), ("--csv", ""), ("--csv", "{root}/outdir"),
                        ("--plot", "{root}/nope/x.png"), ("--cluster", "99999999999999999999xL4")):
        cases.append((f"whatif {flag} {value}", [*whatif, flag, value], None))
    for i, path in enumerate(["", "{root}/nope/p.json", "{root}/outdir", "{root}/link.json", "/dev/null",
                              "/sys/never.json", "{root}/a_file/p.json"]):
        cases.append((f"plan -o {i}", [*PLAN_DECODE, "-o", path], "" if i == 0 else None))
    cases.append(("issue -o ''", [*PLAN_DECODE, "-o", ""], "-o names no file"))
    cases.append(("issue report /sys", ["plan", "tiny-llama", "--cluster", "2xcpu", "--workload", "train", "--batch",
                                        "8", "--seq-len", "32", "-o", "{root}/p_report.json", "--report", "/sys/rep"],
                  "report"))
    for i, name in enumerate(["", "../../etc/passwd", f"$({PWN})", "x" * 4000, "h100\\", "cpu:0"]):
        cases.append((f"hardware show {i}", ["hardware", "show", name], None))
    for name in ("neg.csv", "words.csv", "reversed.csv", "huge.csv", "empty.csv"):
        cases.append((f"memory pack {name}", ["memory", "pack", f"{{root}}/buffers/{name}"], None))
    for flag, value in (("--capacity", "0"), ("--time-limit", "nan"), ("--time-limit", "-1"), ("--seed", "-1"),
                        ("-o", "{root}/outdir")):
        cases.append((f"memory pack {flag} {value}", ["memory", "pack", "{root}/buffers/neg.csv", flag, value], None))
    return cases




def _cases() -> list[tuple[str, list[str], str | None]]:
    """(name, argv with {root} for the scratch folder, the reason that must be named or None)."""
    return _model_cases() + _cluster_cases() + _plan_flag_cases() + _other_cases()


CASES = _cases()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    for name, text in FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
    (folder / "link.json").symlink_to(folder / "a_file")
    return folder


@pytest.fixture(autouse=True)
def scratch(root, monkeypatch):
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))  # a canary that would run if anything imported what a value names
    yield root


def _unharmed(root: Path) -> None:
    assert not (root / MARK).exists(), "the canary module was imported"
    assert not list(root.rglob("PWNED")) and not Path("PWNED").exists(), "an injected command ran"


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_canary_would_sing(root, capsys):
    """The canary works: with --trust-model-code the named factory is imported (so the other tests can fail)."""
    (root / MARK).unlink(missing_ok=True)
    run_cli(["inspect", f"{CANARY}:make", "--trust-model-code"], capsys)
    assert (root / MARK).exists()
    (root / MARK).unlink()


@pytest.mark.parametrize("name, argv, reason", CASES, ids=[c[0] for c in CASES])
def test_hostile_input(name, argv, reason, root, capsys):
    argv = [a.replace("{root}", str(root)) for a in argv]
    for written in ("out.json", "p_report.json"):
        (root / written).unlink(missing_ok=True)
    code, out, err = run_cli(argv, capsys)
    assert "Traceback" not in out + err, (name, err[-2000:])
    assert code in (0, 2), (name, code, err[-500:])
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err[-1000:])
    if reason is not None:
        assert code == 2 and reason in err, (name, reason, err)
    _unharmed(root)
    if code != 0:  # nothing half-written
        assert not (root / "out.json").exists() and not (root / "p_report.json").exists(), name


def test_enough_hostile_inputs():
    assert len(CASES) >= 200, len(CASES)
    assert len({c[0] for c in CASES}) == len(CASES)


def test_symlink_output_is_refused_and_left_alone(root, capsys):
    link = root / "link.json"
    code, _, err = run_cli(["plan", "tiny-llama", "--cluster", "2xcpu", "--workload", "decode", "--input-len", "64",
                            "-o", str(link)], capsys)
    assert code == 2 and "symbolic link" in err and link.is_symlink() and (root / "a_file").read_text() == "not a folder"


def _plan_file(root: Path, capsys) -> dict:
    path = root / "base.json"
    if not path.exists():
        assert run_cli(["plan", "tiny-llama", "--cluster", "2xcpu", "--workload", "train", "--batch", "8",
                        "--seq-len", "32", "-o", str(path)], capsys)[0] == 0
    return json.loads(path.read_text())


PLAN_EDITS = {  # name: (path into the plan, value)
    "model as canary code": (("inputs", "model_source"), {"kind": "module", "ref": f"{CANARY}:make",
                             "name": f"{CANARY}:make", "config_class": None, "architecture": None, "values": None,
                             "sha256": None, "hub_id": None, "summary": {}}),
    "config class os": (("inputs", "model_source", "config_class"), "os"),
    "config class pipeline": (("inputs", "model_source", "config_class"), "pipeline"),
    "config class canary": (("inputs", "model_source", "config_class"), CANARY),
    "architecture canary": (("inputs", "model_source", "architecture"), CANARY),
    "layers 100k": (("inputs", "model_source", "values", "num_hidden_layers"), 100_000),
    "values dropped": (("inputs", "model_source", "values"), None),
    "model with command": (("inputs", "model"), f"m$({PWN})"),
    "version with newline": (("inputs", "planner_version"), f"0.1.0\n{PWN}\n"),
    "cluster command": (("inputs", "cluster"), f"$({PWN})"),
    "workload command": (("inputs", "workload", "kind"), f"$({PWN}).csv"),
    "batch 10^12": (("inputs", "workload", "batch"), 10**12),
    "microbatches 10^12": (("decision", "microbatches"), 10**12),
    "batch and microbatch size 10^12": (("inputs", "workload"), {"kind": "train", "batch": 10**12, "seq_len": 32}),
    "rate 1e300": (("inputs", "workload"), {"kind": "train", "batch": 8, "seq_len": 32, "rate": 1e300}),
    "stage tp huge": (("decision", "stages", 0, "tp"), 10**9),
    "rank huge": (("decision", "stages", 0, "ranks", 0, 0), 2**62),
    "stages many": (("decision", "stages"), [{"stage": i} for i in range(10_000)]),
    "predicted nan": (("predicted", "step_time_s"), "NaN"),
    "predicted string": (("predicted", "step_time_s"), "fast"),
    "fingerprint command": (("fingerprint",), f"$({PWN})"),
    "format": (("format",), "aot-planner.plan/1"),
    "kind": (("decision", "kind"), "exploit"),
    "extra key": (("__class__",), "x"),
}


@pytest.mark.parametrize("edit", sorted(PLAN_EDITS))
def test_hostile_plan_files(edit, root, capsys):
    plan = _plan_file(root, capsys)
    keys, value = PLAN_EDITS[edit]
    node = plan
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    path = root / "hostile_plan.json"
    path.write_text(json.dumps(plan) if edit != "predicted nan" else json.dumps(plan).replace('"NaN"', "NaN"))
    for argv in (["verify", str(path)], ["explain", str(path)], ["diff", str(path), str(root / "base.json")],
                 ["codegen", str(path), "-o", str(root / "gen_refused")]):
        code, out, err = run_cli(argv, capsys)
        assert "Traceback" not in out + err and code in (0, 2), (edit, argv[0], code, err[-500:])
        if code == 2:
            assert len(err.strip().splitlines()) == 1, (edit, argv[0], err)
        _unharmed(root)
    assert not (root / "gen_refused").exists(), f"{edit}: codegen wrote files for a plan that does not verify"


def test_plan_files_that_are_not_plans(root, capsys):
    bad = {"not json": "{", "list": "[]", "empty": "", "nan": '{"format": NaN}', "deep": "[" * 100_000,
           "huge number": '{"format": 1e999}', "binary": "\udcff\udcfe", "null": "null"}
    for name, text in bad.items():
        path = root / f"bad_{len(name)}.json"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        for command in ("verify", "explain", "codegen"):
            argv = [command, str(path)] + (["-o", str(root / "gen_bad")] if command == "codegen" else [])
            code, _, err = run_cli(argv, capsys)
            assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, command, err)
    for argv in (["verify", str(root)], ["verify", "/dev/null"], ["explain", "/nonexistent.json"]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (root / "gen_bad").exists()
    _unharmed(root)


def test_written_files_keep_the_umask(root, capsys):
    old = os.umask(0o027)
    try:
        path = root / "umask.json"
        assert run_cli(["plan", "tiny-llama", "--cluster", "2xcpu", "--workload", "decode", "--input-len", "64", "-o",
                        str(path)], capsys)[0] == 0
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    assert not list(root.glob(".umask.json.*"))
