"""Drive a running vLLM server with vLLM's own benchmark client (`vllm.benchmarks.serve`), run after run.

Runs inside the vLLM environment, as a script (standard library and vLLM only). It reads one JSON object on
stdin: {"url": "http://127.0.0.1:PORT", "model": DIR, "runs": [{"trace": JSONL, "result": JSON,
"max_concurrency": N or null, "num_prompts": N}]}. Each run replays a timed trace (`--dataset-name timed_trace`,
its own timestamps: `--self-timed`; hash ids of 16-token blocks give prompts their shared prefixes) with
`--ignore-eos` (every request produces exactly its output length) and saves the client's per-request results
(`--save-result --save-detailed`: ttfts, itls, start_times, latencies, input and output lengths).
"""

import argparse
import json
import sys
from pathlib import Path


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
    main(parser.parse_args(argv))


def main_runs() -> None:
    request = json.load(sys.stdin)
    for spec in request["runs"]:
        run(request["url"], request["model"], spec["trace"], spec["result"], spec.get("max_concurrency"),
            spec["num_prompts"])


if __name__ == "__main__":
    main_runs()
