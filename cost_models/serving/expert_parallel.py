"""Iteration time of a wide expert-parallel serving instance: `dp` attention groups of tp ranks each, the
routed experts of every MoE layer sharded over all dp x tp ranks.

This is what vLLM runs with `--tensor-parallel-size T --data-parallel-size D --enable-expert-parallel`
and SGLang with `--tp-size T*D --dp-size D --enable-dp-attention --ep-size T*D`: each of the D groups
schedules its own requests through attention and the dense layers (tensor-parallel over its T ranks, its
own KV cache), and every MoE layer runs in lock-step over all T x D ranks, each holding E / (T x D) routed
experts (shared experts and dense layers replicated per group), tokens exchanged by two all-to-alls
(dispatch, combine). The per-group tables are an `IterationCost` built with ep = D over the data-parallel
groups (`cost_models.layer_times`: expert GEMMs see the tokens of all D groups on 1/D of the experts, plus
the all-to-alls over the ep group, across nodes where it spans them).

Scheduling model: one scheduler for the instance whose running batch the D groups share evenly (a request
goes to the least-loaded group, as DeepSeek's and SGLang's DP-attention routers do); an iteration takes the
time of one group at 1/D of the batch. Uneven groups would be slower (the lock-step MoE waits for the
fullest); this is the balanced bound. KV capacity is D times a group's.
"""

from __future__ import annotations

import math

from cost_models.serving.iteration_cost import IterationCost


class ExpertParallelCost:
    """`IterationCost`'s interface for a unit of `dp` groups sharing one batch (see the module docstring).

    >>> import planner
    >>> from cost_models.cluster import parse_cluster
    >>> from cost_models.estimate_context import make_context
    >>> from cost_models.parallel_config import Options
    >>> g = planner.capture("tiny-mixtral", seq_len=64)
    >>> ctx = make_context(g, parse_cluster("4xH100-SXM"), Options(tp=1, dp=4, ep=4, ep_over_dp=True, input_len=64))
    >>> unit = ExpertParallelCost(IterationCost(ctx), 4)
    >>> unit.gpus, unit.kv_capacity_tokens == 4 * unit.base.kv_capacity_tokens
    (4, True)
    >>> abs(unit.time(decodes=8, decode_kv=512) - unit.base.time(decodes=2, decode_kv=128)) < 1e-12
    True
    """

    def __init__(self, base: IterationCost, dp: int):
        self.base, self.dp = base, dp
        self.gpus = base.gpus * dp
        self.kv_capacity_tokens = base.kv_capacity_tokens * dp

    def __getattr__(self, name):  # tables, attention coefficients, MoE facts, power: the group's
        return getattr(self.base, name)

    def _share(self, n: float) -> int:
        return math.ceil(n / self.dp)

    def time(self, decodes: int = 0, decode_kv: float = 0.0, prefill_tokens: int = 0, prefill_pairs: float = 0.0,
             prefill_kv_read: float = 0.0, prompts_done: int = 0) -> float:
        d = self.dp
        return self.base.time(self._share(decodes), decode_kv / d, self._share(prefill_tokens), prefill_pairs / d,
                              prefill_kv_read / d, self._share(prompts_done))

    def linear(self, tokens: int, sampled: int) -> float:
        return self.base.linear(self._share(tokens), self._share(sampled))

    def decode_attention_per_token(self, decodes: int) -> float:
        """Per cached token of the whole batch: each group reads its 1/dp share, in parallel."""
        return self.base.decode_attention_per_token(self._share(decodes)) / self.dp

    def decode_attention(self, decodes: int, decode_kv: float) -> float:
        return self.base.decode_attention(self._share(decodes), decode_kv / self.dp)

    def decode_attention_slope(self, decodes: int, decode_kv: float) -> tuple[float, float]:
        """Per cached token of the whole batch (each group holds 1/dp of them), and how many more before a
        group's window fills."""
        slope, until = self.base.decode_attention_slope(self._share(decodes), decode_kv / self.dp)
        return slope / self.dp, until * self.dp

    def prefill_attention(self, pairs: float, q_tokens: int, kv_read_tokens: float) -> float:
        return self.base.prefill_attention(pairs / self.dp, self._share(q_tokens), kv_read_tokens / self.dp)

    def layered_time(self, decodes: int, decode_kv: float, prompt_tokens: int, prompt_pairs: float,
                     group_blocks: int, first: bool, last: bool, prompts: int) -> float:
        d = self.dp
        return self.base.layered_time(self._share(decodes), decode_kv / d, self._share(prompt_tokens),
                                      prompt_pairs / d, group_blocks, first, last, self._share(prompts))

    def compute_bound(self, tokens: int) -> float:
        return self.base.compute_bound(self._share(tokens))
