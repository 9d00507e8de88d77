"""Prefix cache of one serving instance: vLLM's automatic prefix caching and SGLang's radix cache, at the
granularity of the workload's hash blocks (`Workload.prefix_chains`).

What the engines do (vLLM v1 `KVCacheManager`, SGLang `RadixCache`), and how it is modelled:
- a prompt's KV blocks are kept after its request finishes and found again by content: a new request reuses
  the longest cached prefix of its prompt, in whole engine KV blocks (`block_size` tokens: 16 on GPUs, 128 on
  vLLM's CPU backend), and always computes at least its last prompt token;
- blocks are shared: a prefix held by many running requests occupies memory once (reference counts);
- unreferenced cached blocks stay in memory until the space is needed, then the least recently released go
  first (LRU); a request's blocks are released tail first, so a shared head outlives the private tail.
Only prompt blocks are registered (an answer's tokens come back in a later prompt only as new content in the
timed traces this replays). A node is one hash block of `block_tokens` tokens; a request holds the nodes of
its matched prefix from admission and the nodes of its whole prompt (in whole engine blocks) once its prefill
is done.
"""

from __future__ import annotations

from collections import OrderedDict


class PrefixCache:
    """Reference-counted cached nodes plus an LRU of evictable ones (see the module docstring).

    >>> c = PrefixCache(block_tokens=16, block_size=16)
    >>> c.hold([0, 1, 2]); c.release([0, 1, 2]); c.hit_nodes([0, 1, 5], prompt_tokens=64)
    2
    >>> c.evict(16); c.hit_nodes([0, 1, 5], prompt_tokens=64), c.evictable_tokens
    (1, 16)
    """

    def __init__(self, block_tokens: int, block_size: int):
        self.block_tokens, self.block_size = block_tokens, block_size
        self.refs: dict[int, int] = {}  # node -> running requests holding it
        self.lru: OrderedDict[int, None] = OrderedDict()  # cached nodes nobody holds, least recently released first

    @property
    def held_tokens(self) -> int:
        """KV tokens of nodes held by running requests (each counted once)."""
        return len(self.refs) * self.block_tokens

    @property
    def evictable_tokens(self) -> int:
        return len(self.lru) * self.block_tokens

    def hit_nodes(self, chain: list[int], prompt_tokens: int) -> int:
        """How many leading nodes of `chain` a new request reuses: cached ones, in whole engine blocks, leaving its
        last prompt token to compute."""
        k = 0
        refs, lru = self.refs, self.lru
        while k < len(chain) and (chain[k] in refs or chain[k] in lru):
            k += 1
        tokens = min(k * self.block_tokens, prompt_tokens - 1) // self.block_size * self.block_size
        return tokens // self.block_tokens

    def cacheable_nodes(self, chain: list[int], prompt_tokens: int) -> int:
        """Leading nodes of a prompt that lie in whole engine blocks (what the engine caches of it)."""
        return min(len(chain), prompt_tokens // self.block_size * self.block_size // self.block_tokens)

    def new_tokens(self, nodes: list[int]) -> int:
        """Memory `hold(nodes)` adds to what running requests hold: nodes nobody holds yet."""
        return sum(self.block_tokens for node in nodes if node not in self.refs)

    def hold(self, nodes: list[int]) -> None:
        refs, lru = self.refs, self.lru
        for node in nodes:
            if node in refs:
                refs[node] += 1
            else:
                lru.pop(node, None)
                refs[node] = 1

    def release(self, nodes: list[int]) -> None:
        refs, lru = self.refs, self.lru
        for node in reversed(nodes):  # tail first: evicted before the shared head
            left = refs[node] - 1
            if left:
                refs[node] = left
            else:
                del refs[node]
                lru[node] = None

    def evict(self, room_tokens: int) -> None:
        """Drop least recently released nodes until the evictable ones fit in `room_tokens`."""
        lru, keep = self.lru, max(room_tokens, 0) // self.block_tokens
        while len(lru) > keep:
            lru.popitem(last=False)
