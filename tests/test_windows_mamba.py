"""mamba-ssm 2.3.2.post1 on Windows, as far as this Linux machine can prove it: the real sdist's Python imports with
Mamba-3's tilelang / CuTe (quack, cutlass) modules absent, Triton present (triton-windows installs the same `triton`
module), and the compiled extension replaced by CPU stand-ins; the source passes lint-source for windows-x86_64; the
matrix has the Windows cells (except torch 2.15: no triton-windows 3.9 yet)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from buildtool.source import patching
from buildtool.source.fetch import fetch
from buildtool.source.lint import scan
from buildtool.spec.matrix import load_matrix
from buildtool.spec.recipe import load_recipes

REPO = Path(__file__).resolve().parents[1]
TORCH_PYTHON = os.environ.get("BUILDTOOL_TORCH_PYTHON")

# Run by the torch env's interpreter: the Windows mock is the set of modules a Windows install has (no tilelang,
# quack-kernels, nvidia-cutlass-dsl or tvm-ffi: blocked here; `triton` from triton-windows: the Linux triton stands
# in; the extension: CPU stand-ins). sys.platform itself stays linux: mamba_ssm 2.3.2.post1 never reads it, and
# faking it sends third-party code (filelock) into msvcrt.
_IMPORT = r"""
import importlib.abc, json, pathlib, sys
import verify_fake_kernels as fk  # CPU stand-ins for the compiled extensions (tests/)
site = pathlib.Path(sys.argv[1])
(site / "causal_conv1d").mkdir(parents=True)
for name, src in fk.MODULE_SOURCES.items():
    (site / name).write_text(src)
(site / "causal_conv1d" / "__init__.py").write_text(fk.FAKE_CAUSAL_CONV1D_INIT)
sys.path.insert(0, str(site))
ABSENT = ("tilelang", "quack", "cutlass", "tvm_ffi")
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named '{name}' (not installable on Windows)", name=name)
        return None
sys.meta_path.insert(0, Absent())
import torch, triton
import mamba_ssm
from mamba_ssm.modules import mamba3
print(json.dumps({
    "version": mamba_ssm.__version__,
    "public": sorted(n for n in ("Mamba", "Mamba2", "Mamba3", "MambaLMHeadModel", "selective_scan_fn", "mamba_inner_fn")
                     if hasattr(mamba_ssm, n)),
    "tilelang_mimo": mamba3.mamba3_mimo_combined is not None,
    "cute_step": mamba3.mamba3_step_fn is not None,
    "selective_scan_cuda": sys.modules["selective_scan_cuda"].__file__,
    "loaded_absent": sorted(m for m in sys.modules if m.split(".")[0] in ABSENT),
}))
"""


@pytest.fixture(scope="module")
def mamba_232_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = load_recipes(REPO / "recipes")["mamba-ssm"].get("2.3.2.post1")
    dest = tmp_path_factory.mktemp("mamba-ssm") / "src"
    try:
        return fetch(recipe.source, dest).tree
    except Exception as exc:  # offline and no cached sdist
        pytest.skip(f"mamba-ssm 2.3.2.post1 sdist not available: {exc}")


def test_matrix_has_windows_mamba_ssm_for_current_torch() -> None:
    m = load_matrix(REPO)
    exp = m.expand()
    win = [c for c in exp.cells if c.platform == "windows-x86_64" and c.package == "mamba-ssm" and c.version == "2.3.2.post1"]
    # below the stable floor: full-ABI cells; torch >= 2.10: the stable-ABI track's Windows cell serves them
    assert {c.torch for c in win if c.abi != "stable"} >= {"2.6.0", "2.9.1"}
    assert any(c.abi == "stable" for c in win)
    served, why = m.explain("windows-x86_64-cp312-cu130-torch2.13-mamba-ssm-2.3.2.post1", exp)
    assert not served and "served by the stable-ABI track: windows-x86_64-abi3-" in why[0]
    assert all(c.triton and c.triton.startswith("triton-windows") for c in win)  # by marker (wheel.py)
    built, reasons = m.explain("windows-x86_64-cp312-cu130-torch2.15-mamba-ssm-2.3.2.post1", exp)
    assert not built and "exclude[" in reasons[0]


def test_windows_source_lint_is_clean_once_patched(mamba_232_tree: Path, tmp_path: Path) -> None:
    """The sdist as a Windows cell builds it: the windows-x86_64 full-ABI patches applied, then every MSVC rule of
    lint-source (CUDA 13.2 adds the /Zc:preprocessor ones)."""
    tree = tmp_path / "tree"
    shutil.copytree(mamba_232_tree, tree)
    chosen = patching.select(patching.load_patches(REPO / "patches", "mamba-ssm"), "2.3.2.post1", "windows-x86_64")
    assert chosen, "the MSVC patches of mamba-ssm 2.3.2.post1"
    before = scan(tree, platform="windows-x86_64", cuda="13.2")
    patching.apply_to_tree(tree, chosen)
    after = scan(tree, platform="windows-x86_64", cuda="13.2")
    assert before.errors and not after.errors, after.errors


@pytest.mark.network
@pytest.mark.skipif(not TORCH_PYTHON, reason="needs BUILDTOOL_TORCH_PYTHON (the tests' torch env; nox -s tests sets it)")
def test_windows_mock_import_mamba_ssm_2_3_without_tilelang_quack(mamba_232_tree: Path, tmp_path: Path) -> None:
    """The sdist's own Python, with selective_scan_cuda / causal_conv1d replaced by the CPU stand-ins of
    tests/verify_fake_kernels.py (no Windows or MSVC-built extension exists here) and its Windows requirements
    (einops, transformers; recipe: tilelang/tvm-ffi/quack only off Windows) installed by real pip."""
    assert TORCH_PYTHON
    deps = tmp_path / "deps"
    pip = subprocess.run([TORCH_PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(deps),
                          "einops", "transformers", "huggingface_hub"], capture_output=True, text=True, timeout=900)
    if pip.returncode != 0:
        pytest.skip(f"cannot install einops/transformers here: {pip.stderr.strip()[-300:]}")
    site = tmp_path / "stand-ins"
    path = [str(REPO / "tests"), str(REPO), str(mamba_232_tree), str(deps)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.run([TORCH_PYTHON, "-c", _IMPORT, str(site)], capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["version"] == "2.3.2.post1"
    assert got["public"] == ["Mamba", "Mamba2", "Mamba3", "MambaLMHeadModel", "mamba_inner_fn", "selective_scan_fn"]
    assert got["tilelang_mimo"] is False and got["cute_step"] is False  # Mamba-3's tilelang / CuTe paths absent
    assert got["loaded_absent"] == []
    assert got["selective_scan_cuda"].startswith(str(site))  # the stand-in, not a build
