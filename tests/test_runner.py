"""Matrix runner and `buildtool build`: selection, fail-fast toolchain errors, skipped foreign cells,
summary (table and JSON), exit codes, nox sessions per profile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hostsim import path_without

from buildtool.build.cell import CellResult
from buildtool.build.runner import RunReport, exit_code, summary_json, summary_table
from buildtool.errors import BuildtoolError, UserError
from buildtool.spec.matrix import load_matrix

REPO = Path(__file__).resolve().parents[1]
BUILDTOOL = [sys.executable, "-m", "buildtool"]


def _has_cuda_124() -> bool:
    """An installed CUDA 12.4 (the debian/conda providers, which would fetch one, are kept out by NO_APT_PATH)."""
    from buildtool.toolchain import resolve

    try:
        resolve("12.4", "linux-x86_64", "system")
    except BuildtoolError:
        return False
    return True


@pytest.fixture
def no_apt_env(tmp_path: Path) -> dict[str, str]:
    """This host without apt-get/dpkg-deb: the debian provider is unavailable, so CUDA 12.4 is missing."""
    return {**os.environ, "BUILDTOOL_ROOT": str(REPO),
            "PATH": path_without(("apt-get", "dpkg-deb", "micromamba", "mamba", "conda"), tmp_path / "no-apt-bin")}


def _result(cid: str, status: str) -> CellResult:
    return CellResult(cell_id=cid, status=status, seconds=1.0, log=Path(f"/tmp/{cid}.log"))  # type: ignore[arg-type]


def test_exit_codes() -> None:
    assert exit_code(RunReport(results=(_result("a", "built"), _result("b", "skipped")))) == 0
    assert exit_code(RunReport(results=(_result("a", "resumed"),))) == 0
    assert exit_code(RunReport(results=(_result("a", "built"), _result("b", "failed")))) == 1
    assert exit_code(RunReport(results=(_result("a", "skipped"),))) == 1  # nothing built
    assert exit_code(RunReport(results=(_result("a", "built"),), interrupted=True, not_run=("b",))) == 130


def test_summary_lists_every_cell() -> None:
    report = RunReport(results=(_result("cell-a", "built"), _result("cell-b", "failed")), interrupted=True,
                       not_run=("cell-c",))
    table = summary_table(report)
    assert [c.header for c in table.columns] == ["cell", "result", "time", "compile vs bound", "wheel size", "log"]
    assert table.row_count == 3
    data = summary_json(report)
    assert data["counts"] == {"verified": 0, "verified-static": 0, "built": 1, "resumed": 0, "skipped": 0, "failed": 1}
    assert data["not_run"] == ["cell-c"] and data["ok"] is False


def test_summary_says_how_far_each_wheel_was_verified() -> None:
    """`built` alone never reads as done: a wheel `buildtool build` writes passed the static checks."""
    checked = _result("cell-a", "verified-static").model_copy(
        update={"verification": "verified-static", "checks": {"record": "pass", "cuda archs": "pass"}})
    resumed = _result("cell-b", "resumed").model_copy(update={"verification": "verified-static"})
    report = RunReport(results=(checked, resumed))
    table = summary_table(report)
    assert list(table.columns[1].cells) == ["[green]verified-static[/]", "[cyan]resumed, verified-static[/]"]
    assert str(table.title).startswith("1 verified-static, 1 resumed, 0 failed")
    data = summary_json(report)
    assert data["ok"] is True and data["counts"]["verified-static"] == 1
    assert data["cells"][0]["verification"] == "verified-static" and data["cells"][0]["checks"]["record"] == "pass"
    assert exit_code(report) == 0


def test_summary_reports_the_compile_against_its_bound() -> None:
    from buildtool.compile.models import CompileBound

    bound = CompileBound(cores=2, wall_seconds=110.0, cpu_seconds=200.0).summary()
    assert bound["bound_seconds"] == 100.0 and bound["ratio"] == 1.1
    # a longest TU alone above CPU-s / cores is the bound instead
    assert CompileBound(cores=16, wall_seconds=60.0, cpu_seconds=800.0, longest_tu_alone_seconds=55.0).ratio == 1.091
    built = _result("cell-a", "built").model_copy(update={"compile_bound": bound})
    report = RunReport(results=(built,))
    table = summary_table(report)
    assert "1.10x (110.0 / 100.0 s)" in list(table.columns[3].cells)
    assert summary_json(report)["cells"][0]["compile_bound"]["ratio"] == 1.1


def test_select_cells_by_id_and_unknown_id() -> None:
    from buildtool.cli.build import select_cells

    matrix = load_matrix(REPO)
    cells = select_cells(matrix, [], None, [])
    assert [c.id for c in cells] == ["linux-x86_64-cp311-cu130-torch2.14-causal-conv1d-1.7.0"]  # default profile
    cid = cells[0].id
    assert [c.id for c in select_cells(matrix, [cid], None, [])] == [cid]
    with pytest.raises(UserError, match="did you mean"):
        select_cells(matrix, [cid.replace("cp311", "cp311x")], None, [])


@pytest.mark.skipif(_has_cuda_124(), reason="this machine has a CUDA 12.4 toolkit")
def test_missing_toolkit_fails_fast_with_providers_tried(tmp_path: Path, no_apt_env: dict[str, str]) -> None:
    env = {**no_apt_env, "BUILDTOOL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([*BUILDTOOL, "build", "--profile", "cu124", "--dist", str(tmp_path / "dist"), "--json"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["counts"]["verified-static"] == 0 and data["counts"]["failed"] > 0
    linux = [c for c in data["cells"] if c["cell_id"].startswith("linux-")]
    windows = [c for c in data["cells"] if c["cell_id"].startswith("windows-")]
    assert linux and all(c["status"] == "failed" for c in linux)
    assert windows and all(c["status"] == "skipped" for c in windows)
    message = linux[0]["message"]
    assert "no CUDA 12.4 toolkit" in message
    for provider in ("system", "pypi", "debian", "conda"):
        assert f"- {provider}:" in message
    assert "- debian: apt-get and dpkg-deb not on PATH" in message
    assert "hint:" in message
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())
    human = subprocess.run([*BUILDTOOL, "build", "--profile", "cu124", "--dist", str(tmp_path / "dist")],
                           capture_output=True, text=True, env=env, timeout=120, check=False)
    assert human.returncode == 1
    assert "Traceback" not in human.stdout + human.stderr
    assert "no CUDA 12.4 toolkit" in human.stdout and "failed" in human.stdout


def test_unknown_profile_is_a_user_error() -> None:
    proc = subprocess.run([*BUILDTOOL, "build", "--profile", "cu12"], capture_output=True, text=True,
                          env={**os.environ, "BUILDTOOL_ROOT": str(REPO)}, timeout=60, check=False)
    assert proc.returncode == 2
    assert 'unknown profile "cu12"' in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(shutil.which("nox") is None and not (Path(sys.executable).parent / "nox").exists(),
                    reason="nox not installed")
def test_nox_has_a_build_session_per_profile() -> None:
    nox = shutil.which("nox") or str(Path(sys.executable).parent / "nox")
    proc = subprocess.run([nox, "-l", "-f", str(REPO / "noxfile.py")], capture_output=True, text=True, timeout=60,
                          check=True)
    sessions = {line.split()[1] for line in proc.stdout.splitlines() if line[:2] in ("* ", "- ")}
    profiles = load_matrix(REPO).spec.profiles
    assert {f"build-{p}" for p in profiles} <= sessions
    assert {"build-local", "build-cu124", "build-cu130", "build-seeds", "build-gpu-dev"} <= sessions


def test_unexpected_error_fails_only_that_cell_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in a stage (simulated: the toolchain stage raising RuntimeError for one cell) fails that cell with
    the traceback in its log; the run goes on to the next cell."""
    import buildtool.build.cell as build_mod
    from buildtool.build.cell import BuildOptions
    from buildtool.build.runner import run_cells
    from buildtool.spec.project import Project

    matrix = load_matrix(REPO)
    cells = [c for c in matrix.select(matrix.expand(), "cu130") if c.platform == "linux-x86_64"][:2]
    calls: list[str] = []

    def broken(cell, options, cache, log):
        calls.append(cell.id)
        if len(calls) == 1:
            raise RuntimeError("stage bug")
        raise UserError("no toolkit (simulated)")

    monkeypatch.setattr(build_mod, "_toolchain_for", broken)
    options = BuildOptions(dist_dir=tmp_path / "dist", build_root=tmp_path / "build")
    report = run_cells(Project(REPO), cells, options)
    assert [r.status for r in report.results] == ["failed", "failed"] and calls == [c.id for c in cells]
    first = report.results[0]
    assert first.message.startswith("internal error (RuntimeError: stage bug)")
    assert "Traceback" in first.log.read_text() and exit_code(report) == 1
    assert report.results[1].message == "no toolkit (simulated)"


@pytest.mark.network
@pytest.mark.skipif(_has_cuda_124(), reason="this machine has a CUDA 12.4 toolkit")
@pytest.mark.skipif(shutil.which("nox") is None and not (Path(sys.executable).parent / "nox").exists(),
                    reason="nox not installed")
def test_nox_build_cu124_fails_with_the_toolchain_message(no_apt_env: dict[str, str]) -> None:
    """The real `nox -s build-cu124` (venv, install, build) on a machine without CUDA 12.4 and without apt (on a
    Debian/Ubuntu host with apt the debian provider supplies 12.4: docs/toolchain.md)."""
    nox = shutil.which("nox") or str(Path(sys.executable).parent / "nox")
    proc = subprocess.run([nox, "-s", "build-cu124", "-f", str(REPO / "noxfile.py"), "--", "--dist",
                           str(REPO / "build" / "test-dist-cu124")], capture_output=True, text=True, timeout=600,
                          check=False, cwd=REPO, env=no_apt_env)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "no CUDA 12.4 toolkit" in text and "- conda:" in text and "hint:" in text
    assert "Traceback" not in text
    assert "Session build-cu124 failed" in text
