"""Serving simulator: workloads, per-iteration cost, scheduling policies, an iteration-level
discrete-event simulator and SLO metrics (TTFT, TPOT, goodput, energy, MoE expert bytes).

Modules, in data-flow order:
- `workload`        requests (arrival, prompt, output tokens) from traces, distributions, Poisson/Gamma arrivals
- `iteration_cost`  time of one engine iteration with a mixed batch, from per-token-count tables of the cost model
- `policies`        prefill-first (vLLM baseline), chunked (Sarathi-Serve), layered (G groups), disaggregated xPyD
- `simulator`       continuous batching with a KV-cache capacity in blocks (wait, or preempt by recompute)
- `metrics`         latency percentiles, throughput, goodput by rate search, energy per token
"""
