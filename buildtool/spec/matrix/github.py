"""GitHub Actions output: the build matrix chunked to GitHub's job limit, plus the GPU verify matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from buildtool.errors import UserError, allowed_list
from buildtool.spec.matrix.cell import Cell
from buildtool.spec.matrix.schema import DEFAULT_RUNNERS, Runner

GITHUB_CHUNK = 256  # GitHub Actions: at most 256 jobs per matrix


def github_matrix(
    cells: Sequence[Cell], chunk: int = GITHUB_CHUNK, runners: Mapping[str, Runner] | None = None
) -> dict[str, Any]:
    """GitHub Actions `include` matrices, chunked so no job matrix exceeds 256 entries, plus the verify
    matrix: one job per (platform, CUDA major) on that platform's self-hosted GPU runner."""
    table = dict(runners or DEFAULT_RUNNERS)
    missing = sorted({c.platform for c in cells} - set(table))
    if missing:
        raise UserError(f"runners: no runner for platform {', '.join(missing)}; runners: {allowed_list(table)}")
    rows = [
        {
            "id": c.id, "platform": c.platform, "os": c.os, "runs-on": table[c.platform].runs_on,
            "container": table[c.platform].container, "python": c.python, "cuda": c.cuda, "torch": c.torch,
            "package": c.package, "version": c.version, "cxx11-abi": "TRUE" if c.cxx11_abi else "FALSE",
            "arch-list": c.arch_list, "abi": c.abi,
        }
        for c in cells
    ]
    chunks = [rows[i : i + chunk] for i in range(0, len(rows), chunk)] or [[]]
    groups = sorted({(c.platform, c.cuda_major) for c in cells})
    verify = [
        {"platform": p, "os": p.split("-")[0], "cuda-major": major, "runs-on": list(table[p].gpu_runs_on)}
        for p, major in groups
    ]
    return {
        "count": len(rows), "chunks": len(chunks), "matrices": [{"include": part} for part in chunks],
        "verify": {"include": verify},
    }
