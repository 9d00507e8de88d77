"""Iteration times of a serving engine from its measured per-iteration profile, instead of the roofline.

Engines differ in kernels, schedulers and runtime overheads: the same GPU runs an OPT-13B prefill of
1,024 tokens in 187 ms under vLLM v0.2 and in 118 ms under DistServe's engine (both measured by the
DistServe authors). To reproduce or predict a deployment of a *given* engine version, the simulator can
take that engine's profile: the least-squares fits DistServe's simulator uses (simdistserve,
`estimators/time_estimator.py`), per model and tensor-parallel degree, in milliseconds,

    prefill iteration  = a + b x sum(L) + c x sum(L^2)         over the batch's prompt lengths L
    decode iteration   = a + b x sum(context + 1) + c x batch  (one coefficient set below the
                         `small_batch_below` batch size, another at or above it)

Kernel profiles leave out what the engine does around the forward pass on every iteration (scheduling,
sampling and detokenization in Python, RPC between engine processes): `iteration_overhead_ms` adds it to
every iteration. It is fitted to measured end-to-end runs (see the profile files for which run).

A profile file is YAML: `engine`, `device`, `source`, optional `iteration_overhead_ms` and its
`overhead_source`, and `models: {name: {tp: {prefill: [a, b, c], decode_small: [a, b, c],
decode_large: [a, b, c], small_batch_below: N}}}`. Everything that is not an
iteration time (KV capacity, KV bytes per token, power, MoE expert bytes) still comes from the cost
model. Prefill-only and decode-only iterations are what the profiled engines run (prefill-first
scheduling, disaggregated instances); a mixed iteration (chunked prefill) is priced as the sum of its
prefill and decode parts, and layered prefill is refused (the profiles hold no per-layer times).

Engines that run mixed iterations (vLLM v1: every iteration carries the decodes and prompt chunks of one
token budget, `planner calibrate --engine vllm`) are profiled by one fit of the whole iteration instead,
`models: {name: {tp: {iteration: {fixed_ms, per_token_ms, per_kilo_pair_ms, per_kilo_kv_token_ms,
per_sequence_ms, per_prefill_iteration_ms}}}}`:

    iteration = fixed + per_token x T + per_kilo_pair x P / 1e3 + per_kilo_kv_token x K / 1e3 + per_sequence x S
                + per_prefill_iteration x [the iteration computes prompt tokens]

T: tokens computed (decodes + prompt chunk tokens); P: causal query-key pairs of the prompt chunks (with
their cached prefix); K: tokens of context the decodes read; S: sequences sampled (decodes + prompts that
finish); the last term is the prompt path's own work (0 where a profile does not give it, as profiles measured
before it was fitted). Such a profile also gives the engine's KV `block_size` (tokens; vLLM's CPU backend uses 128) and
`request_latency_ms`, the time a request spends outside the iterations before its first token (HTTP,
tokenization, detokenization and streaming back), which the simulator adds at arrival, and optionally
`client_path_ms`, the part of that latency the engine's own time-to-first-token metric does not count (the HTTP
exchange and the client; measured against the engine's /metrics), so a run's TTFT as the engine counts it is
the simulated one minus `client_path_ms`. Its fit data sit beside it (`fit`: rows, their file and the fit error per
kind of row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from cost_models.serving.iteration_cost import IterationCost
from ir.errors import UserError

PROFILE_DIR = Path(__file__).resolve().parents[1] / "data" / "engine_profiles"


@dataclass(frozen=True)
class IterationFit:
    """Milliseconds of one mixed iteration (see the module docstring): fixed + per token + per 1e3 attention
    pairs + per 1e3 context tokens read by decodes + per sampled sequence, + once if it computes prompt tokens
    (`per_prefill_iteration_ms`: the prompt path's own work beyond its tokens, e.g. the prefill attention
    kernels beside the decode ones; 0 in profiles measured before it was fitted)."""

    fixed_ms: float
    per_token_ms: float
    per_kilo_pair_ms: float
    per_kilo_kv_token_ms: float
    per_sequence_ms: float
    per_prefill_iteration_ms: float = 0.0

    def ms(self, tokens: float, pairs: float, kv_tokens: float, sequences: float, prefill_iterations: float = 0.0) -> float:
        """
        >>> round(IterationFit(2.0, 0.01, 0.001, 0.002, 0.1).ms(tokens=100, pairs=5000, kv_tokens=1000, sequences=1), 6)
        3.107
        >>> round(IterationFit(2.0, 0.01, 0.001, 0.002, 0.1, 1.5).ms(100, 5000, 1000, 1, prefill_iterations=1), 6)
        4.607
        """
        return (self.fixed_ms + self.per_token_ms * tokens + self.per_kilo_pair_ms * pairs / 1e3
                + self.per_kilo_kv_token_ms * kv_tokens / 1e3 + self.per_sequence_ms * sequences
                + self.per_prefill_iteration_ms * prefill_iterations)

    def as_dict(self) -> dict:
        return {k: float(getattr(self, k)) for k in ITERATION_TERMS}


ITERATION_TERMS = ("fixed_ms", "per_token_ms", "per_kilo_pair_ms", "per_kilo_kv_token_ms", "per_sequence_ms",
                   "per_prefill_iteration_ms")


@dataclass(frozen=True)
class EngineFit:
    """One (model, tp) entry of an engine profile, in milliseconds: DistServe's prefill and decode fits, or one
    fit of a mixed iteration (`mixed`)."""

    prefill: tuple[float, float, float] = (0.0, 0.0, 0.0)
    decode_small: tuple[float, float, float] = (0.0, 0.0, 0.0)
    decode_large: tuple[float, float, float] = (0.0, 0.0, 0.0)
    small_batch_below: int = 1
    mixed: IterationFit | None = None

    def prefill_ms(self, tokens: float, sum_squares: float) -> float:
        a, b, c = self.prefill
        return a + b * tokens + c * sum_squares

    def decode_coefficients(self, batch: int) -> tuple[float, float, float]:
        return self.decode_small if batch < self.small_batch_below else self.decode_large


def idle_wakeup_ms(gap_ms: float, max_ms: float, tau_ms: float) -> float:
    """Extra first-token time of a request that finds the engine idle for `gap_ms`: max x (1 - exp(-gap / tau)).
    An engine that has slept wakes its worker threads and caches (on a CPU, OpenMP threads past their spin time)."""
    return max_ms * (1.0 - math.exp(-max(gap_ms, 0.0) / tau_ms)) if max_ms > 0 and tau_ms > 0 else 0.0



@dataclass(frozen=True)
class EngineProfile:
    """A serving engine's measured iteration times on one device, per model and tp."""

    engine: str
    device: str
    source: str
    fits: dict  # model name -> {tp: EngineFit}
    iteration_overhead_ms: float = 0.0  # runtime cost of every iteration beyond the profiled forward pass
    block_size: int | None = None  # the engine's KV block tokens (None: the simulator's default, 16)
    request_latency_ms: float = 0.0  # per request, outside the iterations (before its first token)
    idle_wakeup_max_ms: float = 0.0  # extra first-token time after the engine sat idle (`idle_wakeup_ms`)
    idle_wakeup_tau_ms: float = 0.0
    client_path_ms: float = 0.0  # of request_latency_ms, outside the engine's own TTFT (0: not measured)

    def covers(self, model: str, tp: int, pp: int = 1) -> bool:
        return pp == 1 and tp in self.fits.get(model, {})

    def fit_for(self, model: str, tp: int, pp: int = 1) -> EngineFit:
        if model not in self.fits:
            raise UserError(f"engine profile {self.engine!r} has no model {model!r}; it covers "
                            f"{', '.join(sorted(self.fits))}")
        if not self.covers(model, tp, pp):
            raise UserError(f"engine profile {self.engine!r} has {model} at tp {sorted(self.fits[model])} with pp 1; "
                            f"asked for tp={tp} pp={pp}")
        return self.fits[model][tp]


def load_engine_profile(path: str | Path) -> EngineProfile:
    """Read a profile YAML (see the module docstring); a bare name looks in cost_models/data/engine_profiles.

    >>> p = load_engine_profile("vllm-0.2-a100-80gb")
    >>> p.engine, round(p.fit_for("opt-13b", 1).prefill_ms(1024, 1024 ** 2))
    ('vLLM v0.2', 187)
    """
    file = Path(path)
    if not file.is_file() and file.suffix not in (".yaml", ".yml"):
        file = PROFILE_DIR / f"{path}.yaml"
    if not file.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise UserError(f"engine profile {str(path)!r} not found; give a YAML file or one of {', '.join(known)}")
    try:
        data = yaml.safe_load(file.read_text())
        fits = {str(model): {int(tp): _entry(e) for tp, e in per_tp.items()} for model, per_tp in data["models"].items()}
        block = data.get("block_size")
        wake = data.get("idle_wakeup") or {}
        return EngineProfile(str(data["engine"]), str(data["device"]), str(data["source"]), fits,
                             float(data.get("iteration_overhead_ms", 0.0)), int(block) if block else None,
                             float(data.get("request_latency_ms", 0.0)), float(wake.get("max_ms", 0.0)),
                             float(wake.get("tau_ms", 0.0)), float(data.get("client_path_ms", 0.0)))
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise UserError(f"{file}: not an engine profile ({type(error).__name__}: {error}); see "
                        f"cost_models/serving/engine_profile.py for the format") from None


def _entry(e: dict) -> EngineFit:
    if "iteration" in e:
        return EngineFit(mixed=IterationFit(*(float(e["iteration"].get(k, 0.0)) for k in ITERATION_TERMS)))
    return EngineFit(tuple(float(x) for x in e["prefill"]), tuple(float(x) for x in e["decode_small"]),
                     tuple(float(x) for x in e["decode_large"]), int(e["small_batch_below"]))


class ProfiledIterationCost:
    """An `IterationCost` whose iteration times come from an engine profile (module docstring); every
    other quantity is the wrapped cost model's."""

    def __init__(self, base: IterationCost, fit: EngineFit, iteration_overhead_ms: float = 0.0,
                 block_size: int | None = None, request_latency_ms: float = 0.0, idle_wakeup: tuple = (0.0, 0.0)):
        self.base, self.fit = base, fit
        self.overhead_s = iteration_overhead_ms / 1e3  # per iteration, on top of the profiled forward pass
        if block_size:
            self.block_size = block_size  # read by the simulator (its default otherwise)
        self.request_latency_s = request_latency_ms / 1e3
        self.idle_wakeup = idle_wakeup  # (max ms, tau ms)

    def idle_wakeup_s(self, gap_s: float) -> float:
        """Extra time before the first iteration after `gap_s` seconds idle (the profile's measured wake-up)."""
        return idle_wakeup_ms(gap_s * 1e3, *self.idle_wakeup) / 1e3

    def __getattr__(self, name):  # capacity, KV bytes, MoE, power, gpus, num_blocks: the cost model's
        return getattr(self.base, name)

    def linear(self, tokens: int, sampled: int) -> float:
        """Decode-only use (the simulator's decode stretches): the profile's batch-dependent part."""
        if self.fit.mixed is not None:
            return self.fit.mixed.ms(tokens, 0.0, 0.0, sampled) / 1e3
        a, _, c = self.fit.decode_coefficients(tokens)
        return (a + c * tokens) / 1e3

    def decode_attention_per_token(self, decodes: int) -> float:
        if not decodes:
            return 0.0
        if self.fit.mixed is not None:
            return self.fit.mixed.per_kilo_kv_token_ms / 1e6
        return self.fit.decode_coefficients(decodes)[1] / 1e3

    def decode_attention(self, decodes: int, decode_kv: float) -> float:
        """The profile's decode attention: linear in the cached tokens (it was measured on the model as served)."""
        return (decode_kv + decodes) * self.decode_attention_per_token(decodes) if decodes else 0.0

    def decode_attention_slope(self, decodes: int, decode_kv: float) -> tuple[float, float]:
        return self.decode_attention_per_token(decodes), math.inf

    def time(self, decodes: int = 0, decode_kv: float = 0.0, prefill_tokens: int = 0, prefill_pairs: float = 0.0,
             prefill_kv_read: float = 0.0, prompts_done: int = 0) -> float:
        if not decodes and not prefill_tokens:
            return 0.0
        if self.fit.mixed is not None:
            kv = decode_kv + decodes if decodes else 0.0
            return self.fit.mixed.ms(decodes + prefill_tokens, prefill_pairs, kv, decodes + prompts_done,
                                     1.0 if prefill_tokens else 0.0) / 1e3 + self.overhead_s
        t = 0.0
        if prefill_tokens:
            # causal pairs sum L(L+1)/2 over whole prompts, so sum L^2 = 2 x pairs - sum L
            t += self.fit.prefill_ms(prefill_tokens, max(2.0 * prefill_pairs - prefill_tokens, 0.0)) / 1e3
        if decodes:
            t += self.linear(decodes, decodes) + (decode_kv + decodes) * self.decode_attention_per_token(decodes)
        return t + self.overhead_s

    def layered_time(self, *args, **kwargs) -> float:
        raise UserError("an engine profile holds whole-model iteration times; layered prefill needs per-layer "
                        "times (use the cost model, without an engine profile)")
