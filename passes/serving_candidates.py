"""Serving candidates: the units a serving deployment replicates, with an offline throughput bound each.

- colocated instances of every fitting tp x pp (tp within a node, KV heads replicated as vLLM does;
  pp across nodes) under prefill-first, chunked prefill (budgets `CHUNK_BUDGETS`) and, for MoE models
  priced by the cost model, layered prefill (the published rule for G);
- disaggregated xPyD units (x prefill, y decode instances, each phase with its own tp, pp 1;
  gcd(x, y) = 1 since units are replicated; any counts the cluster holds: no cap, so a unit can use every
  GPU), from the disaggregating engine's tables when it has its own.
A unit fits only when its KV cache holds a median request.
"""

from __future__ import annotations

import math

import numpy as np

from cost_models.serving.deployment import Deployment
from cost_models.serving.metrics import phase_rates
from cost_models.serving.policies import Chunked, Disaggregated, Layered, PrefillFirst
from ir.errors import UserError
from passes.inference_strategy import PP_DEGREES
from passes.parallel_layouts import TP_DEGREES, tp_ok

CHUNK_BUDGETS = (512, 2048, 8192)
# colocated: the offline bound ignores prefill riding on decode batches; goodput is searched up to x this
BOUND_SLACK = 1.5


class ServingCandidate:
    """One unit to replicate: a colocated instance (policy, tp, pp) or a disaggregated xPyD unit. `bound` is
    its offline throughput bound (req/s), `goodput` what the search finds (0 until then)."""

    def __init__(self, policy, tp: int, pp: int, gpus: int, bound: float, ep_dp: int = 1):
        self.policy, self.tp, self.pp, self.gpus, self.bound, self.ep_dp = policy, tp, pp, gpus, bound, ep_dp
        self.goodput = 0.0
        self.saturation = 0.0  # saturated service rate of one unit (req/s), measured by the search

    @property
    def disaggregated(self) -> bool:
        return isinstance(self.policy, Disaggregated)

    @property
    def ep(self) -> int:
        """Expert-parallel size of a wide-EP unit (its tp x attention groups); 1 otherwise."""
        return self.tp * self.ep_dp if self.ep_dp > 1 else 1

    def unit(self) -> Deployment:
        return Deployment(self.policy) if self.disaggregated else Deployment(self.policy, self.tp, self.pp, 1, self.ep_dp)

    def scaled(self, k: int) -> Deployment:
        if not self.disaggregated:
            return Deployment(self.policy, self.tp, self.pp, k, self.ep_dp)
        p = self.policy
        return Deployment(Disaggregated(k * p.prefill_instances, k * p.decode_instances, p.prefill_tp, p.prefill_pp,
                                        p.decode_tp, p.decode_pp))

    def ranks_needed(self, k: int) -> int:
        """Ranks `k` units occupy (decode instances start on a multiple of their tp after the prefill ranks)."""
        if not self.disaggregated:
            return k * self.gpus
        p = self.policy
        prefill = k * p.prefill_instances * p.prefill_tp * p.prefill_pp
        return -(-prefill // p.decode_tp) * p.decode_tp + k * p.decode_instances * p.decode_tp * p.decode_pp

    def describe(self) -> str:
        if self.disaggregated:
            return self.policy.describe()
        ep = f"dp{self.ep_dp}ep{self.ep}" if self.ep_dp > 1 else ""
        return f"tp{self.tp}pp{self.pp}{ep} {self.policy.describe()}"

    def key(self) -> tuple:
        return (self.gpus, self.describe())


def serving_candidates(graph, cluster, costs, fixed: dict, w) -> list[ServingCandidate]:
    """Every unit of the module docstring that fits, for the workload sample `w`."""
    node, n = cluster.nodes[0], cluster.num_devices
    blocks = sum(1 for layer in graph.layers if layer.kind == "block")
    mean_p, mean_o = float(w.prompt_tokens.mean()), float(w.output_tokens.mean())
    need = int(np.median(w.prompt_tokens + w.output_tokens))
    dcosts = costs.for_policy(Disaggregated(1, 1))  # the disaggregating engine's, when it is another
    rates, drates = {}, {}
    tables = ((rates, costs),) if dcosts is costs else ((rates, costs), (drates, dcosts))
    for tp in TP_DEGREES:
        for pp in PP_DEGREES:
            if tp * pp > n or pp > blocks or not tp_ok(graph, tp, node.devices_per_node, replicate_kv=True):
                continue
            if any(fixed.get(k) not in (None, v) for k, v in (("tp", tp), ("pp", pp))):
                continue
            if fixed.get("dp") and fixed["dp"] * tp * pp > n:
                continue
            for table, engine in tables:
                # no profile, or no room for a median request
                if engine.supports(tp, pp) and engine.get(tp, pp).kv_capacity_tokens >= need:
                    table[(tp, pp)] = phase_rates(engine.get(tp, pp), mean_p, mean_o)
    moe = any(layer.is_moe for layer in graph.layers)
    if fixed.get("ep", 1) > 1 and not moe:
        raise UserError(f"--ep {fixed['ep']} given but {graph.model} has no experts; drop --ep")
    layered = moe and costs.engine is None  # engine profiles hold whole-model iteration times only
    policies = [PrefillFirst(), *(Chunked(b) for b in CHUNK_BUDGETS), *([Layered()] if layered else [])]
    out = [] if fixed.get("ep", 1) > 1 else [ServingCandidate(policy, tp, pp, tp * pp, 1.0 / (1.0 / pf + 1.0 / dc))
                                            for (tp, pp), (pf, dc) in rates.items() for policy in policies]
    if moe and costs.engine is None:
        out += _expert_parallel_units(graph, cluster, costs, fixed, mean_p, mean_o, need)
    if fixed or n < 2:
        return out
    drates = drates if dcosts is not costs else rates
    single = sorted(tp for tp, pp in drates if pp == 1)
    for ptp in single:
        for dtp in single:
            for x in range(1, n // ptp + 1):
                for y in range(1, (n - x * ptp) // dtp + 1):
                    c = ServingCandidate(Disaggregated(x, y, ptp, 1, dtp, 1), dtp, 1, x * ptp + y * dtp,
                                         min(x * drates[(ptp, 1)][0], y * drates[(dtp, 1)][1]))
                    if math.gcd(x, y) == 1 and c.ranks_needed(1) <= n:
                        out.append(c)
    return out


def _expert_parallel_units(graph, cluster, costs, fixed: dict, mean_p: float, mean_o: float,
                           need: int) -> list[ServingCandidate]:
    """Wide expert-parallel units of an MoE model (`cost_models.serving.expert_parallel`): D attention groups of
    tp ranks (tp within a node), the routed experts over all tp x D ranks (D >= 2, dividing the experts), under
    chunked prefill, the engines' default schedule. A pinned --ep keeps the units of that size only."""
    node, n = cluster.nodes[0], cluster.num_devices
    experts = graph.config.get("num_experts") or 0
    out = []
    for tp in TP_DEGREES:
        if fixed.get("tp") not in (None, tp) or fixed.get("pp") not in (None, 1) or fixed.get("dp") or \
                not tp_ok(graph, tp, node.devices_per_node, replicate_kv=True):
            continue
        groups = 2
        while tp * groups <= n:
            ep = tp * groups
            if experts % ep == 0 and fixed.get("ep") in (None, ep):
                cost = costs.get(tp, 1, groups)
                if cost.kv_capacity_tokens >= need:
                    pf, dc = phase_rates(cost, mean_p, mean_o)
                    out += [ServingCandidate(Chunked(b), tp, 1, ep, 1.0 / (1.0 / pf + 1.0 / dc), groups)
                            for b in CHUNK_BUDGETS]
            groups *= 2
    return out
