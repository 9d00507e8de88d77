"""One scheduling step per policy (`policies`) on a simulated instance (`simulator`): which requests an engine
iteration carries and what it costs. Each step returns False when it has nothing to run (the simulator then
advances decode-only iterations or idles).

- `prefill_first_step`: vLLM v0 without chunked prefill: waiting prompts FCFS into a prefill-only iteration,
  up to `max_batched_tokens` tokens to compute (a prompt's cached prefix is not computed) and `max_num_seqs`.
- `chunked_step`: vLLM v1 / Sarathi-Serve: every running decode, then prompt chunks FCFS (partially computed
  prompts first) in the remaining token budget; a new prompt starts after its cached prefix.
- `layered_step`: whole prompts advance one layer group per iteration beside all running decodes.
- `decode_only_step`: a disaggregated decode instance admits requests whose KV arrived.
"""

from __future__ import annotations

from cost_models.serving.policies import DecodeOnly, Layered, PrefillFirst, group_sizes, groups_for


def prefill_first_step(st) -> bool:
    """One prefill-only iteration if a prompt can be admitted; False otherwise."""
    pol, w = st.policy, st.waiting
    batch, tokens, pairs, cached = [], 0, 0.0, 0
    while w and len(batch) + st.n < pol.max_num_seqs:
        if not st.admit(w[0], pol.max_batched_tokens - tokens if batch else None):
            break
        i = w.popleft()
        batch.append(i)
        hit = st.done_pf[i]
        q = st.need[i] - hit
        tokens += q
        pairs += st.cost.attention_pairs(q, hit)
        cached += hit
    if not batch:
        return False
    st.note_kv()
    st.account(st.cost.time(prefill_tokens=tokens, prefill_pairs=pairs, prefill_kv_read=cached, prompts_done=len(batch)),
               tokens, st.cost.moe.bytes_read(tokens))
    st.r.prefill_tokens += tokens
    for i in batch:
        st.prefilled(i)
    return True


def chunked_step(st) -> bool:
    """One mixed iteration: all decodes plus prompt chunks up to the token budget."""
    pol, cost, active = st.policy, st.cost, st.active
    st.make_room()
    room = pol.budget - st.n
    running_limit = min(pol.max_num_seqs, pol.budget)  # decodes take budget too (vLLM: budget >= max_num_seqs)
    chunks = []  # (request, chunk tokens, done before)
    k = 0
    while room > 0:
        if k < len(active):
            i = active[k]
            k += 1
        elif st.waiting and st.n + len(active) < running_limit and st.admit(st.waiting[0]):
            i = st.waiting.popleft()
            active.append(i)
            k += 1
        else:
            break
        q = min(st.need[i] - st.done_pf[i], room)
        chunks.append((i, q, st.done_pf[i]))
        room -= q
    if not chunks:
        return False
    n = st.n
    tokens = sum(q for _, q, _ in chunks)
    pairs = sum(cost.attention_pairs(q, d) for _, q, d in chunks)
    kv_read = sum(d for _, _, d in chunks)
    finished = [i for i, q, d in chunks if q + d == st.need[i]]
    st.note_kv()
    t = cost.time(n, st.S, tokens, pairs, kv_read, len(finished))
    st.account(t, n + tokens, cost.moe.bytes_read(n + tokens), emits=bool(n or finished))
    st.r.prefill_tokens += tokens
    st.r.decode_tokens += n
    if n:
        st.step += 1
        st.S += n
    for i, q, d in chunks:
        st.done_pf[i] = d + q
    for i in finished:
        active.remove(i)
        st.prefilled(i)
    st.complete()
    return True


def layered_step(st) -> bool:
    """Admit whole prompts and run their G layer-group iterations, each with all running decodes."""
    pol, cost = st.policy, st.cost
    batch, tokens, pairs = [], 0, 0.0
    while st.waiting and len(batch) + st.n < pol.max_num_seqs:
        if not st.admit(st.waiting[0], pol.max_prefill_tokens - tokens if batch else None):
            break
        i = st.waiting.popleft()
        batch.append(i)
        tokens += st.need[i]
        pairs += cost.attention_pairs(st.need[i], 0)
    if not batch:
        return False
    sizes = group_sizes(cost.num_blocks, pol.groups or groups_for(tokens, cost.num_blocks))
    moe = cost.moe
    moe_per_block = moe.moe_layers / max(cost.num_blocks, 1)
    st.note_kv()
    for g, blocks in enumerate(sizes):
        st.make_room()
        n = st.n
        t = cost.layered_time(n, st.S, tokens, pairs, blocks, g == 0, g == len(sizes) - 1, len(batch))
        experts = moe.bytes_read(n, (cost.num_blocks - blocks) * moe_per_block) + \
            moe.bytes_read(n + tokens, blocks * moe_per_block)
        st.account(t, n + tokens * blocks // max(cost.num_blocks, 1), experts, emits=bool(n) or g == len(sizes) - 1)
        st.r.decode_tokens += n
        if n:
            st.step += 1
            st.S += n
        st.complete()
    st.r.prefill_tokens += tokens
    for i in batch:
        st.prefilled(i)
    return True


def decode_only_step(st) -> bool:
    """Disaggregated decode instance: arrived requests join with their transferred KV."""
    joined = False
    while st.waiting and st.n < st.policy.max_num_seqs and st.fits(st.need[st.waiting[0]]):
        i = st.waiting.popleft()
        st.join(i, st.need[i])
        joined = True
    return joined


def step_function(policy):
    """The step of `policy` (chunked prefill for `Chunked` and any other policy with a `budget`)."""
    return {PrefillFirst: prefill_first_step, Layered: layered_step, DecodeOnly: decode_only_step}.get(
        type(policy), chunked_step)
