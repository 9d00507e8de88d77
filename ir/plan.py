"""The Plan: a typed, frozen, versioned document of a plan's inputs, decision, predictions, solver
report and explanations, with its JSON round trip, fingerprint and file I/O.

A plan file is data: reading one checks every value against the schema (`ir.plan_decisions`,
`ir.plan_results`) and names the first one that does not fit; nothing in it is imported or run.
The same inputs give byte-identical files: keys sorted, floats in Python's shortest round-trip repr,
nothing time- or machine-dependent inside. A file read and written again is byte for byte the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ir.errors import UserError
from ir.fileio import write_atomic
from ir.plan_decisions import Decision, FleetDecision, InferenceDecision, Slo, TrainDecision
from ir.plan_results import (
    Alternative,
    Baseline,
    FleetPredictions,
    FleetProfile,
    InferencePredictions,
    MemoryMap,
    Predictions,
    SolverReport,
    TrainPredictions,
)
from ir.records import ABSENT, Absent, JsonValue, Record, convert

PLAN_FORMAT = "aot-planner.plan/2"  # 2: inputs record how to rebuild the model (`ModelSource`)
PLANNER_VERSION = "0.1.0"
MAX_PLAN_BYTES = 256 * 2**20  # input bound on reading a plan file (plans are kilobytes to a few megabytes)
Dtype = Literal["bf16", "fp16", "fp8", "fp32"]


@dataclass(frozen=True)
class WorkloadSpec(Record):
    """The workload as planned: its kind (train, prefill, decode, chat, summarize, code or a trace .csv)
    and the shape and rate the plan used."""

    kind: str
    batch: int | Absent = ABSENT
    seq_len: int | Absent = ABSENT
    input_len: int | Absent = ABSENT
    output_len: int | Absent = ABSENT
    rate: float | Absent | None = ABSENT


@dataclass(frozen=True)
class FixedOptions(Record):
    """Degrees and options the user pinned; the rest was searched."""

    tp: int | Absent = ABSENT
    pp: int | Absent = ABSENT
    dp: int | Absent = ABSENT
    ep: int | Absent = ABSENT
    schedule: Literal["1f1b", "interleaved", "gpipe"] | Absent = ABSENT
    virtual_stages: int | Absent = ABSENT
    sequence_parallel: bool | Absent = ABSENT


@dataclass(frozen=True)
class ModelSource(Record):
    """How the planned model is rebuilt from the plan alone, so that nothing a plan names is imported or run:

    - preset: a built-in preset, its transformers config class, model class and values as planned;
    - config: a Hugging Face config.json, its values and the sha256 of the file's bytes;
    - module: Python code (`pkg.module:factory`), recorded by name only: rebuilding it runs that code, which
      `planner verify` does only when the user passes --trust-model-code on its command line.
    `summary` holds the numbers later steps read (hidden size, heads, KV heads, layers, vocabulary, experts)."""

    kind: Literal["preset", "config", "module"]
    ref: str
    name: str
    config_class: str | None
    architecture: str | None
    values: Mapping[str, JsonValue] | None
    sha256: str | None
    hub_id: str | None
    summary: Mapping[str, JsonValue]


@dataclass(frozen=True)
class Inputs(Record):
    """What was asked: model reference, cluster, workload, objective, SLO, pinned options, dtype, and
    the planner version and engine profile that answered. The fingerprint hashes exactly this."""

    model: str
    model_source: ModelSource
    cluster: str
    workload: WorkloadSpec
    objective: str
    dtype: Dtype
    planner_version: str
    slo: Slo | Absent = ABSENT
    fixed: FixedOptions | Absent = ABSENT
    engine_profile: str | Absent = ABSENT


_PREDICTIONS = {"train": TrainPredictions, "inference": InferencePredictions, "fleet": FleetPredictions}


@dataclass(frozen=True)
class Plan(Record):
    """A plan document (see the module docstring). `decision.kind` selects the predictions' type."""

    format: str
    inputs: Inputs
    fingerprint: str
    model_name: str
    cluster_description: str
    decision: Decision
    predicted: Predictions
    solver: SolverReport
    binding_constraints: tuple[str, ...]
    alternatives: tuple[Alternative, ...] | Absent = ABSENT
    baselines: Mapping[str, Baseline] | Absent = ABSENT
    memory_map: MemoryMap | Absent = ABSENT
    profile: FleetProfile | Absent = ABSENT

    @classmethod
    def from_json(cls, value, where: str = ""):
        if not isinstance(value, Mapping):
            raise UserError(f"not a plan: expected a JSON object, got {type(value).__name__}")
        if value.get("format") != PLAN_FORMAT:
            raise UserError(f"plan format {value.get('format')!r} is not {PLAN_FORMAT!r} (written by another "
                            f"planner version); re-run `planner plan` to regenerate it")
        decision = convert(Decision, value.get("decision"), "decision")
        predicted = _PREDICTIONS[decision.kind].from_json(value.get("predicted"), "predicted")
        rest = _PlanFields.from_json({k: v for k, v in value.items() if k not in ("decision", "predicted")}, where)
        return cls(decision=decision, predicted=predicted,
                   **{name: getattr(rest, name) for name in _PlanFields.__dataclass_fields__})

    @property
    def kind(self) -> str:
        """train, inference or fleet."""
        return self.decision.kind

    def to_text(self) -> str:
        """The plan file's text: sorted keys, one space of indent, no NaN, a final newline."""
        return json.dumps(self.to_json(), sort_keys=True, indent=1, allow_nan=False) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the plan file atomically."""
        return write_atomic(path, self.to_text())


@dataclass(frozen=True)
class _PlanFields(Record):
    """The plan's fields other than its decision and predictions (read by the generic reader)."""

    format: str
    inputs: Inputs
    fingerprint: str
    model_name: str
    cluster_description: str
    solver: SolverReport
    binding_constraints: tuple[str, ...]
    alternatives: tuple[Alternative, ...] | Absent = ABSENT
    baselines: Mapping[str, Baseline] | Absent = ABSENT
    memory_map: MemoryMap | Absent = ABSENT
    profile: FleetProfile | Absent = ABSENT


def fingerprint(inputs: Inputs | dict) -> str:
    """Hash of the plan's inputs (model, cluster, workload, objective, pinned options, version).

    >>> fingerprint({"model": "m"})
    'deea0f7771b9f0a5'
    """
    data = inputs.to_json() if isinstance(inputs, Record) else inputs
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def plan_from_json(data) -> Plan:
    """A Plan from a JSON value (a dict as read from a plan file); UserError naming the first bad value."""
    return Plan.from_json(data)


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan file; UserError (one line, the way out) when it is not one of this version."""
    file = Path(path)
    if file.exists() and not file.is_dir() and not file.is_file():  # a device or pipe: /dev/zero never ends
        raise UserError(f"{file} is not a regular file; give the plan's .json file")
    try:
        with open(file, "rb") as fh:
            raw = fh.read(MAX_PLAN_BYTES + 1)
        if len(raw) > MAX_PLAN_BYTES:
            raise UserError(f"{file} is over {MAX_PLAN_BYTES // 2**20} MB, which no plan is; give the plan's .json file")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"plan file not found: {file}") from None
    except IsADirectoryError:
        raise UserError(f"{file} is a folder; give the plan's .json file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read plan {file}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise UserError(f"{file}: not a JSON plan ({type(exc).__name__}: {str(exc)[:200]})") from None
    try:
        return Plan.from_json(data)
    except UserError as exc:
        raise UserError(f"{file}: {exc}") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


__all__ = ["PLANNER_VERSION", "PLAN_FORMAT", "Decision", "FleetDecision", "InferenceDecision", "Inputs", "ModelSource",
           "Plan",
           "TrainDecision", "WorkloadSpec", "fingerprint", "load_plan", "plan_from_json"]
