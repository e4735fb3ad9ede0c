"""`buildtool build`: build the wheels of matrix cells (a profile, filters, or explicit cell ids)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from rich.markup import escape

from buildtool.build.cell import BuildOptions
from buildtool.build.runner import exit_code, run_cells, summary_json, summary_table
from buildtool.compile.models import CompileSettings
from buildtool.console import err, out, print_json
from buildtool.errors import UserError, allowed_list, did_you_mean
from buildtool.spec.compat import Compat
from buildtool.spec.matrix import Cell, Matrix, load_matrix
from buildtool.spec.project import find_project


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="build wheels for matrix cells (default: the matrix's default profile)")
    p.add_argument("cells", nargs="*", metavar="CELL_ID", help="cell ids (see `buildtool matrix --format ids`)")
    p.add_argument("--profile", help="build the cells of this profile (default: default_profile of matrix.yaml)")
    p.add_argument("--filter", action="append", default=[], metavar="AXIS=V[,V]",
                   help="keep cells whose AXIS (platform, python, cuda, torch, package, tags) is one of the values")
    p.add_argument("--toolchain", choices=("auto", "system", "pypi", "debian", "conda"), default="auto",
                   help="where nvcc comes from (auto: system, then pypi, then conda)")
    p.add_argument("--use-current-env", action="store_true",
                   help="build against this interpreter's torch (offline) instead of an isolated build env")
    p.add_argument("--build-python", type=Path, metavar="PYTHON",
                   help="build against the torch of this existing interpreter (offline, like --use-current-env)")
    p.add_argument("--index-url", help="index for the build env's torch (default: PyTorch's per-CUDA index)")
    p.add_argument("--source-mirror", type=Path, metavar="DIR",
                   help="local mirror of upstream sources (default: $BUILDTOOL_SOURCE_MIRROR)")
    p.add_argument("--dist", type=Path, metavar="DIR", help="where wheels go (default: <project>/dist)")
    p.add_argument("--resume", action="store_true",
                   help="skip cells whose wheel exists in --dist with the same provenance")
    p.add_argument("--jobs", type=int, metavar="N", help="parallel compile jobs (default: sized to cores and RAM)")
    p.add_argument("--split-compile", type=int, metavar="N",
                   help="threads per nvcc for its device compile (-split-compile; default: every core where cores "
                        "would otherwise idle, off where the TUs keep them busy; 1: off)")
    p.add_argument("--no-split", action="store_true",
                   help="compile each source as one TU, ignoring the kernel specs' split rules (for comparisons)")
    p.add_argument("--priorities", action="store_true",
                   help="run cheaper TUs at a lower CPU priority (nice) so all finish together (POSIX)")
    p.add_argument("--jobserver", action="store_true",
                   help="one token pool for ninja's jobs and nvcc's -split-compile workers: about 10%% less CPU, "
                        "but slower on the 16-core host (docs/performance.md)")
    p.add_argument("--fair-share", action="store_true",
                   help="start each compile in its own session, so Linux's autogroup shares the CPU per TU (Linux)")
    p.add_argument("--no-cache", action="store_true",
                   help="compile every translation unit (no object cache, no ccache), e.g. to measure build time")
    p.add_argument("--archs", metavar="A[,A]",
                   help="override the cells' arch list, e.g. 9.0 (no PTX); for local builds and benchmarks")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def override_archs(cells: list[Cell], archs: str, compat: Compat) -> list[Cell]:
    """Cells with their arch list replaced (id unchanged); every arch must compile with the cell's CUDA."""
    wanted = tuple(a.strip() for a in archs.split(",") if a.strip())
    if not wanted or not all(re.fullmatch(r"\d+\.\d+a?", a) for a in wanted):
        raise UserError(f'--archs "{archs}" must be a comma-separated list like 8.0,9.0')
    out_cells = []
    for cell in cells:
        bad = [a for a in wanted if not compat.cuda[cell.cuda].can_compile(a.rstrip("a"))]
        if bad:
            raise UserError(f"--archs: CUDA {cell.cuda} ({cell.id}) cannot compile {', '.join(bad)}")
        out_cells.append(cell.model_copy(update={"archs": wanted, "ptx": False}))
    return out_cells


def select_cells(matrix: Matrix, ids: list[str], profile: str | None, filters: list[str]) -> list[Cell]:
    expansion = matrix.expand()
    if ids:
        by_id = expansion.by_id()
        chosen = []
        for cid in ids:
            if cid not in by_id:
                reason = ""
                if cid in expansion.excluded:
                    reason = ": excluded (" + "; ".join(expansion.excluded[cid]) + ")"
                raise UserError(f'no buildable cell "{cid}"{reason}{did_you_mean(cid, by_id)}',
                                hint="list cells with `buildtool matrix --format ids`")
            chosen.append(by_id[cid])
        if profile or filters:
            chosen = [c for c in chosen if c in matrix.select(expansion, profile, filters)]
        return chosen
    return matrix.select(expansion, profile or matrix.spec.default_profile, filters)


def run(args: argparse.Namespace) -> int:
    project = find_project()
    matrix = load_matrix(project.root)
    if args.profile and args.profile not in matrix.spec.profiles:
        raise UserError(f'unknown profile "{args.profile}"{did_you_mean(args.profile, matrix.spec.profiles)}; '
                        f"profiles: {allowed_list(matrix.spec.profiles)}")
    if args.jobs is not None and args.jobs < 1:
        raise UserError("--jobs must be at least 1")
    if args.split_compile is not None and args.split_compile < 1:
        raise UserError("--split-compile must be at least 1 (1 turns it off)")
    cells = select_cells(matrix, args.cells, args.profile, args.filter)
    if args.archs:
        cells = override_archs(cells, args.archs, matrix.compat)
    mirror = args.source_mirror or (Path(os.environ["BUILDTOOL_SOURCE_MIRROR"])
                                    if os.environ.get("BUILDTOOL_SOURCE_MIRROR") else None)
    options = BuildOptions(
        toolchain=args.toolchain, use_current_env=args.use_current_env,
        build_python=args.build_python, index_url=args.index_url,
        source_mirror=mirror, dist_dir=(args.dist or project.dist_dir).resolve(),
        build_root=project.build_dir.resolve(), resume=args.resume,
        compile=CompileSettings(jobs=args.jobs, split_compile=args.split_compile, split_sources=not args.no_split,
                                cache=not args.no_cache, priorities=args.priorities,
                                jobserver=args.jobserver, fair_share=args.fair_share),
    )

    def announce(index: int, cell: Cell, step: str) -> None:
        if not args.json:
            err.print(f"[dim][{index + 1}/{len(cells)}][/] {escape(cell.id)}: {step}", highlight=False)

    report = run_cells(project, cells, options, announce=announce)
    if args.json:
        print_json(summary_json(report))
    else:
        out.print(summary_table(report))
        shown: set[str] = set()
        for r in report.results:
            if r.status in ("failed", "skipped") and r.message and r.message not in shown:
                shown.add(r.message)
                style = "red" if r.status == "failed" else "yellow"
                out.print(f"[{style}]{r.status}:[/] {escape(r.cell_id)}\n  {escape(r.message)}", soft_wrap=True)
            for note in r.notes:
                out.print(f"[yellow]note:[/] {escape(r.cell_id)}: {escape(note)}", soft_wrap=True)
        for r in report.results:
            if r.wheel is not None:
                out.print(f"wheel: {r.wheel}", highlight=False, soft_wrap=True)
        if report.interrupted:
            err.print("[magenta]interrupted:[/] no partial wheel in dist/; build dirs kept (run again to continue)")
    return exit_code(report)
