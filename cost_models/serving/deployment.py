"""A serving deployment on a cluster: colocated replicas under one policy, or disaggregated xPyD; runs
the simulator on every instance and merges per-request times.

- Colocated: `replicas` identical instances of tp x pp GPUs; requests are dispatched round-robin in
  arrival order (a stateless load balancer in front of vLLM replicas).
- Disaggregated (DistServe): prefill instances run `PrefillFirst` on requests truncated to one output
  token; request i goes to prefill instance i mod x. Its KV cache then moves to decode instance
  (order of readiness) mod y: transfer time = prompt tokens x KV bytes per token per prefill rank /
  link bandwidth + link latency (every prefill rank sends its own shard in parallel; transfers do not
  contend: DistServe measures them as negligible over NVLink and places phases to keep it so).
  The link is the one between rank 0 and the first decode rank (decode instances are placed after the
  prefill ones). TTFT ends at the prefill instance; decode times include the transfer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cost_models.estimate_context import make_context
from cost_models.parallel_config import Options
from cost_models.serving.engine_profile import ProfiledIterationCost, load_engine_profile
from cost_models.serving.expert_parallel import ExpertParallelCost
from cost_models.serving.iteration_cost import IterationCost
from cost_models.serving.policies import DecodeOnly, Disaggregated, PrefillFirst
from cost_models.serving.simulator import SimResult, simulate_instance
from cost_models.serving.workload import Workload
from ir.errors import UserError


@dataclass(frozen=True)
class Deployment:
    """What runs where: a policy with tp/pp/replicas (colocated) or a `Disaggregated` policy."""

    policy: object
    tp: int = 1
    pp: int = 1
    replicas: int = 1
    ep_dp: int = 1  # > 1: each replica is a wide expert-parallel instance of ep_dp attention groups of tp ranks

    @property
    def gpus(self) -> int:
        if isinstance(self.policy, Disaggregated):
            return self.policy.gpus
        return self.tp * self.pp * self.ep_dp * self.replicas

    def describe(self) -> str:
        if isinstance(self.policy, Disaggregated):
            return self.policy.describe()
        ep = f"dp{self.ep_dp}ep{self.tp * self.ep_dp}" if self.ep_dp > 1 else ""
        return f"{self.replicas}x tp{self.tp}pp{self.pp}{ep} {self.policy.describe()}"


class CostCache:
    """`IterationCost` per (tp, pp) of one graph on one cluster, built once.

    >>> import planner
    >>> from cost_models.cluster import parse_cluster
    >>> costs = CostCache(planner.capture("tiny-llama", seq_len=64), parse_cluster("2xH100-SXM"))
    >>> costs.get(1, 1) is costs.get(1, 1)
    True
    """

    def __init__(self, graph, cluster, dtype: str = "bf16", efficiency=None, engine=None, model: str | None = None):
        """`efficiency` (a `cost_models.efficiency.Efficiency`) replaces the device's default: another
        engine's kernels on the same GPU. `engine` (a `cost_models.serving.engine_profile.EngineProfile`)
        takes iteration times from an engine's measured profile for `model` (its name in the profile)."""
        self.graph, self.cluster, self.dtype, self.efficiency = graph, cluster, dtype, efficiency
        self.engine, self.model = engine, model or graph.model
        self.disaggregated: CostCache | None = None  # another engine for disaggregated deployments (for_policy)
        self._built: dict = {}
        self._bases: dict = {}

    def get(self, tp: int, pp: int, ep_dp: int = 1) -> IterationCost:
        """The instance of tp x pp ranks, or with `ep_dp` > 1 the wide expert-parallel instance of `ep_dp` groups
        of tp ranks (`cost_models.serving.expert_parallel`; pp 1, no engine profile)."""
        if ep_dp > 1:
            return self._expert_parallel(tp, ep_dp)
        key = (tp, pp)
        if key not in self._built:
            cost = self._base(tp, pp)
            if self.engine is not None:
                e = self.engine
                cost = ProfiledIterationCost(cost, e.fit_for(self.model, tp, pp), e.iteration_overhead_ms, e.block_size,
                                             e.request_latency_ms, (e.idle_wakeup_max_ms, e.idle_wakeup_tau_ms))
            self._built[key] = cost
        return self._built[key]

    def _base(self, tp: int, pp: int) -> IterationCost:
        key = (tp, pp)
        if key not in self._bases:
            if tp * pp > self.cluster.num_devices:
                raise UserError(f"tp={tp} x pp={pp} needs {tp * pp} devices; {self.cluster.name} has "
                                f"{self.cluster.num_devices}")
            options = Options(tp=tp, pp=pp, dp=1, input_len=min(self.graph.seq_len, 8192), dtype=self.dtype)
            ctx = make_context(self.graph, self.cluster, options)
            if self.efficiency is not None:
                ctx = replace(ctx, eff=self.efficiency)
            self._bases[key] = IterationCost(ctx)
        return self._bases[key]

    def _expert_parallel(self, tp: int, dp: int) -> ExpertParallelCost:
        key = ("ep", tp, dp)
        if key not in self._bases:
            if self.engine is not None:
                raise UserError("engine profiles hold iteration times of tp x pp instances; wide expert parallelism "
                                "is priced by the cost model (drop --engine-profile)")
            if tp * dp > self.cluster.num_devices:
                raise UserError(f"tp={tp} x {dp} expert-parallel groups need {tp * dp} devices; {self.cluster.name} "
                                f"has {self.cluster.num_devices}")
            options = Options(tp=tp, pp=1, dp=dp, ep=dp, ep_over_dp=True, input_len=min(self.graph.seq_len, 8192),
                              dtype=self.dtype)
            ctx = make_context(self.graph, self.cluster, options)
            if self.efficiency is not None:
                ctx = replace(ctx, eff=self.efficiency)
            self._bases[key] = ExpertParallelCost(IterationCost(ctx), dp)
        return self._bases[key]

    def supports(self, tp: int, pp: int) -> bool:
        """Whether the engine profile (if any) has iteration times for this model at tp x pp."""
        return self.engine is None or self.engine.covers(self.model, tp, pp)

    def for_policy(self, policy) -> CostCache:
        """The costs a deployment of `policy` runs on: `disaggregated` for a `Disaggregated` policy when set (a
        disaggregating engine beside a colocated one, e.g. DistServe beside vLLM), else these."""
        if isinstance(policy, Disaggregated) and self.disaggregated is not None:
            return self.disaggregated
        return self

    def with_engine(self, engine) -> CostCache:
        """The same model and cluster with another engine profile (None: the cost model), sharing the
        cost-model tables already built."""
        other = CostCache(self.graph, self.cluster, self.dtype, self.efficiency, engine, self.model)
        other._bases = self._bases
        return other


ENGINE_KINDS = ("colocated", "disaggregated")


def parse_engine_spec(spec: str | None) -> dict[str, str]:
    """An --engine-profile value -> {deployment kind: profile}: 'NAME' (or a YAML path) for every deployment,
    or 'colocated=NAME,disaggregated=NAME' for one engine per kind (a kind left out uses the cost model).

    >>> parse_engine_spec("colocated=vllm-0.2-a100-80gb,disaggregated=distserve-a100-80gb")["disaggregated"]
    'distserve-a100-80gb'
    """
    if not spec:
        return {}
    parts = [part.strip() for part in spec.split(",")]
    keyed = [part.partition("=") for part in parts]
    is_file = Path(spec).is_file()
    if is_file or not any(sep and key.strip() in ENGINE_KINDS for key, sep, _ in keyed):
        if len(parts) > 1 and not is_file:
            raise UserError(f"--engine-profile {spec!r}: give one profile (a name or a YAML file), or "
                            f"KIND=PROFILE pairs with KIND one of {', '.join(ENGINE_KINDS)}")
        return dict.fromkeys(ENGINE_KINDS, spec)
    out: dict[str, str] = {}
    for part, (key, sep, value) in zip(parts, keyed):
        key, value = key.strip(), value.strip()
        if not sep or key not in ENGINE_KINDS or not value or key in out:
            raise UserError(f"--engine-profile {spec!r}: {part!r} is not KIND=PROFILE with KIND one of "
                            f"{', '.join(ENGINE_KINDS)} (each once); e.g. colocated=vllm-0.2-a100-80gb,"
                            "disaggregated=distserve-a100-80gb, or one profile for both")
        out[key] = value
    return out


def _profiled(graph, cluster, dtype: str, name: str) -> CostCache:
    engine = load_engine_profile(name)
    device = cluster.nodes[0].device.name
    if engine.device != device:
        raise UserError(f"engine profile {name!r} ({engine.engine}) was measured on {engine.device}; "
                        f"the cluster has {device}: give a profile of {device} or drop --engine-profile")
    if graph.model not in engine.fits:
        raise UserError(f"engine profile {name!r} has no {graph.model}; it covers {', '.join(sorted(engine.fits))}")
    return CostCache(graph, cluster, dtype, engine=engine)


def costs_for(graph, cluster, dtype: str, engine_profile: str | None = None) -> CostCache:
    """Iteration costs of `graph` on `cluster`: the cost model's, or measured engine profiles'
    (`cost_models.serving.engine_profile`, see `parse_engine_spec`) when named; a profile must be of this
    device. With one engine per kind, the colocated one's cache carries the other (`CostCache.for_policy`)."""
    spec = parse_engine_spec(engine_profile)
    if not spec:
        return CostCache(graph, cluster, dtype)
    colocated = spec.get("colocated")
    costs = _profiled(graph, cluster, dtype, colocated) if colocated else CostCache(graph, cluster, dtype)
    other = spec.get("disaggregated")
    if other != colocated:
        costs.disaggregated = _profiled(graph, cluster, dtype, other) if other else costs.with_engine(None)
    return costs


def _merge(w: Workload, parts: list[tuple[np.ndarray, SimResult]], gpus: int) -> SimResult:
    first, finish, tbt = np.full(len(w), np.nan), np.full(len(w), np.nan), np.full(len(w), np.nan)
    scheduled = np.full(len(w), np.nan)
    out = SimResult(w, first, finish, gpus, power=parts[0][1].power if parts else {}, max_tbt_s=tbt,
                    scheduled_s=scheduled)
    for index, r in parts:
        first[index], finish[index] = r.first_token_s, r.finish_s
        if r.scheduled_s is not None:  # the first instance to take a request in (prefill before decode)
            scheduled[index] = np.fmin(scheduled[index], r.scheduled_s)
        if r.max_tbt_s is not None:
            tbt[index] = np.fmax(tbt[index], r.max_tbt_s)
        out.busy_s += r.busy_s * r.gpus / gpus  # GPU-weighted, so busy_s x gpus stays GPU-seconds
        out.compute_bound_s += r.compute_bound_s * r.gpus / gpus
        out.iterations += r.iterations
        out.token_iterations += r.token_iterations
        out.preemptions += r.preemptions
        out.rejected += r.rejected
        out.max_kv_blocks = max(out.max_kv_blocks, r.max_kv_blocks)
        out.kv_capacity_blocks = max(out.kv_capacity_blocks, r.kv_capacity_blocks)
        out.expert_bytes += r.expert_bytes * r.gpus  # all ranks
        out.prefill_tokens += r.prefill_tokens
        out.decode_tokens += r.decode_tokens
        out.prefix_hit_tokens += r.prefix_hit_tokens
        out.prompt_tokens_admitted += r.prompt_tokens_admitted
    return out


def _colocated(costs: CostCache, d: Deployment, w: Workload) -> SimResult:
    cost = costs.get(d.tp, d.pp, d.ep_dp)
    parts = []
    for k in range(d.replicas):
        index = np.arange(k, len(w), d.replicas)
        if len(index):
            parts.append((index, simulate_instance(cost, d.policy, w.select(index))))
    return _merge(w, parts, d.gpus)


def _disaggregated(costs: CostCache, d: Deployment, w: Workload) -> SimResult:
    p = d.policy
    costs = costs.for_policy(p)
    pre_cost, dec_cost = costs.get(p.prefill_tp, p.prefill_pp), costs.get(p.decode_tp, p.decode_pp)
    one = replace(w, output_tokens=np.ones(len(w), np.int64))  # prefill instances keep the prefixes
    parts, ready = [], np.full(len(w), np.nan)
    first = np.full(len(w), np.nan)
    for k in range(p.prefill_instances):
        index = np.arange(k, len(w), p.prefill_instances)
        if len(index):
            r = simulate_instance(pre_cost, PrefillFirst(), one.select(index))
            first[index] = r.first_token_s
            parts.append((index, r))
    link = costs.cluster.link_between(0, min(p.prefill_instances * p.prefill_tp * p.prefill_pp,
                                             costs.cluster.num_devices - 1))
    transfer = w.prompt_tokens * pre_cost.kv_bytes_per_token / link.pair_bandwidth_bytes_per_s + link.latency_s
    ready = first + transfer
    order = np.argsort(np.nan_to_num(ready, nan=np.inf), kind="stable")
    decode_parts = []
    for k in range(p.decode_instances):
        index = order[k::p.decode_instances]
        index = index[np.isfinite(ready[index])]
        if len(index):
            sub = Workload(ready[index], w.prompt_tokens[index], w.output_tokens[index], w.name)
            decode_parts.append((index, simulate_instance(dec_cost, DecodeOnly(), sub)))
    merged = _merge(w, parts + decode_parts, d.gpus)
    merged.first_token_s = first
    finish = np.full(len(w), np.nan)
    for index, r in decode_parts:
        finish[index] = r.finish_s
    single = w.output_tokens <= 1
    finish[single] = first[single]
    merged.finish_s = finish
    merged.kv_transfer_s = float(np.nansum(transfer))
    return merged


def simulate(costs: CostCache, d: Deployment, w: Workload) -> SimResult:
    """Simulate workload `w` on deployment `d`; per-request times merged over instances.

    >>> import planner
    >>> from cost_models.cluster import parse_cluster
    >>> from cost_models.serving.policies import Chunked
    >>> from cost_models.serving.workload import fixed
    >>> costs = CostCache(planner.capture("tiny-llama", seq_len=64), parse_cluster("2xH100-SXM"))
    >>> simulate(costs, Deployment(Chunked(128), replicas=2), fixed(10, 64, 4, rate=5.0)).gpus
    2
    """
    if isinstance(d.policy, Disaggregated):
        return _disaggregated(costs, d, w)
    return _colocated(costs, d, w)


def scaled(d: Deployment, **changes) -> Deployment:
    return replace(d, **changes)
