"""Selection and explanation: the cells a profile and --filter pick, why a cell is built or excluded, which
ABI track serves a package version, and which code each GPU runs from a cell's wheel."""

from __future__ import annotations

from collections.abc import Sequence

from packaging.version import Version

from buildtool.errors import UserError, allowed_list, did_you_mean
from buildtool.spec import archcover
from buildtool.spec.abitrack import LIMITED_API_PYTHON, AbiTrack
from buildtool.spec.matrix.base import MatrixBase
from buildtool.spec.matrix.cell import Cell
from buildtool.spec.matrix.expand import Expansion, kept_full
from buildtool.spec.matrix.rules import axis_values, parse_filter, selector_text
from buildtool.versions import torch_minor


def select(m: MatrixBase, expansion: Expansion, profile: str | None = None, filters: Sequence[str] = ()) -> list[Cell]:
    cells = list(expansion.cells)
    if not cells:
        reasons = sorted({r for rs in expansion.excluded.values() for r in rs})
        raise UserError(
            f"empty selection: the matrix produces no cell ({len(expansion.excluded)} combinations, all "
            f"excluded); reasons: {allowed_list(reasons, limit=4)}",
            location=m.doc.location(("axes",), key=True),
            hint="`buildtool matrix --explain ID` says why a cell is excluded",
        )
    if profile is not None:
        prof = m.spec.profiles.get(profile)
        if prof is None:
            raise UserError(
                f'--profile: unknown profile "{profile}"{did_you_mean(profile, m.spec.profiles)}; '
                f"profiles: {allowed_list(m.spec.profiles, limit=40) or '(none defined)'}",
                location=m.doc.location(("profiles",), key=True),
            )
        cells = [c for c in cells if prof.select.matches(c)]
        if prof.archs is not None:
            cells = [_with_profile_archs(m, c, profile, prof.archs) for c in cells]
        if not cells:
            raise UserError(
                f'empty selection: profile "{profile}" selects no cell '
                f"({len(expansion.cells)} cells in the matrix; its select: {selector_text(prof.select)})",
                location=m.doc.location(("profiles", profile, "select")),
                hint="`buildtool matrix --list-profiles` shows how many cells each profile has",
            )
    for f in filters:
        sel = parse_filter(f)
        kept = [c for c in cells if sel.matches(c)]
        if not kept:
            axis = f.partition("=")[0].strip()
            present = sorted({v for c in cells for v in axis_values(c, axis)})
            what = f'profile "{profile}"' if profile else "the matrix"
            source = {"package": ("packages",), "tags": ("include",), "abi": ("packages",)}.get(axis, ("axes", axis))
            raise UserError(
                f'--filter {f}: empty selection, no cell of {what} matches; {axis} values there: '
                f"{allowed_list(present, limit=20)}",
                location=m.doc.location(source, key=True),
            )
        cells = kept
    return cells


def _with_profile_archs(m: MatrixBase, cell: Cell, profile: str, archs: tuple[str, ...]) -> Cell:
    bad = [a for a in archs if not m.compat.cuda[cell.cuda].can_compile(a.rstrip("a"))]
    if bad:
        raise UserError(
            f'profile "{profile}": CUDA {cell.cuda} ({cell.id}) cannot compile '
            + ", ".join("sm_" + b.replace(".", "") for b in bad),
            location=m.doc.location(("profiles", profile, "archs")),
        )
    return cell.model_copy(update={"archs": archs, "ptx": False})


def explain(m: MatrixBase, cell_id: str, expansion: Expansion) -> tuple[bool, list[str]]:
    """(is_built, reasons) for a cell id; unknown ids raise with a did-you-mean."""
    cells = expansion.by_id()
    if cell_id in cells:
        c = cells[cell_id]
        profiles = [n for n, p in m.spec.profiles.items() if p.select.matches(c)]
        lines = [
            f"built: C++11 ABI {'TRUE' if c.cxx11_abi else 'FALSE'}, C++{c.cxx_std}, archs {c.arch_list}, "
            f"triton {c.triton or 'none'}",
            f"profiles: {', '.join(profiles) or '(none)'}",
        ]
        if c.abi == "stable":
            lines.append(f"track: stable ABI: serves every torch >= {c.torch_floor} built with CUDA "
                            f"{c.cuda_major}.x and every CPython >= {LIMITED_API_PYTHON} on {c.platform} "
                            f"(built against torch {c.torch}, CUDA {c.cuda}, Python {c.python})")
        else:
            lines.append("track: full ABI: " + _full_track_reason(m, c.package, c.version, c.torch, c))
        return True, [*lines, *gpu_code(m, c)]
    if cell_id in expansion.excluded:
        return False, list(expansion.excluded[cell_id])
    known = list(cells) + list(expansion.excluded)
    raise UserError(f'no cell "{cell_id}" in the matrix{did_you_mean(cell_id, known)}')


def gpu_code(m: MatrixBase, cell: Cell) -> list[str]:
    """Which code each GPU runs from the cell's wheel: the GPUs its CUDA version's policy must run on,
    then the other known GPUs that toolkit can target."""
    policy = m.spec.arch_policy.get(cell.cuda)
    required = policy.runs_on if policy else ()
    info = m.compat.cuda.get(cell.cuda)
    # every GPU the toolkit's code can run on (newer than its max_arch too: compatible SASS, PTX)
    known = [g for g in archcover.load_gpus().gpus if info is None or Version(g) >= Version(info.min_arch)]
    ptx = max(cell.archs, key=lambda a: Version(a.rstrip("af"))) if cell.ptx and cell.archs else None
    lines = [f"GPUs (arch_policy.{cell.cuda}.runs_on first):" if required else "GPUs:"]
    if policy and (cell.archs, cell.ptx) != (policy.archs, policy.ptx):
        lines[0] += " this cell sets its own archs, so runs_on is not guaranteed"
    for gpu in [*required, *(g for g in known if g not in required)]:
        code = archcover.code_for(gpu, cell.archs, ptx)
        what = code.describe() if code else "no code: the wheel does not run on it"
        extra = "" if gpu in required or not required else " (not in runs_on)"
        lines.append(f"  {gpu:>5} {archcover.gpu_names(gpu)}: {what}{extra}")
    if ptx:
        lines.append(f"  newer GPUs: compute_{ptx.replace('.', '')}: PTX, JIT-compiled by the driver at first load")
    return lines


def _full_track_reason(m: MatrixBase, package: str, version: str, torch: str, cell: Cell | None = None) -> str:
    if cell is not None and m.spec.stable_abi.enabled and m.recipes[package].get(version).stable_floor:
        k = kept_full(m, cell.platform, cell.python, cell.cuda, cell.torch, package, version)
        if k is not None:
            return (f"kept beside the stable-ABI track by stable_abi.keep_full[{k}] at "
                    f"{m.doc.location(('stable_abi', 'keep_full', k))}")
    track, why = track_of(m, package, version)
    return _full_track_reason_text(track, why, torch, m.recipes[package].get(version).stable_floor)


def track_of(m: MatrixBase, package: str, version: str) -> tuple[AbiTrack, str]:
    """Which track serves torch >= the floor for a package version, and why."""
    rv = m.recipes[package].get(version)
    floor = rv.stable_floor
    if floor is None:
        return "full", f"{package} {version} stays full ABI: {rv.stable_reason()}"
    if not m.spec.stable_abi.enabled:
        return "full", f"{package} {version} has a stable-ABI port (torch >= {floor}) but matrix.yaml has stable_abi off"
    decided = rv.stable_abi.decided_by if rv.stable_abi else ""
    return "stable", f"{package} {version}: stable-ABI track for torch >= {floor}" + (
        f" (floor set by {decided})" if decided else "")


def _full_track_reason_text(track: AbiTrack, why: str, torch: str, floor: str | None) -> str:
    if track == "stable" and floor is not None:
        return f"torch {torch_minor(torch)} is below the stable floor {floor} ({why})"
    return why
