"""Property-based hardening: malformed CLI arguments, cluster YAML, workload traces and plan files
never produce a traceback; bad input exits 2 with one line and writes nothing."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli import main

FAST = settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
names = st.text(alphabet=string.ascii_letters + string.digits + "-_.:/ x", min_size=1, max_size=24)


def _one_line_exit_2(capsys, argv) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code != 0:
        assert code == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)


@FAST
@given(model=names, cluster=names)
def test_estimate_with_garbage_model_and_cluster(model, cluster, capsys):
    _one_line_exit_2(capsys, ["estimate", "x" + model.replace(":", ""), "--cluster", cluster])


@FAST
@given(cluster=names, tp=st.integers(-4, 100), batch=st.integers(-5, 10))
def test_estimate_with_garbage_numbers(cluster, tp, batch, capsys):
    spec = "2xcpu" if cluster[:1] in "abcdefghij" else "zz" + cluster
    _one_line_exit_2(capsys, ["estimate", "tiny-llama", "--cluster", spec, "--tp", str(tp), "--batch", str(batch)])


@FAST
@given(text=st.text(max_size=200))
def test_cluster_yaml_garbage(text, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_text(text)
    _one_line_exit_2(capsys, ["estimate", "tiny-llama", "--cluster", str(path)])


@FAST
@given(rows=st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=6))
def test_trace_garbage(rows, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("trace") / "t.csv"
    body = "num_prefill_tokens,num_decode_tokens\n" + "".join(f"{a.replace(',', '')},{b.replace(',', '')}\n" for a, b in rows)
    path.write_text(body)
    _one_line_exit_2(capsys, ["plan", "tiny-llama", "--cluster", "2xcpu", "--workload", str(path)])


@pytest.fixture(scope="module")
def valid_plan(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("plan") / "p.json"
    assert main(["plan", "tiny-llama", "--cluster", "2xcpu", "--workload", "train", "--batch", "8", "--seq-len", "32",
                 "--pp", "2", "-o", str(path)]) == 0
    return json.loads(path.read_text())


def _mutate(plan: dict, path: list, value):
    node = plan
    for key in path[:-1]:
        node = node[key] if isinstance(node, dict) else node[int(key) % max(len(node), 1)]
    if isinstance(node, dict):
        node[path[-1]] = value
    elif node:
        node[int(path[-1]) % len(node)] = value


json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 300) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=5)
paths = st.sampled_from([["decision", "dp"], ["decision", "pp"], ["decision", "stages"], ["decision", "stages", "0", "layers"],
                         ["decision", "stages", "0", "ranks"], ["decision", "stages", "1", "tp"], ["decision", "kind"],
                         ["inputs", "model"], ["inputs", "cluster"], ["inputs", "workload"], ["predicted"],
                         ["predicted", "step_time_s"], ["decision", "microbatches"], ["inputs", "dtype"], ["decision"]])


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=paths, value=json_values)
def test_plan_file_garbage(valid_plan, path, value, tmp_path_factory, capsys):
    bad = json.loads(json.dumps(valid_plan))
    _mutate(bad, path, value)
    file = tmp_path_factory.mktemp("bad") / "bad.json"
    file.write_text(json.dumps(bad))
    for command in ("verify", "explain"):
        code = main([command, str(file)])
        err = capsys.readouterr().err
        assert "Traceback" not in err and code in (0, 1, 2), (command, path, value, err)
        if code == 2:
            assert len(err.strip().splitlines()) == 1


def test_failed_plan_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never.json"
    assert main(["plan", "llama-3.1-405b", "--cluster", "8xL4", "--workload", "train", "-o", str(out)]) == 2
    assert not out.exists() and not list(tmp_path.iterdir())


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=160) | st.sampled_from(["engine: x\nmodels: 3\n", "models: {tiny-llama: {1: {}}}\n",
                                                     "engine: e\ndevice: cpu\nsource: s\nmodels: {tiny-llama: []}\n"]))
def test_engine_profile_garbage(text, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("engine") / "e.yaml"
    path.write_text(text)
    _one_line_exit_2(capsys, ["plan", "tiny-llama", "--cluster", "1xA100-SXM-80GB", "--engine-profile", str(path)])
