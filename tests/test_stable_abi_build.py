"""One stable-ABI cell end to end through `buildtool build` (real nvcc, real torch 2.14.1, real pip): the tiny
fixture's `tiny_stable` module (STABLE_TORCH_LIBRARY, TORCH_TARGET_VERSION 2.10) built into a cp310-abi3 wheel,
its name / METADATA / library checked, the static stable-ABI checks and abi3audit run on it, and the wheel
installed next to torch: the op registers, a CPU call fails with a clear error (no GPU here), and
the graph tracer torch.compile uses traces a
function calling it (through the shim's fake kernel)."""

from __future__ import annotations

import json
import subprocess
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import tinyproj

from buildtool.verify.stableabi import check_abi3audit, check_stable_symbols, find_abi3audit
from buildtool.verify.static import open_wheel

pytestmark = [pytest.mark.slow, pytest.mark.skipif(tinyproj.available() is not None,
                                                   reason=str(tinyproj.available()))]


@pytest.fixture(scope="module")
def stable_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tinyproj-stable")
    mirror = tinyproj.make_project(root)
    env = tinyproj.build_env(root, tmp_path_factory.getbasetemp() / "tiny-stable-cache")
    dist = root / "dist"
    proc = subprocess.run([*tinyproj.build_command(mirror, dist, "--profile", "stable"), "--json"], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (cell,) = json.loads(proc.stdout)["cells"]
    assert cell["cell_id"] == tinyproj.STABLE_CELL_ID and cell["status"] == "verified-static"
    return dist / tinyproj.STABLE_WHEEL


def test_stable_wheel_name_metadata_and_layout(stable_wheel: Path) -> None:
    with zipfile.ZipFile(stable_wheel) as zf:
        names = set(zf.namelist())
        meta = Parser().parsestr(zf.read("tiny-0.1+cu13stable.dist-info/METADATA").decode())
        wheel = zf.read("tiny-0.1+cu13stable.dist-info/WHEEL").decode()
        prov = json.loads(zf.read("tiny-0.1+cu13stable.dist-info/buildtool_provenance.json"))
    assert {"tiny/_C_stable.abi3.so", "tiny_cuda.py", "tiny/__init__.py"} <= names
    assert meta["Version"] == "0.1+cu13stable" and meta["Requires-Python"] == ">=3.10"
    assert meta.get_all("Requires-Dist") == ["torch>=2.10", "packaging", 'triton; platform_system == "Linux"']
    assert "Tag: cp310-abi3-linux_x86_64" in wheel
    assert prov["stable_abi"] == {"track": "stable", "torch_floor": "2.10", "torch_target_version": "0x020a000000000000",
                                  "built_against_torch": "2.14.1", "py_limited_api": "0x030a0000",
                                  "shims": ["tiny_cuda.py"]}
    assert prov["cell"]["abi"] == "stable"


def test_stable_wheel_passes_the_static_stable_abi_checks(stable_wheel: Path) -> None:
    wc = open_wheel(stable_wheel)
    (lib,) = wc.elves.values()
    assert not [n for n in lib.needed if "python" in n]
    assert {"libtorch_cpu.so", "libc10.so", "libcudart.so.13"} <= set(lib.needed)
    symbols = check_stable_symbols(wc)
    assert symbols.result == "pass", symbols.detail
    audit = check_abi3audit(wc, find_abi3audit())
    assert audit.result in ("pass", "skip"), audit.detail
    assert audit.result == "pass" or "not installed" in audit.detail


def test_stable_wheel_loads_next_to_torch_and_traces(stable_wheel: Path, tmp_path: Path) -> None:
    python = tinyproj.torch_venv(tmp_path / "venv")
    pip = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(stable_wheel)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert pip.returncode == 0, pip.stderr
    code = """
import torch, tiny_cuda
print("op", torch.ops.tiny.scale_add.default.name())
try:
    tiny_cuda.scale_add(torch.ones(4), torch.ones(4), 2.0)
except Exception as exc:
    print("cpu", type(exc).__name__, str(exc).splitlines()[0])
from torch._subclasses.fake_tensor import FakeTensorMode
with FakeTensorMode():
    x = torch.empty(8, device="cuda")
    print("fake", tuple(tiny_cuda.scale_add(x, x, 1.0).shape))
from torch.fx.experimental.proxy_tensor import make_fx
def f(a, b):
    return tiny_cuda.scale_add(a, b, 3.0) * 2
with FakeTensorMode():  # what torch.compile's tracer runs: the op's fake kernel, no GPU needed
    a, b = torch.empty(8, device="cuda"), torch.empty(8, device="cuda")
    graph = make_fx(f)(a, b)
print("traced", "tiny.scale_add.default" in str(graph.graph))
"""
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300, check=False,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "op tiny::scale_add" in lines
    assert any(ln.startswith("cpu NotImplementedError Could not run 'tiny::scale_add' with arguments from the 'CPU' backend")
               for ln in lines)
    assert "fake (8,)" in lines and "traced True" in lines
