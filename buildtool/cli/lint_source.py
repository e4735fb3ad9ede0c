"""`buildtool lint-source DIR`: portability scan (MSVC, CUDA 13) of a source tree."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from buildtool.console import out, print_json
from buildtool.source.lint import scan


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lint-source", help="scan C++/CUDA sources for MSVC and CUDA 13 portability problems")
    p.add_argument("dir", type=Path, help="source tree (e.g. a prepared tree or an unpacked sdist)")
    p.add_argument("--platform", help="only rules for this platform (default: all rules)")
    p.add_argument("--cuda", help="only rules for this CUDA version, e.g. 12.4 (default: all rules)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = scan(args.dir, platform=args.platform, cuda=args.cuda)
    if args.json:
        print_json(report.model_dump(mode="json") | {"clean": report.clean, "errors": len(report.errors)})
        return 0 if report.clean else 1
    for f in report.findings:
        colour = "red" if f.severity == "error" else "cyan"
        out.print(f"{escape(f.file)}:{f.line}: [{colour}]{f.severity}[/] [{f.rule}] {escape(f.message)}\n"
                  f"    {escape(f.text)}", highlight=False)
    if report.findings:
        table = Table(title="findings by rule")
        for col in ("rule", "severity", "count"):
            table.add_column(col)
        severity = {f.rule: f.severity for f in report.findings}
        for rule, n in sorted(report.counts().items()):
            table.add_row(rule, severity[rule], str(n))
        out.print(table)
    verdict = "[green]clean[/]" if report.clean else f"[red]{len(report.errors)} error(s)[/]"
    out.print(f"{report.files_scanned} files, {len(report.rules)} rules: {verdict}"
              f" ({len(report.findings) - len(report.errors)} informational)")
    return 0 if report.clean else 1
