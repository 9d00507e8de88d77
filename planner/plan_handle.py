"""What `planner.plan` returns and `planner.load_plan` reads: a typed Plan (`ir.plan.Plan`, `.plan`) with
the planner's operations on it: `explain`, `verify`, `save`, `retarget`, `apply`, `to_dict`.

>>> import planner
>>> p = planner.plan("tiny-llama", "4xcpu", "train", batch=8, seq_len=64)
>>> p.decision.dp * p.decision.pp * p.decision.tp, p.verify()
(4, [])
"""

from __future__ import annotations

from pathlib import Path

from cost_models.pipeline_schedule import SCHEDULES
from ir.errors import UserError
from ir.plan import Plan
from ir.plan import load_plan as read_plan_file
from ir.records import present, to_json
from planner import pipeline
from planner.explain import explain_plan
from planner.input_bounds import check_counts, check_numbers, check_slo
from planner.verify import verify_plan

RETARGET_KEYS = ("batch", "cluster", "dp", "dtype", "ep", "input_len", "objective", "output_len", "pp", "rate",
                 "seq_len", "slo", "tp", "trust_model_code")


class PlanHandle:
    """A plan and the planner's operations on it (see the module docstring)."""

    def __init__(self, plan: Plan, search_time_s: float | None = None):
        self.plan = plan
        self.search_time_s = search_time_s  # not part of the file (it is not deterministic)

    @classmethod
    def from_json(cls, data: dict) -> PlanHandle:
        """A handle on a plan's JSON form (checked against the schema, `ir.plan`)."""
        return cls(Plan.from_json(data))

    @property
    def decision(self):
        return self.plan.decision

    @property
    def predicted(self):
        return self.plan.predicted

    @property
    def solver(self):
        return self.plan.solver

    @property
    def inputs(self):
        return self.plan.inputs

    @property
    def data(self) -> dict:
        """The plan's JSON form (what the file holds)."""
        return self.plan.to_json()

    def to_dict(self) -> dict:
        return self.plan.to_json()

    def to_json(self) -> str:
        return self.plan.to_text()

    def save(self, path: str | Path) -> Path:
        """Write the plan file atomically."""
        return self.plan.save(path)

    def explain(self) -> str:
        return explain_plan(self.plan)

    def verify(self, trust_model_code: bool = False) -> list[str]:
        """Problems an independent recomputation finds (empty: the plan holds); a model recorded as Python code
        is rebuilt only with `trust_model_code`."""
        return verify_plan(self.plan, trust_model_code=trust_model_code)

    def apply(self, module, mesh=None, train: bool = True):
        """Parallelise `module` by this plan inside a torchrun worker (see `codegen.apply.apply_plan`)."""
        from codegen.apply import apply_plan  # imports torch, which planning itself never needs

        return apply_plan(self.plan.to_json(), module, mesh, train)

    def retarget(self, **changes) -> PlanHandle:
        """Re-plan for changed inputs (batch, seq_len, input_len, output_len, rate, slo, cluster, objective,
        dtype, tp/pp/dp/ep) with this plan as the warm start: its layout is evaluated first, so the search
        prunes from the start. Inputs not named keep this plan's values.

        >>> import planner
        >>> planner.plan("tiny-llama", "2xcpu", "train", batch=4, seq_len=16).retarget(colour=1)
        Traceback (most recent call last):
        ir.errors.UserError: retarget takes batch, cluster, ... trust_model_code; not colour
        """
        unknown = sorted(set(changes) - set(RETARGET_KEYS))
        if unknown:
            raise UserError(f"retarget takes {', '.join(RETARGET_KEYS)}; not {', '.join(unknown)}")
        inputs, workload = self.plan.inputs, self.plan.inputs.workload
        args = {k: getattr(workload, k) for k in ("batch", "seq_len", "input_len", "output_len", "rate")}
        args = {k: (v if present(v) else None) for k, v in args.items()}
        serving = getattr(self.plan.decision, "serving", None)
        source = getattr(serving, "workload", "") if present(serving) and serving is not None else ""
        if source and not source.startswith("fixed:"):  # lengths came from the named workload, not the user
            args.update(input_len=None, output_len=None)
        fixed = inputs.fixed.to_json() if present(inputs.fixed) else {}
        args.update(fixed)
        args.update(objective=inputs.objective, slo=inputs.slo.to_json() if present(inputs.slo) else None,
                    dtype=inputs.dtype)
        if present(inputs.engine_profile):
            args["engine_profile"] = inputs.engine_profile
        args.update(changes)
        cluster = args.pop("cluster", inputs.cluster)
        return plan(inputs.model, cluster, workload.kind, warm_start=self, model_source=to_json(inputs.model_source),
                    **args)


def load_plan(path: str | Path) -> PlanHandle:
    """Read and check a plan file (one line naming the first bad value, and the way out, when it is not one)."""
    return PlanHandle(read_plan_file(path))


def plan(model, cluster=None, workload: str = "chat", *, objective: str | None = None, batch: int | None = None,
         seq_len: int | None = None, rate: float | None = None, slo: dict | None = None, tp: int | None = None,
         pp: int | None = None, dp: int | None = None, ep: int | None = None, dtype: str = "bf16",
         input_len: int | None = None, output_len: int | None = None, warm_start=None, schedule: str | None = None,
         virtual_stages: int | None = None, sequence_parallel: bool | None = None,
         engine_profile: str | None = None, trust_model_code: bool = False,
         model_source: dict | None = None) -> PlanHandle:
    """Plan `model` on `cluster` for `workload` (train, prefill, decode, chat, summarize, code, a trace .csv);
    a comma-separated `cluster` is a list of GPU types to buy a serving fleet from (`planner.pipeline`).

    `warm_start`: a previous plan (PlanHandle or Plan) whose layout the search evaluates first (`retarget`).
    `trust_model_code`: allow `model` to be Python code (pkg.module:factory), which is imported and run.
    `model_source`: rebuild the model from this record (a plan's `inputs.model_source`) instead of `model`.
    `engine_profile`: serving only, a measured engine profile (name or YAML, `cost_models.serving.engine_profile`)
    that prices every iteration instead of the cost model, e.g. "vllm-0.2-a100-80gb"; or one per kind of
    deployment, "colocated=vllm-0.2-a100-80gb,disaggregated=distserve-a100-80gb" (a kind left out: the cost model).
    """
    # sizes, counts, rates and the SLO within bounds before any work (planner.input_bounds)
    check_counts(batch=batch, seq_len=seq_len, input_len=input_len, output_len=output_len, tp=tp, pp=pp, dp=dp, ep=ep,
                 virtual_stages=virtual_stages)
    check_numbers(rate=rate)
    check_slo(slo)
    fixed = {k: v for k, v in (("tp", tp), ("pp", pp), ("dp", dp), ("ep", ep)) if v is not None}
    if workload == "train":
        fixed.update(_fixed_pipeline(schedule, virtual_stages, sequence_parallel))
    warm = warm_start.plan if isinstance(warm_start, PlanHandle) else warm_start
    request = pipeline.request_of(model, cluster, workload, objective=objective, dtype=dtype, slo=slo or {},
                                  fixed=fixed, batch=batch, seq_len=seq_len, input_len=input_len,
                                  output_len=output_len, rate=rate, engine_profile=engine_profile, warm=warm,
                                  trust_model_code=trust_model_code, model_source=model_source)
    result, seconds = pipeline.run(request)
    return PlanHandle(result, seconds)


def _fixed_pipeline(schedule: str | None, virtual_stages: int | None, sequence_parallel: bool | None) -> dict:
    """Pinned pipeline schedule, virtual stages and sequence parallelism (training), checked."""
    if schedule is not None and schedule not in SCHEDULES:
        raise UserError(f"unknown pipeline schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    if virtual_stages is not None and (not isinstance(virtual_stages, int) or virtual_stages < 1):
        raise UserError(f"--virtual-stages must be a positive integer, got {virtual_stages!r}")
    if virtual_stages not in (None, 1) and schedule not in (None, "interleaved"):
        raise UserError(f"virtual stages ({virtual_stages}) need the interleaved schedule, not {schedule}")
    fixed = {"schedule": "interleaved" if virtual_stages not in (None, 1) else schedule,
             "virtual_stages": virtual_stages, "sequence_parallel": sequence_parallel}
    return {k: v for k, v in fixed.items() if v is not None}
