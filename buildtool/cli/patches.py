"""`buildtool patches`: list the source patches, or check each against every version it claims."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from buildtool.console import out, print_json
from buildtool.source.patching import load_patches
from buildtool.source.prepare import check_patches
from buildtool.spec.project import find_project

_STYLE = {"ok": "green", "fail": "red", "skipped": "yellow", "unclaimed": "red"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("patches", help="list or check the source patches")
    psub = p.add_subparsers(dest="patches_command", metavar="ACTION", required=True)
    lst = psub.add_parser("list", help="the patches and what they fix")
    lst.add_argument("--package", help="only this package's patches")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=run_list)
    chk = psub.add_parser("check", help="apply every patch to every recipe version it claims (then lint-source)")
    chk.add_argument("--package", help="only this package")
    chk.add_argument("--source-mirror", metavar="DIR", help="offline sources (default: $BUILDTOOL_SOURCE_MIRROR)")
    chk.add_argument("--strict", action="store_true", help="a source that cannot be fetched is a failure")
    chk.add_argument("--json", action="store_true")
    chk.set_defaults(func=run_check)


def run_list(args: argparse.Namespace) -> int:
    patches = load_patches(find_project().patches_dir, args.package)
    if args.json:
        print_json([{"name": p.name, "sha256": p.sha256, **p.header.model_dump(mode="json"),
                     "files": [f.path for f in p.files]} for p in patches])
        return 0
    table = Table(title=f"{len(patches)} patches")
    for col in ("patch", "ref", "versions", "platforms", "summary"):
        table.add_column(col, overflow="fold")
    for p in patches:
        table.add_row(p.name, p.header.reference, p.header.versions, ", ".join(p.header.platforms) or "all",
                      escape(p.header.summary))
    out.print(table)
    return 0


def run_check(args: argparse.Namespace) -> int:
    report = check_patches(find_project(), mirror=args.source_mirror, package=args.package)
    skipped = any(p.status == "skipped" for p in report.patches)
    ok = report.ok and not (args.strict and skipped)
    if args.json:
        print_json(report.model_dump(mode="json") | {"ok": ok})
        return 0 if ok else 1
    table = Table(title="patches x claimed versions")
    for col in ("patch", "version", "platforms", "result", "detail"):
        table.add_column(col, overflow="fold")
    for p in report.patches:
        table.add_row(p.patch, p.version or "-", ", ".join(p.platforms) or "-",
                      f"[{_STYLE[p.status]}]{p.status}[/]", escape(p.detail))
    out.print(table)
    trees = Table(title="patched trees (lint-source errors after patching, per platform)")
    for col in ("package", "version", "platform", "ABI", "patches", "applies", "lint errors"):
        trees.add_column(col, overflow="fold")
    for t in report.trees:
        lint = "-" if t.lint_errors is None else ("[green]0[/]" if not t.lint_errors else f"[red]{t.lint_errors}[/]")
        trees.add_row(t.package, t.version, t.platform, t.abi, str(len(t.patches)),
                      f"[{_STYLE[t.status]}]{t.status}[/]", lint)
    out.print(trees)
    counts = {s: sum(1 for p in report.patches if p.status == s) for s in _STYLE}
    out.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) + (": [green]OK[/]" if ok else ": [red]FAILED[/]"))
    return 0 if ok else 1
