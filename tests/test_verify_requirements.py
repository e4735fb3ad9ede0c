"""The declared-requirements check of `buildtool verify` (DESIGN decision 9): a fresh venv with the
verifying interpreter's torch, the wheel installed with its requirements resolved from PyPI as pip does today,
every public module imported. Real pip, real PyPI (tests marked `network` skip offline), real torch."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

import pytest
from fixture_wheels import compile_extension, make_wheel

from buildtool.verify.requirements import (
    check_declared_requirements,
    index_unreachable,
    public_modules,
    torch_site,
)
from buildtool.verify.static import open_wheel

TORCH_PYTHON = os.environ.get("BUILDTOOL_TORCH_PYTHON", sys.executable)


def _online() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10):
            return True
    except OSError:
        return False


_ONLINE = _online()


def network(fn):  # type: ignore[no-untyped-def]
    """The `network` marker (select or deselect with -m) plus a skip, with the reason, where PyPI is unreachable."""
    return pytest.mark.network(pytest.mark.skipif(not _ONLINE, reason="PyPI is not reachable from here")(fn))


def test_public_modules() -> None:
    names = ["pkg/__init__.py", "pkg/ops/__init__.py", "pkg/ops/scan.py", "pkg/_private.py", "pkg/tests/__init__.py",
             "pkg/tests/test_x.py", "pkg/data/kernels.json", "pkg_cuda.cpython-311-x86_64-linux-gnu.so",
             "shim.py", "pkg-1.0.dist-info/METADATA", "notapkg/x.py"]
    assert public_modules(names) == ["pkg", "pkg_cuda", "shim", "pkg.ops", "pkg.ops.scan"]


def test_offline_is_a_skip_with_the_reason(tmp_path: Path) -> None:
    assert "not reachable" in (index_unreachable("http://127.0.0.1:9/simple/", timeout=2) or "")
    whl = make_wheel(tmp_path, "tiny-kernel", "1.0.0", files={"tiny_kernel/__init__.py": ""})
    row = check_declared_requirements(open_wheel(whl), python=TORCH_PYTHON, index="http://127.0.0.1:9/simple/")
    assert row.result == "skip" and "cannot be resolved offline" in row.detail


def _torch_minor() -> str:
    found = torch_site(TORCH_PYTHON)
    if found is None:
        pytest.skip(f"{TORCH_PYTHON} has no torch (set BUILDTOOL_TORCH_PYTHON)")
    return ".".join(found[1].split(".")[:2])


@pytest.mark.slow
@network
def test_requirements_from_pypi_install_and_every_module_imports(tmp_path: Path) -> None:
    minor = _torch_minor()
    so_name, so = compile_extension(tmp_path / "ext", "tiny_kernel_cuda")
    whl = make_wheel(tmp_path / "d", "tiny-kernel", "1.0.0", requires=(f"torch=={minor}.*", "einops"),
                     files={"tiny_kernel/__init__.py": "import einops\nimport tiny_kernel_cuda\n",
                            "tiny_kernel/ops.py": "from einops import rearrange\n", so_name: so})
    row = check_declared_requirements(open_wheel(whl), python=TORCH_PYTHON)
    assert row.result == "pass", row.detail
    assert "3 public modules import" in row.detail and "einops" in row.detail
    broken = make_wheel(tmp_path / "b", "tiny-kernel", "1.0.0", requires=(f"torch=={minor}.*",),
                        files={"tiny_kernel/__init__.py": "", "tiny_kernel/ops.py": "import einops\n"})
    row = check_declared_requirements(open_wheel(broken), python=TORCH_PYTHON)
    assert row.result == "fail" and "tiny_kernel.ops: ModuleNotFoundError: No module named 'einops'" in row.detail


@pytest.mark.slow
@network
def test_mamba_ssm_tilelang_requirements_break_unbounded_and_import_as_the_recipe_declares(tmp_path: Path) -> None:
    """mamba-ssm 2.3.2.post1's tilelang requirement: unbounded, today's apache-tvm-ffi breaks `import tilelang`
    (what shipped upstream); with the recipe's bound (data/known_bad.yaml) it imports. Real tilelang from PyPI."""
    from buildtool.spec.recipe import load_recipes

    minor = _torch_minor()
    recipe = load_recipes(Path(__file__).resolve().parents[1] / "recipes")["mamba-ssm"]
    (version,) = [v for v in recipe.versions if v.version == "2.3.2.post1"]
    declared = tuple(r for r in version.requires if r.startswith(("tilelang", "apache-tvm-ffi")))
    assert len(declared) == 2, version.requires
    files = {"tiny_mamba/__init__.py": "", "tiny_mamba/tl.py": "import tilelang\n"}
    unbounded = make_wheel(tmp_path / "u", "tiny-mamba", "1.0.0", files=files,
                           requires=(f"torch=={minor}.*", declared[0]))
    row = check_declared_requirements(open_wheel(unbounded), python=TORCH_PYTHON)
    assert row.result == "fail" and "tiny_mamba.tl: ValueError: Type 'ffi.Tensor' already has a registered class" in row.detail
    bounded = make_wheel(tmp_path / "ok", "tiny-mamba", "1.0.0", files=files, requires=(f"torch=={minor}.*", *declared))
    row = check_declared_requirements(open_wheel(bounded), python=TORCH_PYTHON)
    assert row.result == "pass", row.detail
    assert "apache-tvm-ffi 0.1.11" in row.detail and "tilelang 0.1.8" in row.detail


FAMILY_WHEELS = os.environ.get("BUILDTOOL_FAMILY_WHEELS")


@pytest.mark.slow
@network
@pytest.mark.skipif(not FAMILY_WHEELS, reason="set BUILDTOOL_FAMILY_WHEELS to a directory of built family wheels "
                    "(e.g. `nox -s build-local-stable`'s dist/); building them takes an hour of nvcc")
def test_declared_requirements_green_on_real_family_wheels() -> None:
    """`buildtool verify`'s check on the project's real wheels (those that fit BUILDTOOL_TORCH_PYTHON's torch and
    Python; the others are skipped with the reason): every one installs with its requirements from PyPI today and
    every public module imports. docs/declared-requirements.md holds the measured rows."""
    from buildtool.verify.pipeline import VerifyOptions, verify

    _torch_minor()
    report = verify([Path(str(FAMILY_WHEELS))], VerifyOptions(gpu=False, python=TORCH_PYTHON))
    rows = [r for r in report.results if r.check == "declared requirements"]
    assert rows, "no wheels in BUILDTOOL_FAMILY_WHEELS"
    assert not [r for r in rows if r.result == "fail"], [(r.wheel, r.detail) for r in rows if r.result == "fail"]
    assert [r for r in rows if r.result == "pass"], [(r.wheel, r.detail) for r in rows]
