"""`buildtool toolchain`: show the CUDA toolkit and host compiler a cell would be compiled with, and every
provider tried. Provisions (pypi/conda) into the cache when that is what `auto` or `--provider` picks."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from buildtool.console import out, print_json
from buildtool.host import host_platform
from buildtool.toolchain import ToolchainNotFound, resolve


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("toolchain", help="find or provision the CUDA toolkit + host compiler for a CUDA version")
    p.add_argument("--cuda", required=True, help="the cell's CUDA version, e.g. 13.0")
    p.add_argument("--platform", default=None, help="the cell's platform (default: this machine's)")
    p.add_argument("--provider", "--toolchain", dest="provider", default="auto",
                   choices=("auto", "system", "pypi", "debian", "conda"), help="where the toolkit comes from (default: auto)")
    p.add_argument("--cache-dir", type=Path, default=None, help="toolkit cache (default: $BUILDTOOL_CACHE_DIR or ~/.cache/buildtool)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    platform = args.platform or host_platform()
    try:
        tc = resolve(args.cuda, platform, args.provider, cache_dir=args.cache_dir)
    except ToolchainNotFound as exc:
        if args.json:
            print_json({"ok": False, "error": exc.message, "hint": exc.hint,
                        "attempts": [a.model_dump() for a in exc.attempts]})
            return exc.exit_code
        raise
    if args.json:
        print_json({"ok": True, **tc.summary()})
        return 0
    out.print(f"[bold]CUDA {escape(tc.cuda_version)}[/] from [bold]{tc.provider}[/] for {platform}")
    table = Table(show_header=False, box=None)
    table.add_row("CUDA_HOME", str(tc.cuda_home))
    table.add_row("nvcc", str(tc.nvcc))
    table.add_row("host", f"{tc.host.kind} {tc.host.version} ({tc.host.path})")
    table.add_row("includes", " ".join(str(p) for p in tc.include_dirs))
    for key in sorted(tc.env):
        if key.upper() != "PATH":
            table.add_row(f"env {key}", escape(tc.env[key]))
    table.add_row("PATH prefix", " ".join(str(p) for p in tc.path_prefix))
    out.print(table)
    out.print("[bold]attempts[/]")
    for a in tc.attempts:
        mark = "[green]ok[/]" if a.ok else "[red]no[/]"
        out.print(f"  {mark} {a.provider}: {escape(a.detail)}", highlight=False)
    return 0
