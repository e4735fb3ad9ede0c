"""The project's own matrix.yaml: seeds, the current line, derived fields, excludes, selection, output formats,
and golden files for `--format github` (regenerate with UPDATE_GOLDEN=1 pytest tests/test_matrix.py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from buildtool.errors import UserError
from buildtool.spec.compat import load_compat
from buildtool.spec.matrix import Cell, Matrix, load_matrix
from buildtool.spec.matrix.expand import Expansion
from buildtool.spec.matrix.github import GITHUB_CHUNK, github_matrix
from buildtool.spec.matrix.rules import parse_filter

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix(REPO)


@pytest.fixture(scope="module")
def expansion(matrix: Matrix) -> Expansion:
    return matrix.expand()


def _cell(expansion: Expansion, cell_id: str) -> Cell:
    cells = expansion.by_id()
    assert cell_id in cells, f"{cell_id} not built"
    return cells[cell_id]


# ---------------------------------------------------------------- seeds and the current line
SEED_IDS = [
    "windows-x86_64-cp310-cu124-torch2.4-causal-conv1d-1.4.0",
    "windows-x86_64-cp310-cu124-torch2.4-mamba-ssm-2.2.2",
    "windows-x86_64-cp310-cu124-torch2.4-causal-conv1d-1.1.1",
    "windows-x86_64-cp310-cu124-torch2.4-mamba-ssm-vim-1.1.1",
    "windows-x86_64-cp310-cu124-torch2.4-selective-scan-0.0.2",
    "linux-x86_64-cp310-cu118-torch2.3-causal-conv1d-1.4.0",
    "linux-x86_64-cp310-cu118-torch2.3-mamba-ssm-2.2.2",
]


def test_seed_cells(matrix: Matrix, expansion: Expansion) -> None:
    seeds = matrix.select(expansion, "seeds")
    assert sorted(c.id for c in seeds) == sorted(SEED_IDS)
    win = _cell(expansion, SEED_IDS[0])
    assert (win.torch, win.cuda, win.python) == ("2.4.1", "12.4", "3.10")
    assert win.cxx11_abi is False  # Windows has no such ABI
    assert win.triton == "triton-windows==3.1.*"
    assert win.triton_package == "triton-windows"
    assert win.arch_list == "7.0;8.0;9.0+PTX"  # 7.0 SASS runs on 7.5, 8.0 on 8.6/8.9 (arch_policy by coverage)
    linux = _cell(expansion, "linux-x86_64-cp310-cu118-torch2.3-mamba-ssm-2.2.2")
    assert linux.torch == "2.3.1"
    assert linux.cxx11_abi is False  # torch 2.3 wheels: pre-CXX11 ABI
    assert linux.triton == "triton==2.3.*"
    assert linux.triton_package == "triton"


def test_current_line(matrix: Matrix) -> None:
    # The full-ABI derivations, on the matrix without its stable-ABI track (which serves torch >= 2.10 from one
    # cell per platform x CUDA major: tests/test_stable_abi_track.py)
    expansion = matrix.expand(stable_abi=False)
    current = matrix.select(expansion, "current")
    assert len(current) > 400
    assert {(c.package, c.version) for c in current} == {("causal-conv1d", "1.7.0"), ("mamba-ssm", "2.3.2.post1")}
    axes_torch = {"2.6.0", "2.7.1", "2.8.0", "2.9.1", "2.10.0", "2.11.0", "2.12.1", "2.13.0", "2.14.1", "2.15.0"}
    assert {c.torch for c in current} == axes_torch
    # torch 2.6: the ABI is per CUDA build (cu126 experimental CXX11 ABI wheels)
    assert _cell(expansion, "linux-x86_64-cp312-cu124-torch2.6-causal-conv1d-1.7.0").cxx11_abi is False
    assert _cell(expansion, "linux-x86_64-cp312-cu126-torch2.6-causal-conv1d-1.7.0").cxx11_abi is True
    assert _cell(expansion, "linux-x86_64-cp312-cu128-torch2.7-mamba-ssm-2.3.2.post1").cxx11_abi is True
    # torch 2.13 needs C++20 on Windows only
    assert _cell(expansion, "windows-x86_64-cp312-cu130-torch2.13-causal-conv1d-1.7.0").cxx_std == "20"
    assert _cell(expansion, "linux-x86_64-cp312-cu130-torch2.13-causal-conv1d-1.7.0").cxx_std == "17"
    # CUDA 13 cannot build below sm_75; 12.8+ adds Blackwell
    cu130 = _cell(expansion, "linux-x86_64-cp312-cu130-torch2.13-causal-conv1d-1.7.0")
    assert cu130.archs[0] == "7.5" and "12.0" in cu130.archs and cu130.arch_list.endswith("12.0")  # no PTX for CUDA 13


def test_local_profile_is_the_developer_default(matrix: Matrix, expansion: Expansion) -> None:
    (cell,) = matrix.select(expansion, matrix.spec.default_profile)
    assert cell.id == "linux-x86_64-cp311-cu130-torch2.14-causal-conv1d-1.7.0"
    assert cell.archs == ("9.0",) and cell.ptx is False and cell.arch_list == "9.0"
    assert cell.cxx_std == "20" and cell.cxx11_abi is True and cell.triton == "triton==3.8.*"


def test_every_profile_selects_cells(matrix: Matrix, expansion: Expansion) -> None:
    for name in matrix.spec.profiles:
        assert matrix.select(expansion, name), name


# ---------------------------------------------------------------- rules
def test_excludes_are_respected(matrix: Matrix, expansion: Expansion) -> None:
    include_ids = set()
    for entry in matrix.spec.include:
        include_ids |= {c.id for c in expansion.cells if set(entry.tags) & set(c.tags)}
    for cell in expansion.cells:
        if cell.id in include_ids:
            continue
        for rule in matrix.spec.exclude:
            assert not rule.matches(cell), cell.id
    # Windows mamba-ssm 2.3.2.post1: every torch with a triton-windows line; not 2.15 (none yet)
    full = matrix.expand(stable_abi=False)  # (with the stable track, torch >= 2.10 is served by it)
    win = {c.torch for c in full.cells if c.platform == "windows-x86_64" and c.package == "mamba-ssm"
           and c.version == "2.3.2.post1" and c.abi == "full"}
    assert "2.14.1" in win and "2.6.0" in win and "2.15.0" not in win


def test_every_cell_is_legal(matrix: Matrix, expansion: Expansion) -> None:
    compat = load_compat()
    for cell in expansion.cells:
        assert compat.violations(platform=cell.platform, python=cell.python, cuda=cell.cuda, torch=cell.torch) == []
        constraints = matrix.recipes[cell.package].get(cell.version).constraints
        assert constraints.violations(torch=cell.torch, python=cell.python, cuda=cell.cuda, platform=cell.platform) == []
        info = compat.cuda[cell.cuda]
        assert all(info.can_compile(a.rstrip("a")) for a in cell.archs), cell.id
        assert cell.archs, cell.id


def test_ids_unique_and_sorted(expansion: Expansion) -> None:
    ids = [c.id for c in expansion.cells]
    assert len(ids) == len(set(ids))
    platforms = [c.platform for c in expansion.cells]
    assert platforms == sorted(platforms)


def test_expansion_is_deterministic(matrix: Matrix, expansion: Expansion) -> None:
    again = load_matrix(REPO).expand()
    assert [c.id for c in again.cells] == [c.id for c in expansion.cells]
    assert dict(again.excluded) == dict(expansion.excluded)


def test_explain(matrix: Matrix, expansion: Expansion) -> None:
    built, reasons = matrix.explain("linux-x86_64-cp311-cu130-torch2.14-causal-conv1d-1.7.0", expansion)
    assert built and "profiles: local" in reasons[1]
    built, reasons = matrix.explain("windows-x86_64-cp311-cu130-torch2.15-mamba-ssm-2.3.2.post1", expansion)
    assert not built and "exclude[1]" in reasons[0] and "matrix.yaml:" in reasons[0]
    built, reasons = matrix.explain("linux-x86_64-cp314-cu118-torch2.7-causal-conv1d-1.7.0", expansion)
    assert not built and any("no wheels for Python 3.14" in r for r in reasons)
    with pytest.raises(UserError, match=re.escape('did you mean "linux-x86_64-cp311-cu130-torch2.14-causal-conv1d-1.7.0"')):
        matrix.explain("linux-x86_64-cp311-cu130-torch2.14-causal-conv1d-1.7.1", expansion)


# ---------------------------------------------------------------- selection
def test_filters(matrix: Matrix, expansion: Expansion) -> None:
    cells = matrix.select(expansion, "current", ["platform=windows-x86_64", "torch=2.9", "python=3.12,3.13",
                                                 "package=causal-conv1d"])
    assert {c.id for c in cells} == {
        "windows-x86_64-cp312-cu126-torch2.9-causal-conv1d-1.7.0",
        "windows-x86_64-cp312-cu128-torch2.9-causal-conv1d-1.7.0",
        "windows-x86_64-cp312-cu130-torch2.9-causal-conv1d-1.7.0",
        "windows-x86_64-cp313-cu126-torch2.9-causal-conv1d-1.7.0",
        "windows-x86_64-cp313-cu128-torch2.9-causal-conv1d-1.7.0",
        "windows-x86_64-cp313-cu130-torch2.9-causal-conv1d-1.7.0",
    }
    assert all(c.triton_package == "triton-windows" for c in cells)
    by_pkg = matrix.select(expansion, None, ["package=mamba-ssm-vim==1.1.1"])
    assert {c.package for c in by_pkg} == {"mamba-ssm-vim"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cuda", "must look like AXIS=VALUE"),
        ("cdua=12.4", 'unknown filter axis "cdua" (did you mean "cuda"?)'),
        ("platform=windows", 'unknown platform "windows"'),
    ],
)
def test_bad_filters(text: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        parse_filter(text)


# ---------------------------------------------------------------- output formats
def test_summary_has_derived_fields(expansion: Expansion) -> None:
    data = _cell(expansion, SEED_IDS[0]).summary()
    assert data["id"] == SEED_IDS[0]
    assert data["cxx11_abi"] == "FALSE"
    assert data["arch_list"] == "7.0;8.0;9.0+PTX"
    assert data["triton_package"] == "triton-windows"
    json.dumps(data)


def test_github_chunks(matrix: Matrix, expansion: Expansion) -> None:
    cells = list(expansion.cells)
    data = github_matrix(cells, runners=matrix.spec.runners)
    assert data["count"] == len(cells)
    assert data["chunks"] == -(-len(cells) // GITHUB_CHUNK) == len(data["matrices"])
    assert all(len(m["include"]) <= GITHUB_CHUNK for m in data["matrices"])
    rows = [row for m in data["matrices"] for row in m["include"]]
    assert [r["id"] for r in rows] == [c.id for c in cells]
    linux = next(r for r in rows if r["platform"] == "linux-x86_64")
    assert linux["container"].startswith("quay.io/pypa/manylinux_2_28") and linux["runs-on"] == "ubuntu-22.04"
    win = next(r for r in rows if r["platform"] == "windows-x86_64")
    assert win["container"] == "" and win["runs-on"] == "windows-2022"
    verify = data["verify"]["include"]
    assert {"platform": "linux-x86_64", "os": "linux", "cuda-major": "12",
            "runs-on": ["self-hosted", "linux", "gpu"]} in verify
    assert len({(v["platform"], v["cuda-major"]) for v in verify}) == len(verify)
    assert github_matrix([])["matrices"] == [{"include": []}]


def _golden_text(data: dict) -> str:
    """One matrix row per line: small files whose diffs show exactly which cells changed."""
    head = {k: v for k, v in data.items() if k != "matrices"}
    lines = ["{", *(f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()), '  "matrices": [']
    for i, m in enumerate(data["matrices"]):
        rows = ",\n".join(f"      {json.dumps(r)}" for r in m["include"])
        lines.append('    {"include": [\n' + rows + "\n    ]}" + ("," if i < len(data["matrices"]) - 1 else ""))
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def _golden_path(profile: str) -> Path:
    return GOLDEN / f"github-{profile}.json"


def _profiles() -> list[str]:
    return list(load_matrix(REPO).spec.profiles)


@pytest.mark.parametrize("profile", _profiles())
def test_github_golden(matrix: Matrix, expansion: Expansion, profile: str) -> None:
    data = github_matrix(matrix.select(expansion, profile), runners=matrix.spec.runners)
    text = _golden_text(data)
    path = _golden_path(profile)
    if UPDATE_GOLDEN:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file for profile {profile}: run UPDATE_GOLDEN=1 pytest tests/test_matrix.py"
    assert json.loads(path.read_text(encoding="utf-8")) == data, (
        f"`buildtool matrix --format github --profile {profile}` changed; if intended, regenerate with "
        "UPDATE_GOLDEN=1 pytest tests/test_matrix.py and review the diff"
    )


def test_no_stale_golden_files() -> None:
    expected = {_golden_path(p).name for p in _profiles()}
    present = {p.name for p in GOLDEN.glob("github-*.json")}
    assert present <= expected, f"golden files for profiles that no longer exist: {sorted(present - expected)}"


def test_profile_archs_narrow_only_that_profile(matrix: Matrix, expansion: Expansion) -> None:
    """`local` builds the release's torch 2.14.1 cu130 cell for sm_90 only; the release keeps every arch."""
    (local,) = matrix.select(expansion, "local")
    assert local.id == "linux-x86_64-cp311-cu130-torch2.14-causal-conv1d-1.7.0"
    assert local.archs == ("9.0",) and local.ptx is False
    release = _cell(expansion, local.id)
    assert release.archs == matrix.spec.arch_policy["13.0"].archs and release.ptx is False


def test_profile_archs_the_cuda_cannot_compile(tmp_path: Path) -> None:
    text = (REPO / "matrix.yaml").read_text(encoding="utf-8").replace(
        '    archs: ["9.0"]\n  gpu-dev:', '    archs: ["3.5"]\n  gpu-dev:')
    assert 'archs: ["3.5"]' in text
    (tmp_path / "matrix.yaml").write_text(text, encoding="utf-8")
    for sub in ("recipes", "kernels", "patches"):
        (tmp_path / sub).symlink_to(REPO / sub)
    m = load_matrix(tmp_path)
    with pytest.raises(UserError, match=r"profile \"local\": CUDA 13.0 .* cannot compile sm_35") as info:
        m.select(m.expand(), "local")
    assert "matrix.yaml:" in str(info.value.location)
