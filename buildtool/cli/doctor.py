"""`buildtool doctor`: diagnose an environment against the failure catalogue; exit code by worst status."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from buildtool.console import out, print_json
from buildtool.user.doctor import run_doctor
from buildtool.user.doctor.model import Status

STYLE = {Status.ok: "green", Status.skip: "dim", Status.info: "cyan", Status.warn: "yellow", Status.fail: "bold red"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="diagnose torch/CUDA/ABI/triton problems of an environment")
    p.add_argument("--python", metavar="PY", help="interpreter or venv to inspect (default: active venv, else this one)")
    p.add_argument("--only", action="append", metavar="ID", help="run only these checks (check id or F-id)")
    p.add_argument("--all", action="store_true", help="also list skipped checks")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = run_doctor(args.python, only=set(args.only) if args.only else None)
    if args.json:
        data = report.model_dump(mode="json")
        data["worst"] = report.worst.value
        data["exit_code"] = report.exit_code
        print_json(data)
        return report.exit_code
    e = report.environment
    out.print(f"Python {e['python']} ({e['platform']}, glibc {e['glibc'] or '-'}) · torch {e['torch'] or 'not installed'}"
              f" (CUDA {e['torch_cuda'] or '-'}, cxx11abi {e['cxx11_abi']}) · GPU {', '.join(e['gpus']) or 'none'}"
              f" · driver {e['driver'] or '-'} · nvcc {e['nvcc'] or '-'} · g++ {e['gcc'] or '-'}", highlight=False)
    table = Table(show_lines=False)
    for col in ("check", "status", "evidence", "fix"):
        table.add_column(col, overflow="fold")
    shown = [r for r in report.results if args.all or r.status != Status.skip]
    for r in shown:
        fix = "" if r.status in (Status.ok, Status.skip) else r.fix
        table.add_row(f"{r.id} ({', '.join(r.failures)})", f"[{STYLE[r.status]}]{r.status.value}[/]",
                      escape(r.evidence), escape(fix))
    out.print(table)
    counts = report.counts()
    out.print(", ".join(f"{n} {k}" for k, n in counts.items() if n) + f" -> exit {report.exit_code}", highlight=False)
    return report.exit_code
