"""Compile groups and the cibuildwheel matrix: every cell in exactly one group, groups keyed on what the
compile sees, and every generated job, run through the real cibuildwheel with the env `_build.yml` gives it,
selects exactly its cells' Pythons."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from buildtool.build.groups import (
    cibuildwheel_identifier,
    cibuildwheel_matrix,
    compile_groups,
    group_id,
)
from buildtool.errors import UserError
from buildtool.spec import yamlsrc
from buildtool.spec.matrix import Cell, load_matrix

REPO = Path(__file__).resolve().parents[1]


def _cell(**kw: Any) -> Cell:
    base: dict[str, Any] = dict(platform="linux-x86_64", python="3.11", cuda="13.0", torch="2.14.1",
                                package="causal-conv1d", version="1.7.0", cxx11_abi=True, cxx_std="20",
                                archs=("8.0", "9.0"), ptx=True, triton=None)
    base.update(kw)
    return Cell(**base)


@pytest.fixture(scope="module")
def matrix():  # type: ignore[no-untyped-def]
    return load_matrix(REPO)


def test_release_groups_cover_every_cell_once(matrix) -> None:  # type: ignore[no-untyped-def]
    cells = matrix.select(matrix.expand(), "release")
    groups = compile_groups(cells)
    # one group per (platform, CUDA, torch minor, package version), several Pythons in most
    assert len(groups) == len({(c.platform, c.cuda, c.torch_minor, c.package, c.version) if c.abi == "full"
                               else c.compile_group for c in cells})  # stable: the matrix's own grouping
    assert len(groups) < len(cells) / 3
    ids = [c.id for g in groups for c in g.cells]
    assert sorted(ids) == sorted(c.id for c in cells)
    for g in groups:
        keys = {(c.platform, c.cuda, c.torch_minor, c.package, c.version, c.abi) for c in g.cells}
        assert len(keys) == 1, g.id
        assert list(g.pythons) == sorted(g.pythons, key=lambda v: tuple(map(int, v.split("."))))
        assert g.id == group_id(g.first) and g.abi == g.first.abi


def test_a_stable_cell_is_a_group_of_its_own() -> None:
    """The stable track has one cell per platform x CUDA major x package version (Cell.compile_group):
    one job, one identifier (the Python it builds with; the wheel is cp310-abi3)."""
    stable = _cell(abi="stable", torch="2.14.1", torch_floor="2.10", python="3.12")
    full = [_cell(python=py) for py in ("3.12", "3.10", "3.11")]
    groups = compile_groups([stable, *full])
    assert [g.id for g in groups] == [stable.compile_group, "linux-x86_64-cu130-torch2.14-causal-conv1d-1.7.0"]
    assert groups[0].abi == "stable" and groups[0].identifiers == ("cp312-manylinux_x86_64",)
    assert groups[1].pythons == ("3.10", "3.11", "3.12") and groups[1].abi == "full"
    # two full-ABI cells of one Python in one group would be two wheels with one name: a matrix bug
    with pytest.raises(UserError, match="two cells for one Python"):
        compile_groups([full[0], full[0]])


def test_a_group_whose_cells_disagree_on_archs_is_refused() -> None:
    with pytest.raises(UserError, match="share a compile group but not their archs"):
        compile_groups([_cell(python="3.11"), _cell(python="3.12", archs=("9.0",))])


def test_identifiers() -> None:
    assert cibuildwheel_identifier(_cell()) == "cp311-manylinux_x86_64"
    assert cibuildwheel_identifier(_cell(platform="linux-aarch64", python="3.13")) == "cp313-manylinux_aarch64"
    assert cibuildwheel_identifier(_cell(platform="windows-x86_64", python="3.10")) == "cp310-win_amd64"


def test_job_row_installs_the_group_torch_from_its_index(matrix) -> None:  # type: ignore[no-untyped-def]
    cells = matrix.select(matrix.expand(), "release")
    rows = [r for m in cibuildwheel_matrix(cells, runners=matrix.spec.runners)["matrices"] for r in m["include"]]
    by_id = {r["id"]: r for r in rows}
    pypi = by_id["linux-x86_64-cu130-torch2.14-causal-conv1d-1.7.0"]  # torch 2.14.1's PyPI wheels are cu130
    assert pypi["cibw-before-build"].startswith("python -m pip install torch==2.14.1 && ")
    other = by_id["linux-x86_64-cu126-torch2.9-causal-conv1d-1.7.0"]
    assert "torch==2.9.1 --index-url https://download.pytorch.org/whl/cu126" in other["cibw-before-build"]
    assert "mamba-wheel-builder==" in other["cibw-before-build"]
    assert other["cibw-config-settings"] == f"archs={other['arch-list']}"
    assert all("delvewheel" in r["cibw-before-build"] for r in rows if r["os"] == "windows")


# ---------------------------------------------------------------- the real cibuildwheel
_RUN_CIBW = r"""
import contextlib, io, json, os, sys
from unittest import mock
from cibuildwheel.__main__ import main
jobs = json.load(sys.stdin)
out = []
for job in jobs:
    buf = io.StringIO()
    argv = ["cibuildwheel", "--platform", job["platform"], "--print-build-identifiers", job["dir"]]
    with mock.patch.dict(os.environ, job["env"], clear=True), mock.patch.object(sys, "argv", argv), \
            contextlib.redirect_stdout(buf):
        try:
            main()
        except SystemExit as exc:
            if exc.code not in (0, None):
                out.append({"error": exc.code})
                continue
    out.append({"ids": buf.getvalue().split()})
json.dump(out, sys.stdout)
"""


def _cibuildwheel_step() -> dict[str, Any]:
    job = yamlsrc.load(REPO / ".github" / "workflows" / "_build.yml").data["jobs"]["build"]
    (step,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith("pypa/cibuildwheel@")]
    return step


def _job_env(step_env: dict[str, Any], row: dict[str, Any]) -> dict[str, str]:
    """The step's CIBW_* env as GitHub would expand it for this matrix row."""
    def expand(text: str) -> str:
        text = re.sub(r"\$\{\{\s*matrix\.([A-Za-z0-9_-]+)\s*\}\}", lambda m: str(row[m.group(1)]), text)
        # github.workspace is the job's checkout: this one
        return re.sub(r"\$\{\{\s*github\.workspace\s*\}\}", REPO.as_posix(), text)

    env = {k: expand(str(v)) for k, v in step_env.items()}
    assert not any("${{" in v for v in env.values()), env
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}


def test_every_job_selects_exactly_its_cells_in_real_cibuildwheel(matrix, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("cibuildwheel", reason="cibuildwheel is part of the dev extra")
    from buildtool.source.prepare import pyproject_text

    step = _cibuildwheel_step()
    assert step["with"]["package-dir"] == "tree"
    recipe = matrix.recipes["causal-conv1d"]
    # the project cibuildwheel reads is a prepared tree: the generated pyproject.toml, nothing else
    (tmp_path / "pyproject.toml").write_text(pyproject_text(recipe, recipe.get("1.7.0"), "linux-x86_64",
                                                            torch="2.14.1", cuda="13.0"), encoding="utf-8")
    jobs, expected = [], []
    for profile, stable in (("release", False), ("seeds", False), ("release", True)):
        cells = matrix.select(matrix.expand(stable_abi=stable), profile)
        by_id = {c.id: c for c in cells}
        data = cibuildwheel_matrix(cells, runners=matrix.spec.runners)
        for row in (r for m in data["matrices"] for r in m["include"]):
            jobs.append({"platform": row["os"], "dir": str(tmp_path), "env": _job_env(step["env"], row)})
            expected.append(sorted({cibuildwheel_identifier(by_id[cid]) for cid in row["cells"].split()}))
    proc = subprocess.run([sys.executable, "-c", _RUN_CIBW], input=json.dumps(jobs), capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert len(results) == len(expected) > 100
    for job, result, want in zip(jobs, results, expected, strict=True):
        assert sorted(result.get("ids", [])) == want, (job["env"]["CIBW_BUILD"], result)
