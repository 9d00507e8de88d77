"""Render a plan's context through the jinja2 templates into the files of a launch directory.

Templates only render (StrictUndefined: a missing context key is an error, never an empty string);
`run_plan.py` is the header, an import of the runtime package and the plan's `PLAN` literal; the
package (`codegen/runtime/*.py`) travels beside it as `aot_runtime/`, byte for byte.
Same plan, same bytes: the context is sorted and nothing time- or machine-dependent goes in.
"""

from __future__ import annotations

import hashlib
import json
import math
import pprint
import shlex
from pathlib import Path

import jinja2

from codegen.context import build_context
from codegen.torchtitan import TORCHTITAN_VERSION, arg_groups, torchtitan_job
from ir.errors import UserError
from ir.fileio import write_atomic

TEMPLATES = Path(__file__).parent / "templates"
RUNTIME_DIR = Path(__file__).parent / "runtime"
RUNTIME_PACKAGE = "aot_runtime"  # the runtime's package name in a launch directory


def check_literal(value, where: str = "PLAN"):
    """`value` unchanged if it is plain data (dicts with string keys, lists, strings, finite numbers, bools,
    None), whose Python repr is a literal; a UserError naming the offending entry otherwise.

    >>> check_literal({"a": [1, 2.5, None]})
    {'a': [1, 2.5, None]}
    >>> check_literal({"a": {1j}})
    Traceback (most recent call last):
    ir.errors.UserError: cannot write PLAN['a'] ({1j}) into a generated program: not plain data; regenerate the plan
    """
    ok = value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UserError(f"cannot write key {key!r} of {where} into a generated program; regenerate the plan")
            check_literal(item, f"{where}[{key!r}]")
        return value
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_literal(item, f"{where}[{i}]")
        return value
    if not ok:
        raise UserError(f"cannot write {where} ({value!r}) into a generated program: not plain data; regenerate the plan")
    return value


def _pyrepr(value) -> str:
    return pprint.pformat(check_literal(value), width=110, sort_dicts=True, compact=True)


def compact_ranks(ranks: list[list[int]]):
    """A stage's rank grid as {first, rows, cols, row_step, col_step} when it is regular (what the runtime's
    `expand_ranks` reads back), else the grid itself: keeps run_plan.py short for thousands of ranks.

    >>> compact_ranks([[0, 1], [2, 3]])
    {'first': 0, 'rows': 2, 'cols': 2, 'row_step': 2, 'col_step': 1}
    >>> compact_ranks([[0, 2], [1, 5]])
    [[0, 2], [1, 5]]
    """
    first, rows, cols = ranks[0][0], len(ranks), len(ranks[0])
    row_step = ranks[1][0] - first if rows > 1 else cols
    col_step = ranks[0][1] - first if cols > 1 else 1
    grid = {"first": first, "rows": rows, "cols": cols, "row_step": row_step, "col_step": col_step}
    regular = all(len(row) == cols and all(r == first + d * row_step + t * col_step for t, r in enumerate(row))
                  for d, row in enumerate(ranks))
    return grid if regular else ranks


PROGRAM_STAGE_KEYS = ("layers", "chunks", "ranks")  # what the runtime reads of a stage (the README shows the rest)


def program_plan(runtime: dict) -> dict:
    """The PLAN literal of run_plan.py: the runtime context, stages reduced to what the runtime reads, with
    compact rank grids (one line per stage however many ranks)."""
    stages = [{key: (compact_ranks(st[key]) if key == "ranks" else st[key]) for key in PROGRAM_STAGE_KEYS if key in st}
              for st in runtime["stages"]]
    return {**runtime, "stages": stages}


def shell_word(value) -> str:
    """One shell word for `value` (the `sh` filter): ints and floats as written, strings quoted (shlex);
    bools, None, containers and strings holding control characters (newlines, NUL) are refused, since a
    generated script must never run what a plan file smuggles into a value.

    >>> shell_word(2048), shell_word("m$(touch PWNED)"), shell_word("Llama-3 8B")
    ('2048', "'m$(touch PWNED)'", "'Llama-3 8B'")
    >>> shell_word("a;" + chr(10) + "touch x")
    Traceback (most recent call last):
    ir.errors.UserError: cannot put 'a;\\ntouch x' into a shell script: it holds a control character; rename it
    """
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float, str)):
        raise UserError(f"cannot put {value!r} into a shell script: expected a number or a string")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"cannot put {value!r} into a shell script: not a finite number")
    if isinstance(value, (int, float)):
        return repr(value)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise UserError(f"cannot put {value!r} into a shell script: it holds a control character; rename it")
    return shlex.quote(value)


def one_line(value) -> str:
    """`value` as text for a comment or a README line (the `line` filter): control characters refused.

    >>> one_line("llama-3-8b")
    'llama-3-8b'
    """
    text = str(value)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UserError(f"cannot write {text!r} into a generated file: it holds a control character; rename it")
    return text


def refuse_control_characters(value, where: str = "plan") -> None:
    """UserError naming the first string of a plan that holds a control character (a newline in a model name
    would end a comment line of a generated script and start a command): refused before any template renders,
    whatever the templates quote.

    >>> refuse_control_characters({"inputs": {"model": "m" + chr(10) + "touch PWNED"}})
    Traceback (most recent call last):
    ir.errors.UserError: plan.inputs.model holds a control character ('m\\ntouch PWNED'); nothing was generated
    """
    if isinstance(value, str):
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise UserError(f"{where} holds a control character ({value[:60]!r}); nothing was generated")
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_control_characters(str(key), f"{where} key")
            refuse_control_characters(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            refuse_control_characters(item, f"{where}[{i}]")


def environment() -> jinja2.Environment:
    """The jinja2 environment: templates folder, StrictUndefined, trimmed blocks, `pyrepr`, `sh` and `line` filters."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters["pyrepr"] = _pyrepr
    env.filters["sh"] = shell_word
    env.filters["line"] = one_line
    return env


def runtime_files() -> dict[str, str]:
    """The runtime package as launch-directory files: `aot_runtime/<module>.py` -> source, byte for byte."""
    return {f"{RUNTIME_PACKAGE}/{path.name}": path.read_text() for path in sorted(RUNTIME_DIR.glob("*.py"))}


def runtime_hash() -> str:
    """sha256 (first 16 hex digits) of the runtime package's files (what the codegen goldens pin)."""
    digest = hashlib.sha256()
    for name, text in runtime_files().items():
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:16]


def render_plan(plan: dict) -> dict[str, str]:
    """File name -> text of every file emitted for `plan` (a plan dict).

    >>> import planner
    >>> files = render_plan(planner.plan("tiny-llama", "2xcpu", "train", batch=4, seq_len=16, pp=2).to_dict())
    >>> sorted(name for name in files if "/" not in name)
    ['README.md', 'launch.sh', 'plan.json', 'run_plan.py']
    >>> files["run_plan.py"].startswith("# Generated by aot-planner")
    True
    """
    refuse_control_characters(plan)
    env = environment()
    files = {"plan.json": json.dumps(plan, sort_keys=True, indent=1, allow_nan=False) + "\n"}
    if isinstance(plan.get("decision"), dict) and plan["decision"].get("kind") == "fleet":
        from codegen.context import check_format
        from codegen.fleet import render_fleet

        check_format(plan)
        return dict(sorted({**files, **render_fleet(plan, env)}.items()))
    job, titan_reason = torchtitan_job(plan) if plan["decision"].get("kind") == "train" else (None, None)
    try:
        context = build_context(plan)
    except UserError as exc:  # the own runtime cannot run it: torchtitan alone, if it can
        if job is None:
            raise
        return dict(sorted({**files, **_torchtitan_files(env, plan, job, str(exc))}.items()))
    extra = {"runtime_package": RUNTIME_PACKAGE, "program_plan": program_plan(context["runtime"]),
             "titan": {"job": job, "reason": titan_reason, "version": TORCHTITAN_VERSION},
             "plan_dtype": plan["inputs"].get("dtype", "bf16"), "plan_zero": plan["decision"].get("zero_stage", 0)}
    program = context["program_error"] is None  # else a serving plan the own runtime cannot run: engine scripts only
    for name in ("run_plan.py", "launch.sh", "README.md") if program else ("README.md",):
        files[name] = env.get_template(f"{name}.j2").render(**context, **extra)
    if program:
        files.update(runtime_files())
    if job is not None:
        files.update(_torchtitan_files(env, plan, job, None, header=context["header"]))
    if context["serving"] is not None:
        for name in ("serve_vllm.sh", "serve_sglang.sh"):
            files[name] = env.get_template(f"{name}.j2").render(**context)
    return dict(sorted(files.items()))


def _torchtitan_files(env: jinja2.Environment, plan: dict, job, program_error: str | None,
                      header: dict | None = None) -> dict[str, str]:
    """train_torchtitan.sh (and torchtitan_plan.py where the job needs its own config function); with
    `program_error` (the own runtime cannot run the plan) also the README, which says so."""
    from codegen.context import check_format, plan_header

    check_format(plan)
    header = header or plan_header(plan)
    common = {"header": header, "job": job, "titan_version": TORCHTITAN_VERSION}
    files = {"train_torchtitan.sh": env.get_template("train_torchtitan.sh.j2").render(
        **common, arg_groups=arg_groups(job.args))}
    if job.registry:
        files["torchtitan_plan.py"] = env.get_template("torchtitan_plan.py.j2").render(**common, registry=job.registry)
    if program_error:
        files["README.md"] = env.get_template("README_torchtitan.md.j2").render(**common, program_error=program_error,
                                                                                plan=plan)
    return files


UNVERIFIED = ("NOT VERIFIED: generated with --skip-verify (Python: verify=False); this plan's claims were not "
              "checked. Run `planner verify plan.json` before trusting it.")


def mark_unverified(files: dict[str, str]) -> dict[str, str]:
    """Every generated file but plan.json and the runtime package says it was rendered from an unverified plan:
    a comment line after a script's `#!` line (or first), a note on top of a Markdown file.

    >>> mark_unverified({"a.sh": "#!/bin/sh\\necho\\n", "plan.json": "{}"})["a.sh"].splitlines()[1][:16]
    '# NOT VERIFIED: '
    """
    out = {}
    for name, text in files.items():
        if name.endswith(".md"):
            text = f"> **{UNVERIFIED}**\n\n{text}"
        elif name.endswith((".sh", ".py")) and "/" not in name:  # the runtime package stays byte for byte
            head, sep, rest = text.partition("\n") if text.startswith("#!") else ("", "", text)
            text = f"{head}{sep}# {UNVERIFIED}\n{rest}"
        out[name] = text
    return out


def write_plan_dir(plan: dict, out_dir: str | Path, unverified: bool = False) -> list[Path]:
    """Render `plan` and write its files atomically into `out_dir` (created if missing); `unverified`: the
    files say the plan was not verified (`mark_unverified`). Rendering fails before anything is written."""
    folder = Path(out_dir)
    if not str(out_dir).strip():
        raise UserError("the output folder name is empty; give a folder with -o")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write into {folder}: it is a file; give a folder with -o")
    files = render_plan(plan)
    if unverified:
        files = mark_unverified(files)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {folder}: {exc.strerror}") from None
    written = []
    for name, text in files.items():  # scripts are executable (mode set before the file appears)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        written.append(write_atomic(folder / name, text, executable=name.endswith(".sh")))
    return written
