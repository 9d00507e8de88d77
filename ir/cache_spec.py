"""What one token-mixing module of a block keeps per sequence between decode steps: its KV cache
or recurrent state, by attention kind.

Kinds (`CACHE_KINDS`), with the elements cached per token (per layer, K and V counted):
- ``full``: multi-head attention, kv_heads = heads: heads x (key_dim + value_dim);
- ``grouped_query``: fewer K/V heads than query heads (GQA, MQA): kv_heads x (key_dim + value_dim);
- ``multi_latent``: DeepSeek-V2/V3 MLA; the compressed latent and the decoupled rotary key, shared
  by all heads: latent_dim + rope_dim (vLLM's and SGLang's MLA cache);
- ``sliding_window``: as full/grouped but only the last `window` tokens are kept;
- ``chunked_local``: attention within chunks of `window` tokens (Llama 4): at most `window` kept;
- ``linear``: linear/recurrent attention (gated delta net): no per-token growth, a constant state;
- ``state_space``: Mamba-style selective state space: a constant SSM + convolution state;
- ``cross``: cross-attention over encoder outputs: K/V of the encoder tokens, not growing with decode.

`sinks` marks learned attention-sink logits (gpt-oss): a per-head softmax term, no cached tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

CACHE_KINDS = ("full", "grouped_query", "multi_latent", "sliding_window", "chunked_local", "linear",
               "state_space", "cross")
RECURRENT_KINDS = ("linear", "state_space")


@dataclass(frozen=True)
class CacheSpec:
    """The cache of one attention or recurrent module (`module_path`) of a block.

    >>> gqa = CacheSpec("model.layers.0.self_attn", "grouped_query", heads=32, kv_heads=8,
    ...                 key_dim=128, value_dim=128, shards=8)
    >>> gqa.elements_per_token, gqa.bytes_per_sequence(1000, kv_bytes=2)
    (2048, 4096000.0)
    """

    module_path: str
    kind: str
    heads: int = 0  # query heads (0 for state-space layers)
    kv_heads: int = 0  # K/V heads cached (multi-latent: 1, the shared latent)
    key_dim: int = 0  # K elements per kv head per token
    value_dim: int = 0  # V elements per kv head per token
    latent_dim: int = 0  # multi-latent: compressed K/V per token (kv_lora_rank)
    rope_dim: int = 0  # multi-latent: decoupled rotary key per token (qk_rope_head_dim)
    window: int = 0  # sliding window or attention chunk: the most tokens kept; 0 keeps all
    sinks: bool = False  # learned attention-sink logits (no cached tokens)
    state_elements: int = 0  # linear / state-space: elements per sequence, independent of length
    shards: int = 1  # ways tensor parallelism splits it (kv heads, state heads; 1: replicated)

    @property
    def elements_per_token(self) -> int:
        """Cached elements each token adds (before any window bound)."""
        if self.kind in RECURRENT_KINDS:
            return 0
        if self.kind == "multi_latent":
            return self.latent_dim + self.rope_dim
        return self.kv_heads * (self.key_dim + self.value_dim)

    def cached_tokens(self, tokens: int) -> int:
        """Tokens whose K/V are held for a sequence of `tokens` tokens."""
        if self.kind in RECURRENT_KINDS:
            return 0
        return min(tokens, self.window) if self.window else tokens

    def bytes_per_sequence(self, tokens: int, kv_bytes: int, tp: int = 1) -> float:
        """Bytes one sequence of `tokens` tokens holds on one of `tp` tensor-parallel ranks."""
        elements = self.elements_per_token * self.cached_tokens(tokens) + self.state_elements
        return elements * kv_bytes / min(max(tp, 1), max(self.shards, 1))

    def describe(self) -> str:
        """Short text: ``gqa h32/kv8/d128``, ``mla c512+r64``, ``swa4096 gqa ...``, ``ssm 24576``."""
        if self.kind in RECURRENT_KINDS:
            return f"{'ssm' if self.kind == 'state_space' else 'linear'} state={self.state_elements}"
        if self.kind == "multi_latent":
            return f"mla h{self.heads} c{self.latent_dim}+r{self.rope_dim}"
        dims = f"d{self.key_dim}" if self.key_dim == self.value_dim else f"d{self.key_dim}/{self.value_dim}"
        text = f"h{self.heads}/kv{self.kv_heads}/{dims}"
        prefix = {"sliding_window": f"swa{self.window} ", "chunked_local": f"chunk{self.window} ",
                  "cross": "cross "}.get(self.kind, "")
        return f"{prefix}{text}{' sinks' if self.sinks else ''}"
