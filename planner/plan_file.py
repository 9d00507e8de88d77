"""The Plan: a versioned JSON document of decisions, predictions, solver facts and explanations.

Byte-identical for identical inputs: keys are sorted, floats are written by Python's shortest
round-trip repr, and nothing time- or machine-dependent (wall-clock, paths of temp files) goes in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ir.errors import UserError
from ir.fileio import write_atomic

PLAN_FORMAT = "aot-planner.plan/1"


def fingerprint(inputs: dict) -> str:
    """Hash of the plan's inputs (model, cluster, workload, objective, fixed options, version)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


class Plan:
    """A plan document with helpers: `save`, `explain`, `verify`, `to_dict`.

    >>> p = Plan({"format": PLAN_FORMAT, "inputs": {}, "decision": {}, "predicted": {}})
    >>> p.to_json().startswith("{")
    True
    """

    def __init__(self, data: dict, search_time_s: float | None = None):
        self.data = data
        self.search_time_s = search_time_s  # not part of the file (it is not deterministic)

    def to_dict(self) -> dict:
        return self.data

    def to_json(self) -> str:
        return json.dumps(self.data, sort_keys=True, indent=1, allow_nan=False) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the plan atomically."""
        return write_atomic(path, self.to_json())

    @property
    def predicted(self) -> dict:
        return self.data["predicted"]

    @property
    def decision(self) -> dict:
        return self.data["decision"]

    def explain(self) -> str:
        from planner.explain import explain_plan

        return explain_plan(self.data)

    def apply(self, module, mesh=None, train: bool = True):
        """Parallelise `module` by this plan inside a torchrun worker (see `codegen.apply.apply_plan`)."""
        from codegen.apply import apply_plan

        return apply_plan(self, module, mesh, train)

    def retarget(self, **changes) -> Plan:
        """Re-plan for changed inputs (batch, seq_len, input_len, output_len, rate, slo, cluster, objective,
        dtype, tp/pp/dp/ep) with this plan as the warm start: its layout is evaluated first, so the search
        prunes from the start. Inputs not named keep this plan's values.

        >>> p = Plan({"format": PLAN_FORMAT, "inputs": {"model": "m", "workload": {"kind": "train"}}, "decision": {},
        ...           "predicted": {}})
        >>> p.retarget(colour=1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ir.errors.UserError: retarget takes batch, cluster, ... tp; not colour
        """
        from planner.planning import plan

        inputs = self.data["inputs"]
        workload = dict(inputs.get("workload") or {})
        known = {"batch", "seq_len", "input_len", "output_len", "rate", "slo", "cluster", "objective", "dtype",
                 "tp", "pp", "dp", "ep"}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UserError(f"retarget takes {', '.join(sorted(known))}; not {', '.join(unknown)}")
        args = {k: workload.get(k) for k in ("batch", "seq_len", "input_len", "output_len", "rate")}
        source = (self.data["decision"].get("serving") or {}).get("workload", "")
        if source and not source.startswith("fixed:"):  # lengths came from the named workload, not the user
            args.update(input_len=None, output_len=None)
        args.update(inputs.get("fixed") or {})
        args.update(objective=inputs.get("objective"), slo=inputs.get("slo") or None, dtype=inputs.get("dtype", "bf16"))
        if inputs.get("engine_profile"):
            args["engine_profile"] = inputs["engine_profile"]
        args.update(changes)
        cluster = args.pop("cluster", inputs.get("cluster"))
        return plan(inputs["model"], cluster, workload.get("kind", "chat"), warm_start=self, **args)

    def verify(self) -> list[str]:
        """Problems an independent recomputation finds (empty: the plan holds)."""
        from planner.verify import verify_plan

        return verify_plan(self.data)


def load_plan(path: str | Path) -> Plan:
    """Read a plan file; a file of another format version is a UserError naming the way out."""
    file = Path(path)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise UserError(f"plan file not found: {file}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: not a JSON plan ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{file}: plan format {found!r} is not {PLAN_FORMAT!r} (written by another planner "
                        f"version); re-run `planner plan` to regenerate it")
    for key in ("inputs", "decision", "predicted"):
        if not isinstance(data.get(key), dict):
            raise UserError(f"{file}: plan has no '{key}' section; re-run `planner plan`")
    return Plan(data)
