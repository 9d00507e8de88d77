"""Hold engine arguments to SGLang's own argument parser (and router arguments to sglang-router's).

Runs inside the SGLang argument-parser environment (tools/make_sglang_env.sh), as a script (standard library,
sglang, sglang_router). Input and output as `vllm_check`: a JSON request on stdin with "cases" (arguments of
`python -m sglang.launch_server --model-path MODEL ...`), "routers" (arguments of
`python -m sglang_router.launch_router ...`) and "output" (the file the JSON result goes to).

What passes here: `sglang.srt.server_args.prepare_server_args` parses the arguments (every flag known, every
value of its type and among its choices); router arguments pass `parse_router_args` and
`RouterArgs._validate_router_args`. What cannot run here: `ServerArgs.resolve_once`, SGLang's validation after
parsing, which imports the multimodal model configs and with them a torchvision build matching torch; none
exists for the CPU torch on this machine (SGLang 0.5.23 wants torch 2.14.1 with CUDA).
"""

import contextlib
import io
import json
import sys


def check_case(args: list, model: str) -> dict:
    from sglang.srt.server_args import prepare_server_args

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parsed = prepare_server_args(["--model-path", model, *args])
        keys = ("tp_size", "pp_size", "context_length", "max_running_requests", "max_total_tokens", "page_size",
                "chunked_prefill_size", "mem_fraction_static", "schedule_policy", "enable_mixed_chunk", "dtype",
                "quantization", "host", "disaggregation_mode", "ep_size", "max_prefill_tokens")
        return {"ok": True, "error": None, "resolved": {k: getattr(parsed, k, None) for k in keys}}
    except SystemExit:
        return {"ok": False, "error": errors.getvalue().strip().splitlines()[-1:], "resolved": None}
    except Exception as error:
        return {"ok": False, "error": f"{type(error).__name__}: {error}", "resolved": None}


def check_router(args: list) -> dict:
    from sglang_router.launch_router import parse_router_args

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
    cases = [{"name": c["name"], **check_case(c["args"], c.get("model_path", "model"))} for c in request.get("cases", [])]
    routers = [{"name": r["name"], **check_router(r["args"])} for r in request.get("routers", [])]
    with open(request["output"], "w") as handle:
        handle.write(json.dumps({"cases": cases, "routers": routers}) + "\n")


if __name__ == "__main__":
    main()
