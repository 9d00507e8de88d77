"""Serving simulator: workloads, per-iteration cost, scheduling policies, an iteration-level
discrete-event simulator and SLO metrics (TTFT, TPOT, goodput, energy, MoE expert bytes).

Modules, in data-flow order:
- `workload`        requests (arrival, prompt, output tokens, prefix hash ids) from traces, distributions, Poisson/Gamma arrivals
- `prefixes`        workloads with shared prefixes: chat sessions with system prompts and multi-turn history
- `iteration_cost`  time of one engine iteration with a mixed batch, from per-token-count tables of the cost model
- `engine_profile`  iteration times from a measured engine profile instead (DistServe-style fits, or one mixed-iteration fit)
- `engine_fit`      fitting a mixed-iteration profile to measured rows (`planner calibrate --engine vllm`)
- `policies`        prefill-first (vLLM baseline), chunked (Sarathi-Serve), layered (G groups), disaggregated xPyD
- `prefix_cache`    automatic prefix caching / radix cache of one instance (shared blocks, LRU eviction)
- `schedulers`      one scheduling step per policy
- `simulator`       continuous batching with a KV-cache capacity in blocks (wait, or preempt by recompute)
- `deployment`      replicas and disaggregated deployments, engine profiles per kind of deployment
- `engine_settings` what a plan records for the engine scripts (limits, KV pool, block size)
- `metrics`         latency percentiles, throughput, goodput by rate search, energy per token, prefix hit rate
"""
