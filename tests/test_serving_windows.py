"""Decode and prefill attention of sliding-window layers in the serving cost model: a layer with a window reads at
most its window of each running sequence, and each prompt query attends to at most the window (gemma-3-27b: five
1024-token sliding-window layers per global one; gpt-oss: alternating 128-token windows and full attention), and
the simulator's fast-forwarded decode stretches stay exact across the point where windows fill."""

from __future__ import annotations

import numpy as np
import pytest

import planner
from cost_models.cluster import parse_cluster
from cost_models.serving.deployment import CostCache
from cost_models.serving.iteration_cost import causal_pairs, windowed_pairs
from cost_models.serving.policies import Chunked
from cost_models.serving.simulator import simulate_instance
from cost_models.serving.workload import fixed
from ir.kv_cache import attention_layers_by_window, kv_bytes_per_token_by_window


@pytest.fixture(scope="module")
def gemma():
    return CostCache(planner.capture("gemma-3-27b", seq_len=2048), parse_cluster("1xH100-SXM")).get(1, 1)


def test_window_groups_split_the_cache_bytes(gemma):
    g = gemma.ctx.graph
    by_window, layers = kv_bytes_per_token_by_window(g, 2), attention_layers_by_window(g)
    assert set(by_window) == {0, 1024} and layers[1024] > 4 * layers[0]  # 5:1 local to global
    assert sum(by_window.values()) == pytest.approx(gemma.ctx.kv_bytes_per_token_per_rank())


def test_decode_attention_reads_at_most_the_window_of_each_sequence(gemma):
    (_, read_full, share_full), (w, read_win, share_win) = gemma.decode_groups
    per = [max(gemma._decode_compute * share, read) for share, read in ((share_full, read_full), (share_win, read_win))]
    short = gemma.decode_attention(4, 4 * 500)  # no window full: every cached token of every layer
    assert short == pytest.approx((4 * 500 + 4) * sum(per))
    long = gemma.decode_attention(4, 4 * 20_000)  # windows full: 1024 tokens per sequence in the local layers
    assert long == pytest.approx((4 * 20_000 + 4) * per[0] + 4 * w * per[1])
    assert long < (4 * 20_000 + 4) * sum(per) / 3  # most layers are local: far below reading everything
    slope, until = gemma.decode_attention_slope(4, 4 * 500)
    assert slope == pytest.approx(sum(per)) and until == 4 * w - (4 * 500 + 4)
    assert gemma.decode_attention_slope(4, 4 * 20_000) == (pytest.approx(per[0]), float("inf"))


def test_fast_forward_matches_stepping_across_window_fills(gemma):
    w = fixed(6, 900, 400, rate=50.0, seed=1)  # contexts cross the 1024-token window while decoding
    fast = simulate_instance(gemma, Chunked(2048), w)
    slow = simulate_instance(gemma, Chunked(2048), w, fast_forward=False)
    assert np.allclose(fast.finish_s, slow.finish_s, rtol=1e-9) and fast.decode_tokens == slow.decode_tokens


def test_prefill_pairs_of_local_layers_stop_growing_at_the_window(gemma):
    (_, _, share_full), (w, _, share_win) = gemma.decode_groups
    assert gemma.attention_pairs(512, 0) == pytest.approx(causal_pairs(512, 0))  # shorter than the window
    long = gemma.attention_pairs(8192, 0)
    assert long == pytest.approx(share_full * causal_pairs(8192, 0) + share_win * (causal_pairs(w, 0) + (8192 - w) * w))
    assert long < causal_pairs(8192, 0) / 2.5  # five local layers per global one: far fewer pairs
    # a chunk after a long cached prefix: the local layers' queries all see exactly the window
    assert gemma.attention_pairs(2048, 30_000) == pytest.approx(share_full * causal_pairs(2048, 30_000)
                                                                + share_win * 2048 * w)
    # chunking does not change the pairs: two halves add up to the whole prompt
    assert windowed_pairs(4096, 0, w) + windowed_pairs(4096, 4096, w) == windowed_pairs(8192, 0, w)


def test_long_prompts_of_a_windowed_model_prefill_faster_than_if_every_layer_were_global(gemma):
    """The simulator prices the windowed pairs: a 16K-token prompt's first token comes much sooner than the
    same iterations priced with full causal attention in every layer would allow."""
    w = fixed(1, 16_384, 2, rate=1.0, seed=0)
    ttft = simulate_instance(gemma, Chunked(2048), w).first_token_s[0]
    chunks = [(2048, k * 2048) for k in range(8)]
    causal = sum(gemma.time(prefill_tokens=q, prefill_pairs=causal_pairs(q, d), prefill_kv_read=d,
                            prompts_done=int(d + q == 16_384)) for q, d in chunks)
    windowed = sum(gemma.time(prefill_tokens=q, prefill_pairs=gemma.attention_pairs(q, d), prefill_kv_read=d,
                              prompts_done=int(d + q == 16_384)) for q, d in chunks)
    assert ttft == pytest.approx(windowed, rel=0.02)
    assert windowed < 0.95 * causal  # at 16K tokens attention is a tenth of a 27B model's prefill
