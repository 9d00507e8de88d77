"""Hold engine arguments to vLLM's own parser and engine-config validation (and router arguments to vllm-router's).

Runs inside the vLLM environment (tools/make_vllm_env.sh), as a script: it imports only the standard library,
vLLM, transformers and vllm_router. It reads one JSON object on stdin:

    {"models": {KEY: {"config_class": "LlamaConfig", "values": {...}} | {"path": DIR}},
     "cases": [{"name": ..., "model": KEY, "args": [...], "cpu": bool}],  # the arguments of `vllm serve MODEL ...`
     "routers": [{"name": ..., "args": [...]}]}                       # the arguments of `vllm-router ...`

and writes one JSON object into the file named by its "output" key (vLLM logs on stdout):
{"cases": [{"name", "ok", "error", "resolved"}], "routers": [{"name", "ok", "error"}]}.
A case passes when the OpenAI server's own parser (`vllm.entrypoints.launchers.cli_args.make_arg_parser`,
what `python -m vllm.entrypoints.openai.api_server` and `vllm serve` use) parses `--model DIR ARGS`, its
`validate_parsed_serve_args` accepts them and `AsyncEngineArgs.from_cli_args(...).create_engine_config()` builds
the engine config (tokenizer not loaded: the checkpoints are config-only), and, for an instance on CPUs,
its block size is one vLLM's CPU attention kernels take (`select_common_block_size`, as the CPU worker
checks); `resolved` holds the engine's resolved limits. A model given by config values is written as a
config.json with transformers (no weights, nothing downloaded).
"""

import contextlib
import io
import json
import sys
import tempfile
import traceback


def _model_dirs(models: dict, root: str) -> dict:
    import transformers

    dirs = {}
    for key, model in models.items():
        if "path" in model:
            dirs[key] = model["path"]
            continue
        config = getattr(transformers, model["config_class"])(**model["values"])
        config.architectures = [model["architecture"]]
        folder = f"{root}/{key}"
        config.save_pretrained(folder)
        dirs[key] = folder
    return dirs


def _resolved(config) -> dict:
    s, c, m, p = config.scheduler_config, config.cache_config, config.model_config, config.parallel_config
    return {"max_model_len": m.max_model_len, "max_num_seqs": s.max_num_seqs,
            "max_num_batched_tokens": s.max_num_batched_tokens, "enable_chunked_prefill": s.enable_chunked_prefill,
            "enable_prefix_caching": c.enable_prefix_caching, "block_size": c.block_size,
            "kv_cache_memory_bytes": c.kv_cache_memory_bytes, "tensor_parallel_size": p.tensor_parallel_size,
            "pipeline_parallel_size": p.pipeline_parallel_size, "data_parallel_size": p.data_parallel_size,
            "enable_expert_parallel": bool(p.enable_expert_parallel), "quantization": m.quantization,
            "dtype": str(m.dtype), "kv_cache_dtype": c.cache_dtype, "watermark": getattr(s, "watermark", None),
            "kv_transfer_config": config.kv_transfer_config is not None}


def _cpu_kernels(config) -> None:
    """What vLLM's CPU worker checks when it builds the KV cache: a block size its attention kernels take."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
    from vllm.v1.worker.utils import select_common_block_size

    select_common_block_size(config.cache_config.block_size, [CPUAttentionBackend])


def check_case(args: list, model_dir: str, cpu: bool = False) -> dict:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parser = make_arg_parser(FlexibleArgumentParser())
            namespace = parser.parse_args(["--model", model_dir, "--skip-tokenizer-init", *args])
        validate_parsed_serve_args(namespace)
        config = AsyncEngineArgs.from_cli_args(namespace).create_engine_config()
        if cpu:
            _cpu_kernels(config)
        return {"ok": True, "error": None, "resolved": _resolved(config)}
    except SystemExit:
        return {"ok": False, "error": errors.getvalue().strip().splitlines()[-1:], "resolved": None}
    except Exception as error:  # the engine's own validation refused it
        return {"ok": False, "error": f"{type(error).__name__}: {error}", "resolved": None,
                "trace": traceback.format_exc(limit=3)}


def check_router(args: list) -> dict:
    from vllm_router.launch_router import parse_router_args

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            router_args = parse_router_args(list(args))
        router_args._validate_router_args()
        return {"ok": True, "error": None}
    except SystemExit:
        return {"ok": False, "error": errors.getvalue().strip().splitlines()[-1:]}
    except Exception as error:
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}


def main() -> None:
    request = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as root:
        dirs = _model_dirs(request.get("models", {}), root)
        cases = [{"name": case["name"], **check_case(case["args"], dirs[case["model"]], case.get("cpu", False))}
                 for case in request.get("cases", [])]
    routers = [{"name": r["name"], **check_router(r["args"])} for r in request.get("routers", [])]
    with open(request["output"], "w") as handle:
        handle.write(json.dumps({"cases": cases, "routers": routers}) + "\n")


if __name__ == "__main__":
    main()
