"""`buildtool plan --profile release`: what a profile costs in CI (jobs, TUs, reuse, CPU-hours, wall time)."""

from __future__ import annotations

import argparse

from rich.table import Table

from buildtool.build.plan import TuCounts, load_costs, plan_profile, tu_counter
from buildtool.console import out, print_json
from buildtool.spec.kernelspec import CUDA_SUFFIXES, load_kernel_specs
from buildtool.spec.matrix import load_matrix
from buildtool.spec.project import find_project


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="estimate what building a profile costs in CI: per cell vs compile groups "
                                    "vs compile groups + stable ABI")
    p.add_argument("--profile", help="matrix.yaml profile (default: the matrix's default profile)")
    p.add_argument("--filter", action="append", default=[], metavar="AXIS=V[,V]", help="as for `buildtool matrix`")
    p.add_argument("--cores", type=int, default=4, help="cores per runner (default 4: GitHub's ubuntu-22.04 / "
                                                        "windows-2022 for public repositories)")
    p.add_argument("--concurrency", type=int, default=20,
                   help="jobs running at once (default 20: GitHub Free's concurrent jobs)")
    p.add_argument("--json", action="store_true", help="print the plans as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    project = find_project()
    matrix = load_matrix(project.root)
    cells = matrix.select(matrix.expand(stable_abi=False), args.profile, args.filter)
    with_stable = matrix.select(matrix.expand(stable_abi=True), args.profile, args.filter)
    counts: dict[tuple[str, str, str], TuCounts] = {}
    for cell in [*cells, *with_stable]:
        key = (cell.package, cell.version, cell.abi)
        if key in counts:
            continue
        rv = matrix.recipes[cell.package].get(cell.version)
        specs = load_kernel_specs(project.kernels_dir, rv.kernels_for(cell.abi))
        counts[key] = TuCounts(specs=tuple(
            (s.name, sum(src.endswith(CUDA_SUFFIXES) for src in s.sources),
             sum(not src.endswith(CUDA_SUFFIXES) for src in s.sources)) for s in specs))
    rows = plan_profile(cells, tu_counter(counts), cores=args.cores, concurrency=args.concurrency,
                        stable_cells=with_stable)
    costs = load_costs()
    if args.json:
        print_json({"profile": args.profile or matrix.spec.default_profile, "cells": len(cells), "cores": args.cores,
                    "concurrency": args.concurrency, "costs_machine": costs.machine,
                    "plans": [r.model_dump() for r in rows]})
        return 0
    table = Table(title=f"{len(cells)} cells, runners with {args.cores} cores, {args.concurrency} jobs at a time")
    for col in ("plan", "jobs", "wheels", "TUs compiled", "objects reused", "CPU-hours", "job wall median / max (min)",
                "run wall (h)"):
        table.add_column(col, justify="left" if col == "plan" else "right")
    for r in rows:
        table.add_row(r.plan, str(r.jobs), str(r.wheels), str(r.tus_compiled), str(r.objects_reused),
                      f"{r.cpu_hours:.1f}", f"{r.job_wall_min_median:.1f} / {r.job_wall_min_max:.1f}",
                      f"{r.wall_hours:.1f}")
    out.print(table)
    out.print(f"per-TU compile costs measured on a {costs.machine} (buildtool/data/build_costs.yaml); compile "
              "only (no torch install, no toolkit download)", highlight=False)
    return 0
