"""The report: a rich table for people, JSON for machines and for docs/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from buildtool.verify.models import Report

_STYLE = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[yellow]skip[/]"}
_KEY_NUMBERS = ("speedup", "fwd_ms", "fwd_bwd_ms", "fwd_vs_baseline", "fwd_bwd_vs_baseline", "worst_of_allowed", "cases",
                "kernel_ms", "reference_ms", "GLIBC", "GLIBCXX")


def _numbers(n: dict[str, Any]) -> str:
    return " ".join(f"{k}={n[k]}" for k in _KEY_NUMBERS if k in n)


def table(report: Report, *, verbose: bool = False) -> Table:
    env = report.environment
    where = f"GPU {env.gpu or 'none'}" + (f" (sm_{env.gpu_arch}, driver {env.driver})" if env.gpu else "")
    title = f"buildtool verify — {len(report.wheels)} wheels, {where}, torch {env.torch or '-'} CUDA {env.torch_cuda or '-'}"
    c = report.counts()
    t = Table(title=title, caption=f"{c['pass']} passed, {c['fail']} failed, {c['skip']} skipped")
    t.add_column("wheel", overflow="fold", max_width=60)
    t.add_column("check", overflow="fold")
    t.add_column("result")
    t.add_column("numbers", overflow="fold")
    t.add_column("detail", overflow="fold", max_width=None if verbose else 90)
    for r in report.results:
        if not verbose and r.result == "pass" and not r.check.startswith("speed"):
            detail = r.detail[:90]
        else:
            detail = r.detail
        t.add_row(escape(r.wheel), escape(r.check), _STYLE[r.result], escape(_numbers(r.numbers)), escape(detail))
    return t


def write_json(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = report.model_dump()
    data["ok"] = report.ok
    data["counts"] = report.counts()
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
