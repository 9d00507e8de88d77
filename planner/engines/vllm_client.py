"""Drive a running vLLM server with vLLM's own benchmark client (`vllm.benchmarks.serve`), run after run.

Runs inside the vLLM environment, as a script (standard library and vLLM only). It reads one JSON object on
stdin: {"url": "http://127.0.0.1:PORT", "model": DIR, "runs": [{"trace": JSONL, "result": JSON,
"max_concurrency": N or null, "num_prompts": N}]}. Each run replays a timed trace (`--dataset-name timed_trace`,
its own timestamps: `--self-timed`; hash ids of 16-token blocks give prompts their shared prefixes) with
`--ignore-eos` (every request produces exactly its output length) and saves the client's per-request results
(`--save-result --save-detailed`: ttfts, itls, start_times, latencies, input and output lengths).

Each saved result also gets `engine_metrics`: what the engine itself counted during the run (its /metrics
before and after: `[sum, count]` increments of its time-to-first-token, inter-token, end-to-end, queue,
prefill, per-request time-per-output-token and tokens-per-iteration histograms (the last one's count:
iterations), and its prefix-cache hit and
query counters). The engine's time to first token runs from the request's arrival in the engine (after the HTTP
request is read and the prompt tokenized) to the first token's output processing; the client's also holds the
HTTP exchange and the client's own scheduling.
"""

import argparse
import json
import re
import sys
import urllib.request
from pathlib import Path

HISTOGRAMS = ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
              "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds", "vllm:request_prefill_time_seconds",
              "vllm:request_time_per_output_token_seconds", "vllm:iteration_tokens_total")
COUNTERS = ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total")


def parse_metrics(text: str) -> dict:
    """{histogram: [sum, count], counter: [value, 0]} from Prometheus text, summed over label sets.

    >>> lines = ['vllm:time_to_first_token_seconds_sum{engine="0"} 0.5', 'vllm:time_to_first_token_seconds_sum{engine="1"} 0.25',
    ...          'vllm:time_to_first_token_seconds_count{engine="0"} 20.0', 'vllm:prefix_cache_hits_total 7']
    >>> m = parse_metrics(chr(10).join(lines)); m["vllm:time_to_first_token_seconds"], m["vllm:prefix_cache_hits_total"]
    ([0.75, 20.0], [7.0, 0.0])
    """
    def total(name: str) -> float:
        return sum(float(m.group(1)) for m in re.finditer(r"^" + re.escape(name) + r"(?:\{[^}]*\})? ([0-9.e+-]+)$", text,
                                                          re.MULTILINE))

    return {**{name: [total(name + "_sum"), total(name + "_count")] for name in HISTOGRAMS},
            **{name: [total(name), 0.0] for name in COUNTERS}}


def engine_metrics(url: str) -> dict:
    """`parse_metrics` of the server's /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return parse_metrics(response.read().decode())


def run(url: str, model: str, trace: str, result: str, max_concurrency, num_prompts: int) -> None:
    from vllm.benchmarks.serve import add_cli_args, main

    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    argv = ["--base-url", url, "--model", model, "--dataset-name", "timed_trace", "--dataset-path", trace,
            "--self-timed", "--num-prompts", str(num_prompts), "--ignore-eos", "--temperature", "0",
            "--save-result", "--save-detailed", "--result-dir", str(Path(result).parent),
            "--result-filename", Path(result).name, "--disable-tqdm", "--percentile-metrics", "ttft,tpot,itl,e2el"]
    if max_concurrency:
        argv += ["--max-concurrency", str(max_concurrency)]
    before = engine_metrics(url)
    main(parser.parse_args(argv))
    after = engine_metrics(url)
    saved = json.loads(Path(result).read_text())
    saved["engine_metrics"] = {name: [after[name][0] - before[name][0], after[name][1] - before[name][1]]
                               for name in before}
    Path(result).write_text(json.dumps(saved))


def main_runs() -> None:
    request = json.load(sys.stdin)
    for spec in request["runs"]:
        run(request["url"], request["model"], spec["trace"], spec["result"], spec.get("max_concurrency"),
            spec["num_prompts"])


if __name__ == "__main__":
    main_runs()
