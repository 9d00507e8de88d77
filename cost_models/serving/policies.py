"""Scheduling policies of a serving instance (value objects; the simulator interprets them).

- `PrefillFirst`: vLLM's default scheduler before chunked prefill (v0, `enable_chunked_prefill=False`):
  waiting prompts are admitted FCFS while KV blocks, `max_num_seqs` and `max_batched_tokens` allow and
  run as a prefill-only iteration; running decodes stall meanwhile (the baseline of Sarathi-Serve).
- `Chunked`: Sarathi-Serve (Agrawal et al., OSDI'24): every iteration carries all running decodes and
  fills the remaining `budget` tokens with prompt chunks, FCFS; stall-free.
- `Layered`: layered prefill ("From Tokens to Layers", 2025): whole prompts are batched and advance one
  of G contiguous layer groups per iteration while every iteration still decodes all running requests;
  G comes from the batched prefill tokens: <=512 -> 1, <=1024 -> 2, <=2048 -> 4, <=4096 -> 8, else 16,
  capped by the block count (`groups_for`); groups are near-equal contiguous ranges (`group_sizes`), which
  is what `passes.layer_grouping.solve_minmax` returns for identical blocks.
- `Disaggregated`: DistServe (Zhong et al., OSDI'24) xPyD: `prefill_instances` instances (tp/pp of their
  own) run prefill-first batches; the KV cache moves over the link to one of `decode_instances`
  instances that only decode.
"""

from __future__ import annotations

from dataclasses import dataclass

from ir.errors import UserError

MAX_NUM_SEQS = 256  # vLLM default max_num_seqs
MAX_BATCHED_TOKENS = 8192  # per prefill iteration without chunking


@dataclass(frozen=True)
class PrefillFirst:
    max_batched_tokens: int = MAX_BATCHED_TOKENS
    max_num_seqs: int = MAX_NUM_SEQS
    name: str = "prefill-first"

    def describe(self) -> str:
        return "prefill-first"


@dataclass(frozen=True)
class Chunked:
    budget: int = 512
    max_num_seqs: int = MAX_NUM_SEQS
    name: str = "chunked"

    def __post_init__(self):
        if self.budget < 1:
            raise UserError(f"chunked prefill needs a positive token budget, got {self.budget}")

    def describe(self) -> str:
        return f"chunked(budget={self.budget})"


@dataclass(frozen=True)
class Layered:
    groups: int | None = None  # None: the published rule from the batched prefill tokens
    max_prefill_tokens: int = MAX_BATCHED_TOKENS
    max_num_seqs: int = MAX_NUM_SEQS
    name: str = "layered"

    def describe(self) -> str:
        return f"layered(G={self.groups or 'auto'})"


@dataclass(frozen=True)
class Disaggregated:
    prefill_instances: int = 1
    decode_instances: int = 1
    prefill_tp: int = 1
    prefill_pp: int = 1
    decode_tp: int = 1
    decode_pp: int = 1
    name: str = "disaggregated"

    @property
    def gpus(self) -> int:
        return self.prefill_instances * self.prefill_tp * self.prefill_pp + \
            self.decode_instances * self.decode_tp * self.decode_pp

    def describe(self) -> str:
        return (f"disaggregated({self.prefill_instances}P tp{self.prefill_tp}pp{self.prefill_pp} + "
                f"{self.decode_instances}D tp{self.decode_tp}pp{self.decode_pp})")


@dataclass(frozen=True)
class DecodeOnly:
    """A disaggregated decode instance: requests arrive with their prompt's KV and only decode."""

    max_num_seqs: int = MAX_NUM_SEQS
    name: str = "decode-only"


def groups_for(prefill_tokens: int, num_blocks: int) -> int:
    """The published rule for the number of layer groups G from the batched prefill tokens.

    >>> [groups_for(t, 80) for t in (100, 1024, 2000, 4096, 9000)], groups_for(9000, 6)
    ([1, 2, 4, 8, 16], 6)
    """
    for limit, g in ((512, 1), (1024, 2), (2048, 4), (4096, 8)):
        if prefill_tokens <= limit:
            return min(g, max(num_blocks, 1))
    return min(16, max(num_blocks, 1))


def group_sizes(num_blocks: int, groups: int) -> list[int]:
    """Blocks per group: contiguous, near-equal, larger groups first.

    >>> group_sizes(10, 4)
    [3, 3, 2, 2]
    """
    groups = max(min(groups, num_blocks), 1)
    base, extra = divmod(num_blocks, groups)
    return [base + (1 if g < extra else 0) for g in range(groups)]


def parse_policy(text: str):
    """'prefill-first', 'chunked:512', 'layered', 'layered:4' -> a policy.

    >>> parse_policy("chunked:256").budget, parse_policy("layered").groups
    (256, None)
    """
    name, _, arg = text.partition(":")
    try:
        if name == "prefill-first":
            return PrefillFirst()
        if name == "chunked":
            return Chunked(int(arg or 512))
        if name == "layered":
            return Layered(int(arg) if arg else None)
    except ValueError:
        raise UserError(f"policy {text!r}: the knob after ':' must be an integer") from None
    raise UserError(f"unknown serving policy {text!r}; use prefill-first, chunked[:BUDGET] or layered[:G]")
