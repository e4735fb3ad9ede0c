"""The report: a rich table for people, JSON for machines and for docs/."""

from __future__ import annotations

import json
import math
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


def _finite(value: Any) -> Any:
    """Strict JSON: inf/nan (a shape mismatch's error) become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_report(report: Report) -> dict[str, Any]:
    """The report as `verify --json` prints it and `--json-out FILE` writes it."""
    data: dict[str, Any] = _finite(report.model_dump())
    data["ok"] = report.ok
    data["counts"] = report.counts()
    return data


def write_json(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_report(report), indent=2, default=str, allow_nan=False) + "\n", encoding="utf-8")


def markdown(report: Report) -> str:
    """A summary for docs/: the machine, the counts, failures, and every speed row."""
    env = report.environment
    c = report.counts()
    lines = [
        f"# Verification run {env.date}", "",
        f"- GPU: {env.gpu or 'none'} ({env.gpu_arch or '-'}), driver {env.driver or '-'}",
        f"- torch {env.torch or '-'} (CUDA {env.torch_cuda or '-'}), Python {env.host_python}, {env.platform}",
        f"- wheels: {', '.join(report.wheels)}",
        f"- result: {c['pass']} passed, {c['fail']} failed, {c['skip']} skipped", "",
    ]
    bad = [r for r in report.results if r.result != "pass"]
    if bad:
        lines += ["## Not passed", "", "| wheel | check | result | detail |", "|---|---|---|---|"]
        lines += [f"| {r.wheel} | {r.check} | {r.result} | {r.detail.replace('|', '/')} |" for r in bad]
        lines.append("")
    speed = [r for r in report.results if r.check.startswith("speed") and r.result != "skip"]
    if speed:
        lines += ["## Speed", "", "| wheel | check | kernel ms | reference ms | speedup | fwd ms | fwd+bwd ms | vs upstream fwd | vs upstream fwd+bwd |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in speed:
            n = r.numbers
            cells = [n.get(k, "") for k in ("kernel_ms", "reference_ms", "speedup", "fwd_ms", "fwd_bwd_ms",
                                             "fwd_vs_baseline", "fwd_bwd_vs_baseline")]
            lines.append(f"| {r.wheel} | {r.check} | " + " | ".join(str(x) for x in cells) + " |")
        lines.append("")
    numerics = [r for r in report.results if r.check.startswith(("numerics", "smoke")) and r.result == "pass"]
    if numerics:
        lines += ["## Numerics (worst error as a fraction of its tolerance)", "", "| wheel | check | cases | worst/allowed |",
                  "|---|---|---|---|"]
        lines += [f"| {r.wheel} | {r.check} | {r.numbers.get('cases', r.numbers.get('tensors', ''))} | "
                  f"{r.numbers.get('worst_of_allowed', '')} |" for r in numerics]
    return "\n".join(lines) + "\n"
