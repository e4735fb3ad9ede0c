"""`buildtool` command line. Each module in this package adds one subcommand through `register()`,
so stages plug in without touching this file. What every command shares is added here: `-v`/`-q`, the
meaning of `--json` (the result as JSON on stdout, nothing else there; errors too), and the exit codes of
the error class tree in buildtool.errors (docs/cli.md)."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from rich.markup import escape

from buildtool import __version__
from buildtool.console import err, print_json, set_verbosity
from buildtool.errors import EXIT_INTERRUPTED, EXIT_PIPE_CLOSED, BuildtoolError, UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buildtool",
        description="Build, verify and serve wheels for causal-conv1d, mamba-ssm and VMamba selective_scan.",
    )
    parser.add_argument("--version", action="version", version=f"buildtool {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    for command in sub.choices.values():
        _add_common_options(command)
    return parser


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    """-v/--verbose and -q/--quiet on every command (the leaves of nested ones: `env create`)."""
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if nested:
        for action in nested:
            for child in action.choices.values():
                _add_common_options(child)
        return
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="more detail (repeatable); the command's own details in full")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="no progress or notes on stderr: only the result and errors")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return UserError.exit_code
    set_verbosity(getattr(args, "verbose", 0) or 0, quiet=bool(getattr(args, "quiet", False)))
    try:
        code = func(args)
    except BuildtoolError as exc:
        set_verbosity(0, quiet=False)  # an error is shown even with -q
        if getattr(args, "json", False) is True:
            print_json(exc.as_dict())
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _reader_went_away()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_went_away()
    return int(code or 0)


def _reader_went_away() -> int:
    """`buildtool matrix --format ids | head`: the reader closed the pipe. Like a shell tool, stop quietly
    with 128 + SIGPIPE; stdout goes to /dev/null so the interpreter's own flush at exit cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE_CLOSED
