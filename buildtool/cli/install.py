"""`buildtool install PKG...`: resolve, download with sha256 check, pip install (torch untouched), import."""

from __future__ import annotations

import argparse
import sys

from rich.markup import escape

from buildtool.cli.resolve import add_target_args, target_from_args
from buildtool.console import err, out, print_json
from buildtool.errors import BuildError
from buildtool.user.envinfo import default_python
from buildtool.user.install import install
from buildtool.user.resolve import load_manifest


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("install", help="install the matched kernel wheels without touching torch")
    p.add_argument("requirements", nargs="+", metavar="PKG[==VER]")
    add_target_args(p)
    p.add_argument("--installer", choices=("pip", "uv"), default="pip",
                   help="which installer puts the wheels and their requirements in (default pip; the log names it)")
    p.add_argument("--pip-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the installer's install command (repeatable)")
    p.add_argument("--no-import-check", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    manifest, base = load_manifest(args.index, args.manifest)
    _, target = target_from_args(args)
    index_url = base + "simple/" if base.startswith(("http://", "https://")) else None

    def log(line: str) -> None:
        if args.verbose or not line.startswith("  "):
            err.print(escape(line), highlight=False, soft_wrap=True)

    report = install(
        args.requirements, python=args.python or default_python(), manifest=manifest, base=base, target=target,
        index_url=index_url, pip_args=args.pip_arg, log=log, check_import=not args.no_import_check,
        installer=args.installer, passthrough=sys.stderr.isatty() and not args.json,
    )
    if args.json:
        print_json(report.model_dump())
    else:
        for i in report.installed:
            out.print(f"[green]installed[/] {escape(i.filename)} (sha256 verified; modules: {', '.join(i.modules)})")
        out.print(f"torch: {report.torch_before or 'not installed'} (unchanged)", highlight=False)
        out.print(("[green]import ok[/]" if report.import_ok else "[red]import failed[/]") + "", highlight=False)
    if not report.import_ok:
        raise BuildError(f"installed, but the import check failed:\n{report.import_output[-1500:]}",
                         hint="run `buildtool doctor` in this environment")
    return 0
