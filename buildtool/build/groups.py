"""Compile groups: the cells whose device objects are the same, so one CI job builds them all.

A full-ABI cell's CUDA objects depend on (platform, CUDA, torch, package version) but not on the Python
version (only the binding TU includes Python.h, compile.cache_key): the Pythons of such a group build one
after another in one job and share the object cache. A stable-ABI cell (decision 7) serves every torch >=
its floor and every CPython >= 3.10: the matrix has one per (platform, CUDA major, package version), a group
of its own. The key is the cell's own `Cell.compile_group` (buildtool.spec.matrix owns it).

`cibuildwheel_matrix(cells)` turns the groups into GitHub Actions job rows for .github/workflows/_build.yml:
each row carries the cibuildwheel options of its job (CIBW_BUILD = the group's build identifiers,
CIBW_BEFORE_BUILD = the group's torch, CIBW_CONFIG_SETTINGS = its archs). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from packaging.version import Version

from buildtool import __version__
from buildtool.build.buildenv import torch_index
from buildtool.errors import UserError, allowed_list
from buildtool.model import Frozen
from buildtool.spec.abitrack import AbiTrack
from buildtool.spec.compat import load_compat
from buildtool.spec.matrix import Cell
from buildtool.spec.matrix.github import GITHUB_CHUNK, github_matrix
from buildtool.spec.matrix.schema import DEFAULT_RUNNERS, Runner

__all__ = [
    "BUILDER_DIST",
    "CompileGroup",
    "cibuildwheel_identifier",
    "cibuildwheel_matrix",
    "compile_groups",
    "group_id",
]

BUILDER_DIST = "mamba-wheel-builder"
# Where the workflow puts the builder's own wheel inside the prepared tree (pip/uv find it through
# PIP_FIND_LINKS / UV_FIND_LINKS: the builder is not on PyPI).
BUILDER_WHEELS = ".buildtool/wheels"


def group_id(cell: Cell) -> str:
    """linux-x86_64-cu130-torch2.14-causal-conv1d-1.7.0 (full ABI); a stable cell's own id."""
    return cell.compile_group


def cibuildwheel_identifier(cell: Cell) -> str:
    """cibuildwheel's build identifier for the Python the cell builds with: cp311-manylinux_x86_64,
    cp312-win_amd64 (a stable cell builds with its Python and tags the wheel cp310-abi3)."""
    info = load_compat().platforms[cell.platform]
    plat = f"manylinux_{info.machine}" if info.os == "linux" else info.wheel_tag
    return f"cp{cell.python.replace('.', '')}-{plat}"


class CompileGroup(Frozen):
    """Cells built by one job: the same device objects, one wheel per Python."""

    id: str
    abi: AbiTrack
    cells: tuple[Cell, ...]

    @property
    def first(self) -> Cell:
        return self.cells[0]

    @property
    def platform(self) -> str:
        return self.first.platform

    @property
    def pythons(self) -> tuple[str, ...]:
        """The Pythons cibuildwheel builds (a stable group's cells may repeat one: several torch, one wheel)."""
        return tuple(dict.fromkeys(c.python for c in self.cells))

    @property
    def identifiers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(cibuildwheel_identifier(c) for c in self.cells))

    @property
    def build_torch(self) -> str:
        """The torch every Python of the group builds against (stable track: the lowest one of its cells)."""
        return min((c.torch for c in self.cells), key=Version)


def compile_groups(cells: Sequence[Cell]) -> list[CompileGroup]:
    """Group cells (order of first appearance kept; Pythons sorted inside a group). A group whose cells
    disagree on what the compile sees (archs, C++ ABI/std) is a matrix bug: refuse it."""
    buckets: dict[str, list[Cell]] = {}
    for cell in cells:
        buckets.setdefault(cell.compile_group, []).append(cell)
    groups = []
    for members in buckets.values():
        members.sort(key=lambda c: Version(c.python))
        first = members[0]
        for other in members[1:]:
            if (other.archs, other.ptx, other.cxx11_abi, other.cxx_std) != (first.archs, first.ptx, first.cxx11_abi,
                                                                           first.cxx_std):
                raise UserError(f"cells {first.id} and {other.id} share a compile group but not their archs / "
                                "C++ ABI / C++ std: the matrix must give one group one compile")
        if first.abi == "full" and len({c.python for c in members}) != len(members):
            raise UserError(f"compile group {group_id(first)} has two cells for one Python: "
                            + ", ".join(c.id for c in members))
        groups.append(CompileGroup(id=group_id(first), abi=first.abi, cells=tuple(members)))
    return groups


def before_build(group: CompileGroup) -> str:
    """CIBW_BEFORE_BUILD: install the group's torch, ninja and the builder into the Python being built
    (the build runs without isolation, so `python -m build` finds exactly these). Runs once per Python."""
    cell = group.first.model_copy(update={"torch": group.build_torch})
    index = torch_index(cell)
    torch_cmd = f"python -m pip install torch=={group.build_torch}" + (f" --index-url {index}" if index else "")
    # delvewheel: `buildtool repair` runs in this env on Windows (cibuildwheel's repair step)
    tools = " delvewheel" if group.first.os == "windows" else ""
    return f"{torch_cmd} && python -m pip install ninja {BUILDER_DIST}=={__version__}{tools}"


def job_row(group: CompileGroup, runner: Runner) -> dict[str, Any]:
    """One GitHub Actions job: the group's facts plus the cibuildwheel options that select its cells."""
    cell = group.first
    info = load_compat().platforms[cell.platform]
    return {
        "id": group.id, "artifact": f"{cell.platform}-cu{cell.cuda_major}-{group.id}", "platform": cell.platform, "os": cell.os, "runs-on": runner.runs_on,
        "abi": group.abi, "cuda": cell.cuda, "torch": group.build_torch, "package": cell.package,
        "version": cell.version, "pythons": " ".join(group.pythons), "cells": " ".join(c.id for c in group.cells),
        "arch-list": cell.arch_list,
        "cibw-build": " ".join(group.identifiers),
        "cibw-archs": info.machine,
        "cibw-image": runner.container,
        "cibw-before-build": before_build(group),
        "cibw-config-settings": f"archs={cell.arch_list}",
    }


def cibuildwheel_matrix(cells: Sequence[Cell], chunk: int = GITHUB_CHUNK,
                        runners: Mapping[str, Runner] | None = None) -> dict[str, Any]:
    """The `--format github` shape (count, chunks, matrices, verify) with one row per compile group."""
    table = dict(runners or DEFAULT_RUNNERS)
    missing = sorted({c.platform for c in cells} - set(table))
    if missing:
        raise UserError(f"runners: no runner for platform {', '.join(missing)}; runners: {allowed_list(table)}")
    groups = compile_groups(cells)
    rows = [job_row(g, table[g.platform]) for g in groups]
    chunks = [rows[i : i + chunk] for i in range(0, len(rows), chunk)] or [[]]
    return {
        "count": len(rows), "cells": len(cells), "chunks": len(chunks),
        "matrices": [{"include": part} for part in chunks],
        "verify": github_matrix(cells, runners=table)["verify"],  # GPU verification is per CUDA major either way
    }
