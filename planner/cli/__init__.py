"""The `planner` command line: one click group, one module per command family.

Errors: a `UserError` or a usage mistake prints one line on stderr and exits 2 (so does a plan that does not
verify); Ctrl-C exits 130, SIGTERM during a write 143; an unexpected exception (a bug) prints one line and exits
1 (its traceback only with `--debug`).
"""

from __future__ import annotations

import logging
import sys

import click

from ir.errors import UserError
from ir.fileio import Terminated


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress at INFO level.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(package_name="aot-planner", prog_name="planner")
def cli(debug: bool, verbose: bool, quiet: bool) -> None:
    """aot-planner: ahead-of-time compiler and planner for deploying PyTorch models."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _register() -> None:
    # one import per command family; each module adds its commands to `cli`
    from planner.cli import (  # noqa: F401
        calibrate_cmd,
        codegen_cmd,
        estimate_cmd,
        hardware_cmd,
        inspect_cmd,
        memory_cmd,
        plan_cmd,
        whatif_cmd,
    )


# click >= 8.2 raises this when a group is called with no arguments; older ones exit instead
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", getattr(click.exceptions, "NoArgsIsHelp", ()))


def _fail(message: str, code: int) -> int:
    one_line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    click.echo(f"error: {one_line}", err=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _register()
    odd = next((arg for arg in argv if any(ord(ch) < 32 or ord(ch) == 127 for ch in arg)), None)
    if odd is not None:  # a newline in a model or file name would reach plans and generated scripts
        return _fail(f"argument {odd[:60]!r} holds a control character (newline, tab, escape, NUL); rename or retype it", 2)
    try:
        code = cli.main(args=argv, prog_name="planner", standalone_mode=False)
        if isinstance(code, int):  # click returns the code of an Exit raised by a command
            return code
    except UserError as exc:
        if debug:
            raise
        return _fail(str(exc), 2)
    except _NO_ARGS_IS_HELP as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        return 2
    except click.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        return _fail(f"{exc.format_message()}{where}", 2)
    except click.Abort:
        return _fail("aborted", 130)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Terminated as exc:  # SIGTERM while a file was written: its temporary file is gone, the target untouched
        return _fail("terminated", exc.exit_code)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except OSError as exc:  # the file system refused a path the user gave: too long, no permission, no space
        if debug:
            raise
        where = f" ({exc.filename[:80]!s})" if getattr(exc, "filename", None) else ""
        return _fail(f"cannot use a path{where}: {exc.strerror or exc}; check the file names and permissions", 2)
    except Exception as exc:  # a bug: one line unless --debug
        if debug:
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)
    return 0


def run() -> None:
    sys.exit(main())
