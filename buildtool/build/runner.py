"""Matrix runner: build a list of cells one after another, go on past failures, summarise.

One cell at a time on purpose: each nvcc job already uses the machine (the compile stage sizes its own
parallelism to cores and RAM). SIGTERM is turned into KeyboardInterrupt while the runner runs, so CI
cancellation and Ctrl-C take the same clean path (no partial wheel in dist/, build dirs kept).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any

from rich.table import Table

from buildtool.build.cell import BuildOptions, CellResult, build_cell
from buildtool.model import Frozen
from buildtool.spec.matrix import Cell
from buildtool.spec.project import Project
from buildtool.spec.recipe import Recipe, load_recipes

__all__ = ["DONE", "STATUSES", "RunReport", "exit_code", "run_cells", "sigterm_as_interrupt", "summary_json", "summary_table"]

_STYLE = {"verified": "bold green", "verified-static": "green", "built": "yellow", "resumed": "cyan", "skipped": "yellow",
          "failed": "red", "interrupted": "magenta"}
# every status a cell can end in, most complete first (summary counts, `--json`)
STATUSES = ("verified", "verified-static", "built", "resumed", "skipped", "failed")
DONE = ("verified", "verified-static", "built", "resumed")  # a wheel is in dist/


class RunReport(Frozen):
    results: tuple[CellResult, ...]
    interrupted: bool = False
    not_run: tuple[str, ...] = ()

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM raises KeyboardInterrupt in the main thread (cleanup runs in `finally`s)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_cells(project: Project, cells: Sequence[Cell], options: BuildOptions, *,
              recipes: Mapping[str, Recipe] | None = None,
              announce: Callable[[int, Cell, str], None] | None = None) -> RunReport:
    """Build ``cells`` in order; a failed cell does not stop the run, an interrupt does (and is reported)."""
    recipes = recipes or load_recipes(project.recipes_dir)
    toolchains: dict[tuple[str, str], Any] = {}
    results: list[CellResult] = []
    with sigterm_as_interrupt():
        for index, cell in enumerate(cells):
            def on_step(step: str, index: int = index, cell: Cell = cell) -> None:
                if announce is not None:
                    announce(index, cell, step)
            try:
                results.append(build_cell(project, cell, options, toolchains=toolchains, recipes=recipes,
                                          on_step=on_step))
            except KeyboardInterrupt:
                return RunReport(results=tuple(results), interrupted=True,
                                 not_run=tuple(c.id for c in cells[index:]))
    return RunReport(results=tuple(results))


def exit_code(report: RunReport) -> int:
    """130 when interrupted, 1 when a cell failed or nothing was built, else 0."""
    if report.interrupted:
        return 130
    if report.count("failed"):
        return 1
    if not any(report.count(s) for s in DONE):
        return 1
    return 0


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def summary_table(report: RunReport) -> Table:
    title = ", ".join(f"{report.count(s)} {s}" for s in STATUSES if report.count(s) or s in ("failed", "verified-static"))
    title += ", interrupted" if report.interrupted else ""
    table = Table(title=title)
    for col, kw in (("cell", {"overflow": "fold"}), ("result", {}), ("time", {"justify": "right"}),
                    ("compile vs bound", {"justify": "right"}), ("wheel size", {"justify": "right"}),
                    ("log", {"overflow": "fold"})):
        table.add_column(col, **kw)  # type: ignore[arg-type]
    for r in report.results:
        style = _STYLE.get(r.status, "")
        shown = f"{r.status}, {r.verification}" if r.verification and r.verification != r.status else r.status
        table.add_row(r.cell_id, f"[{style}]{shown}[/]", f"{r.seconds:.1f} s", _bound(r.compile_bound),
                      _size(r.size), str(r.log))
    for cid in report.not_run:
        table.add_row(cid, f"[{_STYLE['interrupted']}]not run[/]", "-", "-", "-", "-")
    return table


def _bound(bound: dict[str, Any] | None) -> str:
    """'1.08x (57.9 / 53.4 s)': the compile's wall time over max(longest TU alone, CPU-s / cores)."""
    if not bound or not bound.get("ratio"):
        return "-"
    return f"{bound['ratio']:.2f}x ({bound['wall_seconds']:.1f} / {bound['bound_seconds']:.1f} s)"


def summary_json(report: RunReport) -> dict[str, Any]:
    return {
        "ok": exit_code(report) == 0,
        "interrupted": report.interrupted,
        "counts": {s: report.count(s) for s in STATUSES},
        "cells": [r.model_dump(mode="json") for r in report.results],
        "not_run": list(report.not_run),
    }
