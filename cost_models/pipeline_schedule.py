"""Pipeline schedules: step time, activations in flight, p2p sends and per-rank order of GPipe,
1F1B and interleaved 1F1B (Narayanan et al. SC'21, "Efficient Large-Scale Language Model Training on
GPU Clusters Using Megatron-LM", Sec. 2.2; Korthikanti et al. 2022, Sec. 4.2.3 for the memory).

With pp stages, m microbatches and t the time of the slowest stage per microbatch (forward +
backward), all three run m * t of work per rank plus a pipeline fill/drain:
- GPipe (Sec. 2.2.1): bubble (pp - 1) * t, bubble fraction (pp - 1) / m; every rank keeps the
  activations of all m microbatches until the backward pass starts.
- 1F1B / PipeDream-Flush (Sec. 2.2.1): the same bubble; rank s keeps at most pp - s microbatches
  in flight (the warm-up forwards plus one), so the first rank holds pp.
- interleaved 1F1B with v virtual stages per rank (Sec. 2.2.2): each rank runs v chunks of L/(pp*v)
  layers, so a microbatch passes each rank v times in pieces of t / v; bubble (pp - 1) * t / v,
  fraction (pp - 1) / (v * m), at the cost of v times as many p2p sends ("the amount of
  communication also increases by v"). Requires m a multiple of pp (Megatron-LM asserts it;
  torch's ScheduleInterleaved1F1B runs rounds of pp microbatches). Rank s runs
  (pp - s - 1) * 2 + (v - 1) * pp warm-up chunk forwards (Megatron-LM schedules.py,
  `forward_backward_pipelining_with_interleaving`), so with the one in steady state it keeps that
  many + 1 chunks, each 1/v of its layers: on the first rank pp * (1 + (pp - 1) / (pp * v))
  microbatches' worth of its layers' activations (Korthikanti et al. 2022, Sec. 4.2.3).
Pipeline sends (`exposed_sends_s`) add to T_s in line, except interleaved sends with overlap, which run under
the rank's next chunk (Megatron-core's overlap_p2p_comm; NeMo turns it on with virtual stages).
With unequal stages (T_s per microbatch, T = max T_s) the step is m * T + (sum_s T_s - T) / v,
which is (m - 1) * T + sum_s T_s for v = 1 (the existing 1F1B/GPipe formula).

Chunks: the blocks split into pp * v chunks of equal size, or, where they do not divide, chunks of
ceil(blocks / (pp * v)) blocks with the shortfall taken from the first and the last chunk, which also
hold the embedding and the LM head (`chunk_sizes`): torchtitan's `pipeline_parallel_first_stage_less_layers`
/ `last_stage_less_layers`, Megatron-LM's `--decoder-first/last-pipeline-num-layers`, and Llama 3's
126 layers over pp 16 (Dubey et al. 2024, Sec. 3.3.2: "we reduce one Transformer layer each from the
first and the last stages").
"""

from __future__ import annotations

import itertools

SCHEDULES = ("1f1b", "interleaved", "gpipe")


def pipeline_time(stage_times: list[float], microbatches: int, virtual_stages: int = 1) -> float:
    """Seconds of the pipeline part of a step: m * T + (sum - T) / v (module docstring).

    >>> pipeline_time([1.0, 1.0, 1.0, 1.0], 4)  # (m - 1 + pp) * t
    7.0
    >>> pipeline_time([1.0, 1.0, 1.0, 1.0], 4, 2)  # bubble (pp - 1) * t / v = 1.5
    5.5
    """
    slowest = max(stage_times)
    return microbatches * slowest + (sum(stage_times) - slowest) / virtual_stages


def exposed_sends_s(compute_s: float, send_s: float, virtual_stages: int = 1, overlap: bool = True) -> float:
    """Seconds a stage's pipeline sends add to its time per microbatch, `send_s` each (forward and backward) and
    `compute_s` of work over its v chunks. In line (1F1B, GPipe, or interleaving without overlap) all v sends
    add up; interleaved with overlap (Megatron-core's overlap_p2p_comm) each send runs under the rank's next
    chunk and only what outlasts a chunk's work shows.

    >>> exposed_sends_s(8.0, 0.5), exposed_sends_s(8.0, 0.5, 4, overlap=False), exposed_sends_s(8.0, 0.5, 4)
    (0.5, 2.0, 0.0)
    >>> exposed_sends_s(1.0, 0.5, 4)  # each chunk's 0.25 s of work hides half of its send
    1.0
    """
    if virtual_stages <= 1 or not overlap:
        return virtual_stages * send_s
    return virtual_stages * max(0.0, send_s - compute_s / virtual_stages)


def bubble_fraction(pp: int, microbatches: int, virtual_stages: int = 1) -> float:
    """Idle time over work for equal stages: (pp - 1) / (v * m) (Narayanan et al. 2021, Sec. 2.2).

    >>> bubble_fraction(8, 16), bubble_fraction(8, 16, 4)
    (0.4375, 0.109375)
    """
    return (pp - 1) / (virtual_stages * microbatches)


def in_flight(schedule: str, pp: int, stage: int, microbatches: int, virtual_stages: int = 1) -> float:
    """Microbatches' worth of this rank's activations kept at the peak (module docstring).

    >>> in_flight("1f1b", 4, 0, 8), in_flight("gpipe", 4, 0, 8), in_flight("interleaved", 4, 0, 8, 2)
    (4, 8, 5.5)
    """
    if schedule == "gpipe":
        return microbatches
    if schedule == "interleaved" and virtual_stages > 1:
        v = virtual_stages
        chunks = min((pp - stage - 1) * 2 + (v - 1) * pp + 1, microbatches * v)
        return chunks / v
    return min(pp - stage, microbatches)


def p2p_factor(schedule: str, virtual_stages: int = 1) -> int:
    """Pipeline sends per microbatch relative to 1F1B: v with interleaving (Sec. 2.2.2), else 1."""
    return virtual_stages if schedule == "interleaved" else 1


def schedule_problem(schedule: str, pp: int, microbatches: int, virtual_stages: int, blocks: int) -> str | None:
    """Why a schedule cannot run (None when it can): interleaving needs v > 1, pp > 1, m a multiple
    of pp (Megatron-LM's requirements) and the blocks dealt into pp * v chunks (`chunk_sizes`).

    >>> schedule_problem("interleaved", 4, 6, 2, 32)
    'interleaved 1F1B needs the microbatches (6) to be a multiple of pp=4'
    """
    if schedule not in SCHEDULES:
        return f"unknown pipeline schedule {schedule!r}; use one of {', '.join(SCHEDULES)}"
    if schedule != "interleaved":
        return None if virtual_stages == 1 else f"schedule {schedule} has one virtual stage per rank, got {virtual_stages}"
    if virtual_stages < 2 or pp < 2:
        return f"interleaved 1F1B needs pp >= 2 and virtual stages >= 2, got pp={pp}, v={virtual_stages}"
    if microbatches % pp:
        return f"interleaved 1F1B needs the microbatches ({microbatches}) to be a multiple of pp={pp}"
    return chunk_problem(blocks, pp, virtual_stages)


def chunk_sizes(blocks: int, chunks: int) -> list[int] | None:
    """Blocks per chunk in model order (module docstring): equal, or ceil(blocks / chunks) each with the
    shortfall taken from the first and the last chunk (the last, which holds the LM head, gives up the
    larger half); None where the shortfall exceeds what those two chunks hold.

    >>> chunk_sizes(8, 4), chunk_sizes(10, 4), chunk_sizes(28, 32)
    ([2, 2, 2, 2], [2, 3, 3, 2], None)
    >>> llama3 = chunk_sizes(126, 16 * 8)  # Llama 3 405B over pp 16, v 8: the end chunks hold embedding and head
    >>> llama3[:2], llama3[-2:], sum(llama3)
    ([0, 1], [1, 0], 126)
    """
    if chunks < 1:
        return None
    per = -(-blocks // chunks)
    short = per * chunks - blocks
    if short > 2 * per:
        return None
    sizes = [per] * chunks
    sizes[0] -= short // 2
    sizes[-1] -= short - short // 2
    return sizes if min(sizes[1:-1], default=1) >= 1 else None


def chunk_problem(blocks: int, pp: int, virtual_stages: int) -> str | None:
    """Why `blocks` cannot be dealt into pp * v chunks (`chunk_sizes`), None when they can.

    >>> chunk_problem(126, 16, 4) is None, chunk_problem(28, 8, 4)[:69]
    (True, 'interleaved 1F1B needs the 28 blocks to split into pp x v = 32 chunks')
    """
    if chunk_sizes(blocks, pp * virtual_stages) is None:
        return (f"interleaved 1F1B needs the {blocks} blocks to split into pp x v = {pp * virtual_stages} chunks of "
                "equal size, or equal but for fewer on the first and the last chunk")
    return None


def runnable_virtual_stages(blocks: int, pp: int) -> list[int]:
    """The v >= 2 whose pp * v chunks `blocks` can be dealt into (`chunk_problem`), for refusals to name.

    >>> runnable_virtual_stages(126, 16), runnable_virtual_stages(32, 4)
    ([2, 4, 8], [2, 3, 4, 8])
    """
    return [v for v in range(2, blocks // max(pp, 1) + 2) if chunk_problem(blocks, pp, v) is None]


def chunk_cuts(block_layers: list[int], num_layers: int, chunks: int) -> tuple[int, ...]:
    """Layer boundaries of `chunks` virtual stages of `chunk_sizes` blocks (embedding in the first, head
    in the last); chunk c runs on rank c % pp as its (c // pp)-th virtual stage (Megatron-LM's assignment).
    A chunk of no blocks holds only the embedding (or the head).

    >>> chunk_cuts([1, 2, 3, 4], 6, 4), chunk_cuts([1, 2, 3, 4, 5, 6], 8, 4)
    ((0, 2, 3, 4, 6), (0, 2, 4, 6, 8))
    """
    sizes = chunk_sizes(len(block_layers), chunks)
    if sizes is None:
        raise ValueError(chunk_problem(len(block_layers), chunks, 1))
    ends = list(itertools.accumulate(sizes))[:-1]
    return (0, *(block_layers[e - 1] + 1 if e else block_layers[0] for e in ends), num_layers)


def rank_chunks(cuts: tuple[int, ...], pp: int) -> list[list[tuple[int, int]]]:
    """[start, end) layer ranges of each rank's virtual stages, round-robin over ranks.

    >>> rank_chunks((0, 2, 3, 4, 6), 2)
    [[(0, 2), (3, 4)], [(2, 3), (4, 6)]]
    """
    ranges = list(itertools.pairwise(cuts))
    return [ranges[s::pp] for s in range(pp)]


def stage_order(schedule: str, pp: int, stage: int, microbatches: int, virtual_stages: int = 1) -> list[str]:
    """One rank's compute order as tokens "F3" / "B3" (microbatch 3), "F3.1" with virtual stage 1.

    Interleaved order as Megatron-LM: forwards walk microbatches in groups of pp through chunks
    0..v-1, backwards the same groups through chunks v-1..0; warm-up, then one forward one backward.

    >>> stage_order("1f1b", 2, 0, 3)
    ['F0', 'F1', 'B0', 'F2', 'B1', 'B2']
    >>> stage_order("interleaved", 2, 1, 2, 2)
    ['F0.0', 'F1.0', 'F0.1', 'B0.1', 'F1.1', 'B1.1', 'B0.0', 'B1.0']
    """
    m = max(microbatches, 1)
    if schedule == "gpipe":
        return [f"F{i}" for i in range(m)] + [f"B{i}" for i in range(m)]
    if schedule != "interleaved" or virtual_stages == 1:
        fwd, bwd, warmup = [f"F{i}" for i in range(m)], [f"B{i}" for i in range(m)], min(pp - stage, m) - 1
    else:
        v, total = virtual_stages, m * virtual_stages

        def unit(k: int, backward: bool) -> str:
            group, within = divmod(k, pp * v)
            chunk = within // pp
            return f"{'B' if backward else 'F'}{group * pp + within % pp}.{v - 1 - chunk if backward else chunk}"

        fwd, bwd = [unit(k, False) for k in range(total)], [unit(k, True) for k in range(total)]
        warmup = min((pp - stage - 1) * 2 + (v - 1) * pp, total)
    order = fwd[:warmup]
    rest = fwd[warmup:]
    for i, b in enumerate(bwd):
        if i < len(rest):
            order.append(rest[i])
        order.append(b)
    return order
