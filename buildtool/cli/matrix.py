"""`buildtool matrix`: expand matrix.yaml and show, export or explain its cells."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from buildtool.build.groups import cibuildwheel_matrix
from buildtool.console import out, print_json
from buildtool.errors import UserError
from buildtool.spec.matrix import load_matrix
from buildtool.spec.matrix.github import GITHUB_CHUNK, github_matrix
from buildtool.spec.project import find_project


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("matrix", help="expand matrix.yaml into build cells")
    p.add_argument("--file", type=Path, help="matrix file (default: the project's matrix.yaml)")
    p.add_argument("--profile", help="select the cells of a named profile")
    p.add_argument("--filter", action="append", default=[], metavar="AXIS=V[,V]",
                   help="keep cells whose AXIS (platform, python, cuda, torch, package, tags, abi) is one of the values")
    p.add_argument("--format", choices=("table", "json", "github", "cibuildwheel", "ids"), default="table",
                   help="github: one job per cell; cibuildwheel: one job per compile group (platform, CUDA, torch, "
                        "package version; stable ABI: platform, CUDA major, package version), its Pythons built "
                        "by cibuildwheel inside it")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument("--explain", metavar="CELL_ID", help="say why a cell is built or excluded")
    p.add_argument("--list-profiles", action="store_true", help="list the profiles")
    p.add_argument("--summary", action="store_true",
                   help="cells and compile groups without and with the stable-ABI track, and what a new torch adds")
    p.add_argument("--new-torch", metavar="MINOR", help="with --summary: the torch minor to add (default: the next one)")
    p.add_argument("--github-output", type=Path, metavar="FILE",
                   help="with --format github/cibuildwheel: also append count=, chunks=, matrix-N= and verify= lines to FILE "
                        "(GitHub Actions passes $GITHUB_OUTPUT); works on any file locally")
    p.add_argument("--max-chunks", type=int, metavar="N",
                   help="with --format github/cibuildwheel: fail unless the jobs fit in N chunks of 256 (the fan-out jobs a "
                        "workflow has)")
    p.set_defaults(func=run)


def write_github_output(path: Path, data: dict[str, Any]) -> None:
    """Job outputs for a plan job: one compact JSON line per chunk, so fan-out jobs read `matrix-N`."""
    lines = [f"count={data['count']}", f"chunks={data['chunks']}", f"verify={json.dumps(data['verify'])}"]
    lines += [f"matrix-{i}={json.dumps(m, separators=(',', ':'))}" for i, m in enumerate(data["matrices"])]
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def _print_summary(matrix: Any, args: argparse.Namespace) -> int:
    from buildtool.spec.tracksummary import summarize

    s = summarize(matrix, args.profile, args.new_torch)
    if args.format == "json":
        print_json(s.as_dict())
        return 0
    table = Table(title=f"stable-ABI track{f' (profile {args.profile})' if args.profile else ''}: "
                        f"matrix.yaml has it {'on' if matrix.spec.stable_abi else 'off'}")
    for col in ("", "cells", "compile groups", "stable-ABI cells", f"torch {s.next_torch} adds"):
        table.add_column(col, justify="right")
    table.add_row("full ABI only", str(s.full_only.cells), str(s.full_only.compile_groups), "0",
                  str(s.next_torch_adds_full_only))
    table.add_row("with the stable track", str(s.with_stable.cells), str(s.with_stable.compile_groups),
                  str(s.with_stable.stable_cells), str(s.next_torch_adds_with_stable))
    out.print(table)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.json:
        if args.format not in ("table", "json"):
            raise UserError(f"--json and --format {args.format} ask for two formats; give one")
        args.format = "json"
    if (args.github_output or args.max_chunks is not None) and args.format not in ("github", "cibuildwheel"):
        raise UserError("--github-output and --max-chunks need --format github or --format cibuildwheel")
    project = find_project()
    matrix = load_matrix(project.root, args.file)
    expansion = matrix.expand()
    if args.list_profiles:
        table = Table(title="profiles")
        table.add_column("profile")
        table.add_column("cells", justify="right")
        table.add_column("description")
        for name, prof in matrix.spec.profiles.items():
            n = sum(1 for c in expansion.cells if prof.select.matches(c))
            table.add_row(name, str(n), prof.description)
        out.print(table)
        return 0
    if args.summary:
        return _print_summary(matrix, args)
    if args.explain:
        built, reasons = matrix.explain(args.explain, expansion)
        if args.format == "json":
            print_json({"id": args.explain, "built": built, "reasons": reasons})
        else:
            out.print(f"[bold]{args.explain}[/]: {'[green]built[/]' if built else '[red]excluded[/]'}")
            for r in reasons:
                out.print(f"  - {r}", highlight=False)
        return 0
    cells = matrix.select(expansion, args.profile, args.filter)
    if args.format == "json":
        print_json([c.summary() for c in cells])
    elif args.format in ("github", "cibuildwheel"):
        make = cibuildwheel_matrix if args.format == "cibuildwheel" else github_matrix
        data = make(cells, runners=matrix.spec.runners)
        if args.max_chunks is not None and data["chunks"] > args.max_chunks:
            raise UserError(
                f"{data['count']} {'compile groups' if args.format == 'cibuildwheel' else 'cells'} need {data['chunks']} chunks of {GITHUB_CHUNK}, but --max-chunks is "
                f"{args.max_chunks}",
                hint="add fan-out jobs to .github/workflows/wheels.yml or build a smaller profile",
            )
        print_json(data)
        if args.github_output:
            write_github_output(args.github_output, data)
    elif args.format == "ids":
        for c in cells:
            print(c.id)
    else:
        groups = len({c.compile_group for c in cells})
        stable = sum(1 for c in cells if c.abi == "stable")
        table = Table(title=f"{len(cells)} cells, {groups} compile groups" + (f", {stable} stable-ABI" if stable else "")
                      + (f" (profile {args.profile})" if args.profile else ""))
        for col in ("id", "ABI", "C++", "archs", "triton"):
            table.add_column(col, overflow="fold")
        for c in cells:
            table.add_row(c.id, "TRUE" if c.cxx11_abi else "FALSE", c.cxx_std, c.arch_list, c.triton or "-")
        out.print(table)
    return 0
