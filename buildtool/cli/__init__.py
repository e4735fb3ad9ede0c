"""`buildtool` command line. Each module in this package adds one subcommand through `register()`,
so stages plug in without touching this file."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from rich.markup import escape

from buildtool import __version__
from buildtool.console import err
from buildtool.errors import UserError


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code = func(args)
    except UserError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
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
    return 141
