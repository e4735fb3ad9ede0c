"""The stable-ABI port (patches/*/stable-abi-binding.patch, kernels/shims/*, kernels/*_stable-*.yaml).

Default suite: the tests' tiny stable-ABI op (tests/fixtures/stable_tiny, g++ only, a few seconds) compiled
for real with TORCH_TARGET_VERSION against the tests' torch 2.14.1, linked as the stable specs link; it needs
only the C shim (nm), loads with torch.ops.load_library, refuses CPU tensors with a clear error (no GPU
here) and torch.compile(fullgraph=True) traces a call through its fake kernel. Plus the pure checks of the
patch headers, the kernel specs and the shims' files.

The real patched trees compiled whole: tests/test_stable_abi_port_build.py (slow).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import stable_abi_check  # noqa: E402
import tinyproj  # noqa: E402

TINY = REPO / "tests" / "fixtures" / "stable_tiny" / "stable_tiny.cpp"
TARGET_2_10 = "0x020a000000000000"


def _cuda_home(site: Path) -> Path | None:
    """A CUDA toolkit with cuda_runtime_api.h and libcudart: $CUDA_HOME, /usr/local/cuda, else the
    nvidia-cuda-runtime wheel next to torch (torch cu13 wheels pull it in)."""
    for cand in (os.environ.get("CUDA_HOME"), "/usr/local/cuda", str(site / "nvidia" / "cu13")):
        if cand and (Path(cand) / "include" / "cuda_runtime_api.h").is_file():
            return Path(cand)
    return None


def _libdir(cuda: Path) -> Path:
    return next((d for d in (cuda / "lib64", cuda / "lib") if any(d.glob("libcudart.so*"))), cuda / "lib64")


def _link_cudart(cuda: Path, into: Path) -> list[str]:
    """-L/-l for cudart; the wheel ships only libcudart.so.13, so give the linker a libcudart.so to find."""
    lib = _libdir(cuda)
    if (lib / "libcudart.so").exists():
        return [f"-L{lib}", "-lcudart"]
    real = sorted(lib.glob("libcudart.so.*"))[0]
    into.mkdir(parents=True, exist_ok=True)
    (into / "libcudart.so").symlink_to(real)
    return [f"-L{into}", "-lcudart"]


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "Linux only (g++, nm)"
    if not shutil.which("g++") or not shutil.which("nm"):
        return "needs g++ and nm"
    return None


@pytest.fixture(scope="module")
def tiny_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    site = tinyproj.torch_site_packages()
    cuda = _cuda_home(site)
    if cuda is None:
        pytest.skip("no CUDA runtime headers (toolkit or nvidia wheel)")
    out = tmp_path_factory.mktemp("stable_tiny")
    lib = out / "_C_stable.abi3.so"
    torch_dir = site / "torch"
    cmd = ["g++", "-std=c++17", "-O2", "-fPIC", "-shared", str(TINY), f"-I{torch_dir / 'include'}",
           f"-I{cuda / 'include'}", f"-DTORCH_TARGET_VERSION={TARGET_2_10}", "-DUSE_CUDA",
           "-DPy_LIMITED_API=0x030a0000", f"-L{torch_dir / 'lib'}", "-ltorch_cpu", "-ltorch_cuda", "-lc10",
           *_link_cudart(cuda, out / "link"), "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return lib


def test_tiny_stable_library_needs_only_the_c_shim(tiny_lib: Path) -> None:
    groups = stable_abi_check.classify(stable_abi_check.undefined_symbols(tiny_lib))
    assert groups["forbidden"] == []
    assert {"aoti_torch_get_current_cuda_stream", "aoti_torch_create_device_guard", "torch_library_impl"} <= set(
        groups["c_shim"])
    # the rest is libc / libstdc++ / the CUDA runtime: nothing Python, nothing ATen
    assert all(not s.startswith(("Py", "_Py")) for s in groups["other"])
    assert "cudaMemcpyAsync" in groups["other"]


def test_classify_flags_aten_c10_python_and_pybind11() -> None:
    groups = stable_abi_check.classify([
        "_ZN2at6detail10empty_cudaEv", "_ZNK3c1010TensorImpl4sizeEl", "_ZN5torch8autograd4gradEv",
        "_ZN8pybind116detail11get_internalsEv", "PyLong_FromLong", "_Py_Dealloc", "_ZTVN3c1011ErrorAlwaysE",
        "aoti_torch_get_sizes", "torch_call_dispatcher", "cudaLaunchKernel", "_ZNSt6localeD1Ev", "memcpy"])
    assert groups["forbidden"] == ["_ZN2at6detail10empty_cudaEv", "_ZNK3c1010TensorImpl4sizeEl",
                                   "_ZN5torch8autograd4gradEv", "_ZN8pybind116detail11get_internalsEv",
                                   "PyLong_FromLong", "_Py_Dealloc", "_ZTVN3c1011ErrorAlwaysE"]
    assert groups["c_shim"] == ["aoti_torch_get_sizes", "torch_call_dispatcher"]


def test_the_script_and_the_wheel_check_share_one_set_of_rules() -> None:
    """scripts/stable_abi_check.py loads buildtool.verify.stable_symbols by path: the same answers, no copy."""
    from buildtool.verify import stable_symbols

    symbols = ["_ZN6caffe28TypeMeta3fooEv", "_ZTIN8pybind1117builtin_exceptionE", "_ZNKR3c106SymInt4exprEv",
               "Py_IncRef@Py_3.10", "aoti_torch_empty_strided", "torch_library_impl", "cudaGetLastError", "free"]
    assert stable_abi_check.classify(symbols) == stable_symbols.classify(symbols) == {
        "c_shim": ["aoti_torch_empty_strided", "torch_library_impl"],
        "forbidden": ["_ZN6caffe28TypeMeta3fooEv", "_ZTIN8pybind1117builtin_exceptionE", "_ZNKR3c106SymInt4exprEv",
                      "Py_IncRef"],
        "other": ["cudaGetLastError", "free"]}
    text = (REPO / "scripts" / "stable_abi_check.py").read_text()
    assert "re.compile" not in text and "stable_symbols.py" in text


_TINY_PROBE = textwrap.dedent("""
    import json, sys, torch
    torch.ops.load_library(sys.argv[1])
    op = torch.ops.stable_tiny.copy_pair
    report = {"schema": str(op.default._schema),
              "cuda_kernel": torch._C._dispatch_has_kernel_for_dispatch_key("stable_tiny::copy_pair", "CUDA")}
    try:
        op(torch.ones(3), None)
        report["cpu"] = "ran"
    except NotImplementedError as exc:
        report["cpu"] = str(exc).splitlines()[0]

    @torch.library.register_fake("stable_tiny::copy_pair")
    def _fake(x, y):
        return [torch.empty_like(x)] + ([torch.empty_like(y)] if y is not None else [])

    graphs = []
    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    @torch.compile(backend=backend, fullgraph=True)
    def f(x, y):
        a, b = op(x * 2, y)
        return a + b

    try:
        f(torch.ones(3), torch.ones(3))
        report["compiled_run"] = "ran"
    except NotImplementedError:
        report["compiled_run"] = "refused on CPU"
    report["graphs"] = len(graphs)
    report["graph_code"] = graphs[0].code if graphs else ""
    report["meta"] = [list(t.shape) for t in op(torch.empty(4, 2, device="meta"), torch.empty(3, device="meta"))]
    print(json.dumps(report))
""")


def test_tiny_stable_library_loads_refuses_cpu_and_traces(tiny_lib: Path) -> None:
    proc = subprocess.run([str(tinyproj.torch_python()), "-c", _TINY_PROBE, str(tiny_lib)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["schema"] == "stable_tiny::copy_pair(Tensor x, Tensor? y) -> Tensor[]"
    assert report["cuda_kernel"] is True
    # no GPU here: the dispatcher names the missing backend instead of crashing
    assert "Could not run 'stable_tiny::copy_pair' with arguments from the 'CPU' backend" in report["cpu"]
    assert report["graphs"] == 1 and "torch.ops.stable_tiny.copy_pair" in report["graph_code"]
    assert report["compiled_run"] == "refused on CPU"
    assert report["meta"] == [[4, 2], [3]]


# ------------------------------------------------------------------------------ pure: patches, specs, shims

def _patch_header(path: Path) -> dict[str, object]:
    text = path.read_text()
    return yaml.safe_load(text[: text.index("\ndiff --git ")])


@pytest.mark.parametrize(("package", "version"), [("causal-conv1d", "==1.7.0"), ("mamba-ssm", "==2.3.2.post1")])
def test_binding_patches_are_stable_track_only_and_leave_no_aten_in_the_binding(package: str, version: str) -> None:
    path = REPO / "patches" / package / "stable-abi-binding.patch"
    header = _patch_header(path)
    assert header["abi"] == "stable" and header["versions"] == version
    assert "TORCH_TARGET_VERSION 2.10" in str(header["notes"])
    added = [ln[1:] for ln in path.read_text().splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    binding = "causal_conv1d.cpp" if package == "causal-conv1d" else "selective_scan.cpp"
    text = path.read_text()
    start = text.index(f"diff --git a/csrc/{'selective_scan/' if package == 'mamba-ssm' else ''}{binding}")
    end = text.find("\ndiff --git ", start + 1)
    binding_added = [ln[1:] for ln in text[start:end if end > 0 else None].splitlines()
                     if ln.startswith("+") and not ln.startswith("+++")]
    code = [ln.split("//")[0].replace("STD_TORCH_CHECK(", "") for ln in binding_added]
    for forbidden in ("at::", "c10::", "pybind11", "PYBIND11", "torch/extension.h", "TORCH_CHECK(", "AT_ERROR"):
        assert not [ln for ln in code if forbidden in ln], forbidden
    assert any("STABLE_TORCH_LIBRARY(" in ln for ln in added)
    assert any("aoti_torch_get_current_cuda_stream" in ln for ln in added)
    assert any("torch::stable::accelerator::DeviceGuard" in ln for ln in added)


@pytest.mark.parametrize(("stable", "full"), [("causal_conv1d_stable-1.7", "causal_conv1d_cuda-1.5"),
                                              ("selective_scan_stable-2.3", "selective_scan_cuda-2.3")])
def test_stable_specs_mirror_the_full_abi_specs(stable: str, full: str) -> None:
    s = yaml.safe_load((REPO / "kernels" / f"{stable}.yaml").read_text())
    f = yaml.safe_load((REPO / "kernels" / f"{full}.yaml").read_text())
    assert s["abi"] == "stable" and s["module"] == "_C_stable"
    assert s["link_libs"] == ["torch_cpu", "torch_cuda", "c10", "cudart"]
    for shim in s["shims"]:
        assert (REPO / "kernels" / shim).is_file()
    for key in ("sources", "include_dirs", "cxx_flags", "nvcc_flags", "split", "rules"):
        assert s.get(key) == f.get(key), key
    assert not any("TORCH_TARGET_VERSION" in flag for flag in s["cxx_flags"] + s["nvcc_flags"])
