"""Property tests of matrix expansion over generated matrix files: no duplicate ids, excludes respected,
every cell legal per the compatibility data and the recipes, nothing legal silently dropped, includes
added or refused for a stated reason, and the same answer every time."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.version import Version

from buildtool.errors import UserError
from buildtool.spec.compat import PLATFORMS, load_compat
from buildtool.spec.matrix import Matrix
from buildtool.spec.recipe import load_recipes
from buildtool.versions import torch_minor

REPO = Path(__file__).resolve().parents[1]
RECIPES = load_recipes(REPO / "recipes")
COMPAT = load_compat()

PYTHONS = sorted({py for t in COMPAT.torch.values() for py in t.python}, key=Version)
CUDAS = list(COMPAT.cuda)
TORCHES = [t.release for t in COMPAT.torch.values()] + ["2.7", "2.13"]  # minors are allowed too
PACKAGE_VERSIONS = [(name, v.version) for name, r in RECIPES.items() for v in r.versions]
ARCHS = ["5.0", "7.0", "7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0"]


def _subset(values: list[str], min_size: int = 1, max_size: int = 4) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=min_size, max_size=max_size, unique=True)


@st.composite
def selectors(draw: st.DrawFn) -> dict[str, Any]:
    sel: dict[str, Any] = {}
    for axis, values in (("platform", list(PLATFORMS)), ("python", PYTHONS), ("cuda", CUDAS), ("torch", TORCHES)):
        if draw(st.booleans()):
            sel[axis] = draw(_subset(values, max_size=2))
    if draw(st.booleans()):
        refs = [f"{n}=={v}" for n, v in PACKAGE_VERSIONS] + list(RECIPES)
        sel["package"] = draw(_subset(refs, max_size=2))
    return sel or {"platform": [draw(st.sampled_from(list(PLATFORMS)))]}


@st.composite
def matrix_specs(draw: st.DrawFn) -> dict[str, Any]:
    # Draw torch first and take CUDA and Python mostly from what those torches ship, so most examples
    # produce cells; a few foreign values keep the illegal paths exercised.
    torches = draw(_subset(TORCHES, max_size=4))
    infos = [COMPAT.torch_info(t) for t in torches]
    shipped_cuda = sorted({c for i in infos if i for c in i.cuda}, key=Version)
    shipped_py = sorted({p for i in infos if i for p in i.python}, key=Version)
    cudas = draw(_subset(shipped_cuda, max_size=3)) + draw(_subset(CUDAS, min_size=0, max_size=1))
    pythons = draw(_subset(shipped_py, max_size=3)) + draw(_subset(PYTHONS, min_size=0, max_size=1))
    pkgs = draw(_subset(PACKAGE_VERSIONS, max_size=3))  # type: ignore[arg-type]
    spec: dict[str, Any] = {
        "version": 1,
        "axes": {
            "platform": draw(_subset(list(PLATFORMS), max_size=3)),
            "python": list(dict.fromkeys(pythons)),
            "cuda": list(dict.fromkeys(cudas)),
            "torch": torches,
        },
        "packages": [f"{n}=={v}" for n, v in pkgs],
        "exclude": draw(st.lists(selectors(), max_size=3)),
        "arch_policy": {},
        "include": [],
    }
    for cuda in sorted(set(cudas) | set(CUDAS if draw(st.booleans()) else [])):
        info = COMPAT.cuda[cuda]
        archs = [a for a in ARCHS if info.can_compile(a)]
        spec["arch_policy"][cuda] = {"archs": draw(_subset(archs, max_size=3)), "ptx": draw(st.booleans())}
    for i in range(draw(st.integers(0, 3))):
        if draw(st.integers(0, 4)):  # mostly legal entries
            platform, python, cuda, torch, pkg, ver = draw(st.sampled_from(LEGAL))
            packages = [f"{pkg}=={ver}"]
        else:
            platform, python, cuda, torch = (draw(st.sampled_from(v)) for v in (list(PLATFORMS), PYTHONS, CUDAS, TORCHES))
            packages = [f"{n}=={v}" for n, v in draw(_subset(PACKAGE_VERSIONS, max_size=2))]  # type: ignore[arg-type]
        entry: dict[str, Any] = {"platform": platform, "python": python, "cuda": cuda, "torch": torch,
                                 "packages": packages, "tags": [f"inc{i}"]}
        if cuda not in spec["arch_policy"] or draw(st.booleans()):
            info = COMPAT.cuda[cuda]
            entry["archs"] = draw(_subset([a for a in ARCHS if info.can_compile(a)], max_size=2))
        spec["include"].append(entry)
    return spec


# ---------------------------------------------------------------- an independent oracle
def _all_legal() -> list[tuple[str, str, str, str, str, str]]:
    out = []
    for torch in TORCHES:
        info = COMPAT.torch_info(torch)
        assert info is not None
        for platform, python, (pkg, ver) in itertools.product(PLATFORMS, info.python, PACKAGE_VERSIONS):
            for cuda in info.cuda_for(platform):
                if _legal(platform, python, cuda, torch, pkg, ver):
                    out.append((platform, python, cuda, torch, pkg, ver))
    return out


def _release(torch: str) -> str:
    info = COMPAT.torch_info(torch)
    assert info is not None
    return torch if torch.count(".") == 2 else info.release


def _legal(platform: str, python: str, cuda: str, torch: str, package: str, version: str) -> bool:
    if COMPAT.violations(platform=platform, python=python, cuda=cuda, torch=torch):
        return False
    constraints = RECIPES[package].get(version).constraints
    return not constraints.violations(torch=_release(torch), python=python, cuda=cuda, platform=platform)


def _matches(sel: dict[str, Any], platform: str, python: str, cuda: str, torch: str, package: str, version: str) -> bool:
    checks = {
        "platform": platform in sel.get("platform", [platform]),
        "python": python in sel.get("python", [python]),
        "cuda": cuda in sel.get("cuda", [cuda]),
        "torch": bool({_release(torch), torch_minor(torch)} & set(sel.get("torch", [_release(torch)]))),
        "package": bool({package, f"{package}=={version}"} & set(sel.get("package", [package]))),
    }
    return all(checks.values())


def _cid(platform: str, python: str, cuda: str, torch: str, package: str, version: str) -> str:
    return f"{platform}-cp{python.replace('.', '')}-cu{cuda.replace('.', '')}-torch{torch_minor(torch)}-{package}-{version}"


def _expected_axes_cells(spec: dict[str, Any]) -> set[str]:
    axes = spec["axes"]
    pvs = [(Requirement(r).name, str(Requirement(r).specifier).lstrip("=")) for r in spec["packages"]]
    out = set()
    for platform, python, cuda, torch, (pkg, ver) in itertools.product(
        axes["platform"], axes["python"], axes["cuda"], axes["torch"], pvs
    ):
        key = (platform, python, cuda, torch, pkg, ver)
        if _legal(*key) and not any(_matches(sel, *key) for sel in spec["exclude"]):
            out.add(_cid(*key))
    return out


def _load(spec: dict[str, Any]) -> Matrix:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "matrix.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        return Matrix.load(path, RECIPES, COMPAT)


LEGAL = _all_legal()


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(matrix_specs())
def test_expansion_properties(spec: dict[str, Any]) -> None:
    matrix = _load(spec)
    try:
        expansion = matrix.expand()
    except UserError as exc:
        # an include may be refused, but only for a stated, true reason
        text = str(exc)
        event("include refused")
        assert exc.location is not None and "include[" in text, text
        assert "impossible cell" in text or "duplicate cell" in text, text
        i = int(text.split("include[")[1].split("]")[0])
        entry = spec["include"][i]
        if "impossible cell" in text:
            combos = [(entry["platform"], entry["python"], entry["cuda"], entry["torch"], *r.split("==")) for r in entry["packages"]]
            illegal = [c for c in combos if not _legal(*c)]
            no_policy = "archs" not in entry and entry["cuda"] not in spec["arch_policy"]
            assert illegal or no_policy or "cannot compile" in text, text
        return

    ids = [c.id for c in expansion.cells]
    event(f"cells: {'0' if not ids else '1-20' if len(ids) <= 20 else '>20'}")
    assert len(ids) == len(set(ids)), "duplicate cell ids"

    # every cell is legal per compat data and recipes, with compilable archs
    for cell in expansion.cells:
        assert _legal(cell.platform, cell.python, cell.cuda, cell.torch, cell.package, cell.version), cell.id
        assert cell.archs and all(COMPAT.cuda[cell.cuda].can_compile(a) for a in cell.archs), cell.id
        info = COMPAT.torch_info(cell.torch)
        assert info is not None and cell.cxx11_abi == info.abi_for(cell.platform, cell.cuda)
        assert cell.triton_package == ("triton-windows" if cell.os == "windows" else "triton") or cell.triton is None

    # excludes respected (include entries are explicit and may add back a cell), nothing legal dropped
    axes_cells = {c.id for c in expansion.cells if not c.tags}
    assert axes_cells == _expected_axes_cells(spec)
    for cell in expansion.cells:
        if not cell.tags:
            key = (cell.platform, cell.python, cell.cuda, cell.torch, cell.package, cell.version)
            assert not any(_matches(sel, *key) for sel in spec["exclude"]), cell.id

    # every include cell is present
    for entry in spec["include"]:
        for ref in entry["packages"]:
            pkg, ver = ref.split("==")
            assert _cid(entry["platform"], entry["python"], entry["cuda"], entry["torch"], pkg, ver) in ids

    # every excluded candidate carries a reason; built and excluded never overlap
    assert not set(expansion.excluded) & set(ids)
    assert all(expansion.excluded.values())

    # deterministic
    assert [c.id for c in _load(spec).expand().cells] == ids


@settings(max_examples=40, deadline=None, database=None)
@given(st.lists(st.sampled_from([*TORCHES, "2.9.0", "2.2.0", "3.0"]), min_size=1, max_size=3, unique=True))
def test_unknown_torch_is_an_error_never_an_empty_matrix(torches: list[str]) -> None:
    spec = {
        "version": 1,
        "axes": {"platform": ["linux-x86_64"], "python": ["3.11"], "cuda": ["12.6"], "torch": torches},
        "packages": ["causal-conv1d==1.7.0"],
        "arch_policy": {"12.6": {"archs": ["8.0"]}},
    }
    known = all(
        (info := COMPAT.torch_info(t)) is not None and (t == info.release or t == torch_minor(t)) for t in torches
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "matrix.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        try:
            Matrix.load(path, RECIPES, COMPAT)
        except UserError as exc:
            assert not known
            assert 'axes.torch: unknown torch "' in str(exc) and "allowed: 2.3.1" in str(exc)
            bad = str(exc).split('unknown torch "')[1].split('"')[0]
            assert exc.location is not None and exc.location.line is not None
            assert bad in path.read_text(encoding="utf-8").splitlines()[exc.location.line - 1]
        else:
            assert known
