"""`python -m buildtool matrix` as a user runs it: output formats, exit codes, and errors that are one
message on stderr, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"


def run_matrix(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BUILDTOOL_ROOT"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "buildtool", "matrix", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def assert_user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    text = " ".join(proc.stderr.split())  # rich may wrap long lines
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {proc.stderr}"
    return text


def test_json_lists_seeds_and_current_line_with_derived_fields() -> None:
    proc = run_matrix("--format", "json")
    assert proc.returncode == 0, proc.stderr
    cells = {c["id"]: c for c in json.loads(proc.stdout)}
    seed = cells["windows-x86_64-cp310-cu124-torch2.4-mamba-ssm-2.2.2"]
    assert seed["cxx11_abi"] == "FALSE"
    assert seed["triton_package"] == "triton-windows" and seed["triton"] == "triton-windows==3.1.*"
    assert seed["arch_list"] == "7.0;8.0;9.0+PTX"
    assert seed["tags"] == ["seeds"]
    current = cells["linux-x86_64-cp313-cu128-torch2.8-mamba-ssm-2.3.2.post1"]
    assert current["cxx11_abi"] == "TRUE"
    assert current["triton_package"] == "triton" and current["triton"] == "triton==3.4.*"
    assert current["arch_list"] == "7.5;8.0;9.0;10.0;12.0+PTX"
    # torch < 2.10 full ABI, torch >= 2.10 from the stable track (+ the full-ABI speed baselines)
    assert sum(1 for c in cells.values() if c["package"] == "mamba-ssm" and c["version"] == "2.3.2.post1") > 60
    stable = cells["linux-x86_64-abi3-cu132-torch2.15-mamba-ssm-2.3.2.post1"]
    assert stable["abi"] == "stable" and stable["torch_floor"] == "2.10" and stable["triton"] == "triton"


@pytest.mark.parametrize("profile", ["seeds", "local", "cu124"])
def test_github_format_matches_golden(profile: str) -> None:
    proc = run_matrix("--format", "github", "--profile", profile)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads((GOLDEN / f"github-{profile}.json").read_text(encoding="utf-8"))


def full_abi_only(tmp_path: Path) -> Path:
    """The project's matrix with its stable-ABI track off: 600+ cells, more than two GitHub chunks."""
    path = tmp_path / "matrix.yaml"
    text = (REPO / "matrix.yaml").read_text(encoding="utf-8")
    assert "\n  enabled: true\n" in text
    path.write_text(text.replace("\n  enabled: true\n", "\n  enabled: false\n"), encoding="utf-8")
    return path


def test_github_output_file(tmp_path: Path) -> None:
    out = tmp_path / "github_output"
    out.write_text("earlier=1\n", encoding="utf-8")
    proc = run_matrix("--format", "github", "--profile", "current", "--github-output", str(out),
                      "--file", str(full_abi_only(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    lines = dict(line.split("=", 1) for line in out.read_text(encoding="utf-8").splitlines())
    assert lines["earlier"] == "1"  # appended, as GitHub expects
    assert int(lines["count"]) == printed["count"] and int(lines["chunks"]) == printed["chunks"] == 3  # 604 cells, 256 a chunk
    assert [json.loads(lines[f"matrix-{i}"]) for i in range(printed["chunks"])] == printed["matrices"]
    assert json.loads(lines["verify"]) == printed["verify"]


def test_ids_table_and_profiles() -> None:
    ids = run_matrix("--format", "ids", "--profile", "local")
    assert ids.stdout.split() == ["linux-x86_64-cp311-cu130-torch2.14-causal-conv1d-1.7.0"]
    table = run_matrix("--profile", "seeds")
    assert table.returncode == 0 and "7 cells" in table.stdout and "triton-windows" in table.stdout
    profiles = run_matrix("--list-profiles")
    assert profiles.returncode == 0 and "current" in profiles.stdout and "seeds" in profiles.stdout


def test_explain_json() -> None:
    proc = run_matrix("--explain", "windows-x86_64-cp311-cu130-torch2.15-mamba-ssm-2.3.2.post1", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["built"] is False and "exclude[1]" in data["reasons"][0]


def test_runs_from_a_subdirectory() -> None:
    proc = run_matrix("--format", "ids", "--profile", "local", cwd=REPO / "tests")
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- errors
def test_unknown_profile() -> None:
    proc = run_matrix("--profile", "seed")
    assert_user_error(proc, "matrix.yaml:", '--profile: unknown profile "seed"', 'did you mean "seeds"', "profiles: local")


def test_empty_filter() -> None:
    proc = run_matrix("--profile", "seeds", "--filter", "cuda=13.2")
    assert_user_error(proc, "matrix.yaml:", "--filter cuda=13.2: empty selection", "cuda values there: 11.8, 12.4")


def test_bad_filter_axis() -> None:
    assert_user_error(run_matrix("--filter", "cdua=12.4"), 'unknown filter axis "cdua"', 'did you mean "cuda"')


def test_unknown_cell_to_explain() -> None:
    proc = run_matrix("--explain", "linux-x86_64-cp311-cu130-torch2.14-causal-conv1d-1.7.1")
    assert_user_error(proc, 'did you mean "linux-x86_64-cp311-cu130-torch2.14-causal-conv1d-1.7.0"')


def test_github_output_needs_github_format(tmp_path: Path) -> None:
    assert_user_error(run_matrix("--github-output", str(tmp_path / "o")), "--github-output and --max-chunks need --format github")


def test_max_chunks(tmp_path: Path) -> None:
    full = str(full_abi_only(tmp_path))
    assert run_matrix("--format", "github", "--profile", "current", "--max-chunks", "3", "--file", full).returncode == 0
    assert_user_error(run_matrix("--format", "github", "--profile", "current", "--max-chunks", "2", "--file", full),
                      "cells need 3 chunks of 256, but --max-chunks is 2", "hint: add fan-out jobs")


def test_missing_file(tmp_path: Path) -> None:
    assert_user_error(run_matrix("--file", str(tmp_path / "nope.yaml")), "file not found")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(b"version: 1\naxes: \xff\xfe\n")
    assert_user_error(run_matrix("--file", str(path)), f"{path}", "not UTF-8")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("version: 1\naxes: [", ("m.yaml:2:8", "YAML syntax error")),
        ("version: 1\nversion: 1\n", ("m.yaml:2:1", 'duplicate key "version"')),
        ("version: 1\naxis: {}\n", ("m.yaml:2:1", 'unknown key "axis"', 'did you mean "axes"')),
        ("version: 1\naxes: []\n", ("m.yaml:2:7", "axes: expected a mapping", "got a list")),
        ("", ("m.yaml:1:1", 'missing required key "version"', "required keys: arch_policy, axes, packages, version")),
        ("- 1\n- 2\n", ("m.yaml:1:1", "expected a mapping")),
    ],
)
def test_malformed_files_exit_2_without_traceback(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    assert_user_error(run_matrix("--file", str(path)), *fragments)


def test_empty_matrix_selection(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\naxes:\n  platform: [linux-x86_64]\n  python: ['3.11']\n  cuda: ['12.4']\n  torch: ['2.14.1']\n"
        "packages: [causal-conv1d==1.7.0]\narch_policy:\n  '12.4': {archs: ['8.0']}\n",
        encoding="utf-8",
    )
    assert_user_error(run_matrix("--file", str(path)), "m.yaml:2:1", "empty selection: the matrix produces no cell",
                      "torch 2.14.1 has no CUDA 12.4 build")


def test_reader_closing_the_pipe_is_no_traceback(tmp_path: Path) -> None:
    """`buildtool matrix --format ids | head -1`: a real pipe whose reader exits after one line."""
    import subprocess
    import sys

    proc = subprocess.run(
        f"{sys.executable} -m buildtool matrix --profile release --format ids | head -1",
        shell=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=120,
    )
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
