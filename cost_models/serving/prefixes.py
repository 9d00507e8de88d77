"""Serving workloads whose requests share prompt prefixes: chat sessions with system prompts and multi-turn
history, the traffic that automatic prefix caching (vLLM) and the radix cache (SGLang) serve from cache.

A prompt is a sequence of content segments (a system prompt, user turns, earlier answers); each block of
`block_tokens` tokens gets the id of the exact segment pieces it covers, so two prompts get the same id for
block k exactly when their first (k + 1) x block_tokens tokens are the same content (`Workload.block_hashes`,
the hash ids of vLLM's timed traces). Sessions:
- start as a Poisson process; each picks one of `system_prompts` system prompts (uniformly) and 1..`turns`
  turns (uniformly);
- turn k's prompt = system prompt + every earlier (user message, answer) pair + the new user message; user
  messages and answers have uniform lengths in the given ranges;
- turn k + 1 arrives an exponential think time (mean `think_s`) after turn k plus the time turn k needs at
  `seconds_per_output_token` per answer token (an open-loop trace: the arrival times are fixed data, as in
  the Mooncake traces).
Deterministic for a seed (numpy PCG64). The arrival times are scaled so the mean request rate is `rate`.
"""

from __future__ import annotations

import numpy as np

from cost_models.serving.trace_files import HASH_BLOCK_TOKENS
from cost_models.serving.workload import Workload, hash_lists
from ir.errors import UserError


def _block_ids(segments: list[tuple[object, int]], block_tokens: int, table: dict) -> list[int]:
    """Ids of the blocks of a prompt made of (segment label, tokens) pieces; the last block may be partial.

    >>> table = {}
    >>> _block_ids([("sys", 20), ("u", 12)], 16, table), _block_ids([("sys", 20), ("v", 12)], 16, table)
    ([0, 1], [0, 2])
    """
    ids, block, filled = [], [], 0
    for label, length in segments:
        offset = 0
        while offset < length:
            take = min(block_tokens - filled, length - offset)
            block.append((label, offset, take))
            offset += take
            filled += take
            if filled == block_tokens:
                ids.append(table.setdefault(tuple(block), len(table)))
                block, filled = [], 0
    if block:
        ids.append(table.setdefault(tuple(block), len(table)))
    return ids


def chat_sessions(n: int, rate: float, *, system_prompts: int = 4, system_tokens: int = 512, turns: int = 3,
                  user_tokens: tuple[int, int] = (32, 256), output_tokens: tuple[int, int] = (16, 64),
                  think_s: float = 2.0, seconds_per_output_token: float = 0.01, seed: int = 0,
                  block_tokens: int = HASH_BLOCK_TOKENS) -> Workload:
    """`n` requests of chat sessions sharing system prompts and their own history (see the module docstring).

    >>> w = chat_sessions(200, rate=4.0, seed=1)
    >>> len(w), round(w.rate, 1), float(w.shared_prefix_tokens().sum() / w.prompt_tokens.sum()) > 0.5
    (200, 4.0, True)
    """
    if n < 1 or not rate > 0 or system_prompts < 1 or turns < 1 or system_tokens < 0:
        raise UserError(f"chat sessions need n >= 1, rate > 0, system_prompts >= 1, turns >= 1 and system_tokens "
                        f">= 0; got {n}, {rate}, {system_prompts}, {turns}, {system_tokens}")
    if min(*user_tokens, *output_tokens) < 1 or user_tokens[0] > user_tokens[1] or output_tokens[0] > output_tokens[1]:
        raise UserError(f"user and output token ranges must be (low, high) with 1 <= low <= high; got {user_tokens}, "
                        f"{output_tokens}")
    rng = np.random.default_rng(seed)
    table: dict = {}
    rows = []  # (arrival, prompt tokens, output tokens, block ids)
    start, session = 0.0, 0
    while len(rows) < n:
        start += rng.exponential(1.0)
        system = int(rng.integers(system_prompts))
        segments = [(("system", system), system_tokens)] if system_tokens else []
        at = start
        for turn in range(int(rng.integers(1, turns + 1))):
            user = int(rng.integers(user_tokens[0], user_tokens[1] + 1))
            answer = int(rng.integers(output_tokens[0], output_tokens[1] + 1))
            segments = [*segments, (("user", session, turn), user)]
            prompt = sum(length for _, length in segments)
            rows.append((at, prompt, answer, _block_ids(segments, block_tokens, table)))
            segments = [*segments, (("answer", session, turn), answer)]
            at += answer * seconds_per_output_token + rng.exponential(think_s)
        session += 1
    rows.sort(key=lambda r: r[0])
    rows = rows[:n]
    arrival = np.array([r[0] for r in rows]) - rows[0][0]
    prompt = np.array([r[1] for r in rows], dtype=np.int64)
    output = np.array([r[2] for r in rows], dtype=np.int64)
    w = Workload(arrival, prompt, output, "chat-sessions", hash_lists([r[3] for r in rows]), block_tokens,
                 int((prompt + output).max()))
    return w.with_rate(rate) if n > 1 else w
