"""Expansion: the product of matrix.yaml's axes and packages, the stable-ABI cells, the include entries,
less what the compatibility data, the recipes and the exclude rules rule out (each with its reason)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.version import Version

from buildtool.errors import UserError
from buildtool.spec.abitrack import LIMITED_API_PYTHON, AbiTrack
from buildtool.spec.matrix.base import MatrixBase
from buildtool.spec.matrix.cell import Cell, new_cell
from buildtool.spec.matrix.rules import first_matching_rules
from buildtool.versions import cuda_major, torch_minor


@dataclass(frozen=True)
class Expansion:
    cells: tuple[Cell, ...]
    excluded: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def by_id(self) -> dict[str, Cell]:
        return {c.id: c for c in self.cells}


def make_cell(
    m: MatrixBase, platform: str, python: str, cuda: str, torch: str, package: str, version: str,
    tags: tuple[str, ...], archs: tuple[str, ...] | None, abi: AbiTrack = "full",
) -> tuple[Cell | None, list[str]]:
    reasons = m.compat.violations(platform=platform, python=python, cuda=cuda, torch=torch)
    recipe = m.recipes[package]
    rv = recipe.get(version)
    reasons += [f"{package} {version} {r}" for r in rv.constraints.violations(
        torch=torch, python=python, cuda=cuda, platform=platform)]
    floor = None
    if abi == "stable":
        floor = rv.stable_floor
        if floor is None:
            reasons.append(f"{package} {version} has no stable-ABI track: {rv.stable_reason()}")
        elif Version(torch_minor(torch)) < Version(floor):
            reasons.append(f"a stable-ABI cell of {package} {version} builds against torch >= its floor {floor}, "
                           f"not {torch}")
        elif rv.stable_abi and rv.stable_abi.build_floor and \
                Version(torch_minor(torch)) < Version(rv.stable_abi.build_floor):
            reasons.append(f"{package} {version}'s stable-ABI port compiles only against torch >= "
                           f"{rv.stable_abi.build_floor}'s headers (stable_abi.build_torch), not {torch}")
        if Version(python) < Version(LIMITED_API_PYTHON):
            reasons.append(f"the stable track's limited API needs CPython >= {LIMITED_API_PYTHON} to build")
    info = m.compat.torch_info(torch)
    policy = m.spec.arch_policy.get(cuda)
    if policy is None and archs is None:
        reasons.append(f"no arch_policy for CUDA {cuda} and no archs given (arch_policy has: "
                       f"{', '.join(m.spec.arch_policy) or 'nothing'})")
    if reasons or info is None:
        return None, reasons
    cuda_info = m.compat.cuda[cuda]
    chosen = archs if archs is not None else policy.archs if policy else ()
    bad = [a for a in chosen if not cuda_info.can_compile(a.rstrip("a"))]
    if bad:
        return None, [f"CUDA {cuda} cannot compile {', '.join('sm_' + b.replace('.', '') for b in bad)}"]
    cell = new_cell(
        m.compat, platform=platform, python=python, cuda=cuda, torch=torch, package=package, version=version,
        archs=tuple(chosen), ptx=bool(policy and policy.ptx and archs is None), abi=abi, torch_floor=floor, tags=tags,
    )
    return cell, []


def stable_build_targets(m: MatrixBase, platform: str, major: str, floor: str) -> list[tuple[str, str, str]]:
    """(python, cuda, torch) a stable-ABI cell of ``platform`` x CUDA ``major`` may build against, best first.

    An official torch build, so the build env installs as for any cell: the CUDA is the newest minor of
    that major on the axes that some torch >= the floor on the axes ships for ``platform`` (the newest
    toolkit's arch policy reaches the newest GPUs; within a major the driver runs the SASS by minor-version
    compatibility and libcudart.so.<major> comes with every torch of that major); the torch is the newest
    such one. The Python is the lowest on the axes, >= 3.10, that this torch ships for (the library uses no
    Python header: any would do). The expansion takes the first the recipe and the exclude rules allow."""
    axes = m.spec.axes
    toolkits = sorted((c for c in axes.cuda if cuda_major(c) == major), key=Version, reverse=True)
    torches = sorted((t for t in axes.torch if Version(torch_minor(t)) >= Version(floor)), key=Version, reverse=True)
    out = []
    for toolkit in toolkits:
        for torch in torches:
            info = m.compat.torch_info(torch)
            if info is None or platform not in info.platforms or toolkit not in info.cuda_for(platform):
                continue
            pythons = sorted((p for p in axes.python if p in info.python
                              and Version(p) >= Version(LIMITED_API_PYTHON)), key=Version)
            if pythons:
                out.append((pythons[0], toolkit, torch))
    return out


def stable_build_target(m: MatrixBase, platform: str, major: str, floor: str) -> tuple[str, str, str] | None:
    targets = stable_build_targets(m, platform, major, floor)
    return targets[0] if targets else None


def _stable_cells(m: MatrixBase, base_pkgs: Sequence[tuple[str, str]], cells: dict[str, Cell],
                  excluded: dict[str, tuple[str, ...]]) -> dict[tuple[str, str, str, str], Cell]:
    """The stable-ABI cells of the axes: one per platform x CUDA major x stable-ported package version,
    keyed by (platform, major, package, version)."""
    out: dict[tuple[str, str, str, str], Cell] = {}
    majors = sorted({cuda_major(c) for c in m.spec.axes.cuda}, key=int)
    for (package, version), platform, major in itertools.product(base_pkgs, m.spec.axes.platform, majors):
        rv = m.recipes[package].get(version)
        if rv.stable_floor is None or rv.stable_abi is None:
            continue
        first: tuple[str, tuple[str, ...]] | None = None
        for python, cuda, torch in stable_build_targets(m, platform, major, rv.stable_abi.build_floor or rv.stable_floor):
            cid = f"{platform}-abi3-cu{cuda.replace('.', '')}-torch{torch_minor(torch)}-{package}-{version}"
            cell, reasons = make_cell(m, platform, python, cuda, torch, package, version, (), None, "stable")
            if cell is not None:
                rule = next((k for k, sel in enumerate(m.spec.exclude) if sel.matches(cell)), None)
                if rule is None:
                    cells[cell.id] = cell
                    out[(platform, major, package, version)] = cell
                    first = None
                    break
                reasons = [f"excluded by rule exclude[{rule}] at {m.doc.location(('exclude', rule))}"]
            first = first or (cid, tuple(reasons))  # the best target's reason, if no target works
        if first is not None:
            excluded[first[0]] = first[1]
    return out


def expand(m: MatrixBase, *, stable_abi: bool | None = None) -> Expansion:
    """All cells; ``stable_abi`` overrides the file's switch (the summary's "before" numbers)."""
    use_stable = m.spec.stable_abi.enabled if stable_abi is None else stable_abi
    cells: dict[str, Cell] = {}
    excluded: dict[str, tuple[str, ...]] = {}
    axes = m.spec.axes
    base_pkgs = [pv for i, ref in enumerate(m.spec.packages) for pv in m.resolve_packages(ref, ("packages", i))]
    stable = _stable_cells(m, base_pkgs, cells, excluded) if use_stable else {}
    candidates: list[Cell] = []
    for platform, python, cuda, torch, (package, version) in itertools.product(
        axes.platform, axes.python, axes.cuda, axes.torch, base_pkgs
    ):
        cid = _candidate_id(platform, python, cuda, torch, package, version)
        cell, reasons = make_cell(m, platform, python, cuda, torch, package, version, (), None)
        if cell is None:  # no such torch build (or the recipe rules it out): nothing to serve either
            excluded[cid] = tuple(reasons)
            continue
        candidates.append(cell)
    rules = first_matching_rules(candidates, m.spec.exclude)
    for n, cell in enumerate(candidates):
        rule = rules.get(n)
        if rule is not None:
            line = m.doc.location(("exclude", rule))
            excluded[cell.id] = (f"excluded by rule exclude[{rule}] at {line}",)
            continue
        served = stable.get((cell.platform, cell.cuda_major, cell.package, cell.version))
        floor = served.torch_floor if served else None
        kept = kept_full(m, cell.platform, cell.python, cell.cuda, cell.torch, cell.package, cell.version) \
            if served else None
        if served is not None and floor is not None and Version(cell.torch_minor) >= Version(floor) and kept is None:
            excluded[cell.id] = (
                f"served by the stable-ABI track: {served.id} (one wheel for torch >= {floor} with CUDA "
                f"{served.cuda_major}.x and CPython >= {LIMITED_API_PYTHON}; built against torch {served.torch}, "
                f"CUDA {served.cuda})",
            )
            continue
        cells[cell.id] = cell
    for i, entry in enumerate(m.spec.include):
        pkgs = [pv for j, ref in enumerate(entry.packages) for pv in m.resolve_packages(ref, ("include", i, "packages", j))]
        for platform, python, cuda, torch, (package, version) in itertools.product(
            entry.platform, entry.python, entry.cuda, entry.torch, pkgs
        ):
            cell, reasons = make_cell(m, platform, python, cuda, torch, package, version, entry.tags,
                                            entry.archs, entry.abi)
            cid = _candidate_id(platform, python, cuda, torch, package, version)
            if cell is None:
                raise UserError(
                    f"include[{i}]: impossible {'stable-ABI ' if entry.abi == 'stable' else ''}cell {cid}: " + "; ".join(reasons),
                    location=m.doc.location(("include", i)),
                )
            if cell.id in cells:
                raise UserError(
                    f"include[{i}]: duplicate cell {cell.id} (already produced by the axes or an earlier include)",
                    location=m.doc.location(("include", i)),
                    hint="remove the include or add an exclude rule for the axes' copy",
                )
            excluded.pop(cell.id, None)
            cells[cell.id] = cell
    ordered = tuple(sorted(cells.values(), key=_sort_key))
    return Expansion(cells=ordered, excluded=excluded)


def kept_full(m: MatrixBase, platform: str, python: str, cuda: str, torch: str, package: str, version: str) -> int | None:
    """The stable_abi.keep_full rule that keeps this full-ABI candidate beside the stable track, if any."""
    probe = Cell(platform=platform, python=python, cuda=cuda, torch=torch, package=package, version=version,
                 cxx11_abi=True, cxx_std="17", archs=(), ptx=False, triton=None)
    return next((k for k, sel in enumerate(m.spec.stable_abi.keep_full) if sel.matches(probe)), None)


def _candidate_id(platform: str, python: str, cuda: str, torch: str, package: str, version: str) -> str:
    return f"{platform}-cp{python.replace('.', '')}-cu{cuda.replace('.', '')}-torch{torch_minor(torch)}-{package}-{version}"


def _sort_key(c: Cell) -> tuple[Any, ...]:
    return (c.platform, c.abi == "stable", Version(c.python), Version(c.cuda), Version(c.torch), c.package,
            Version(c.version))
