"""The stable-ABI port built from the real sdists (slow, needs PyPI, nvcc 13.0 and the tests' torch 2.14.1).

causal-conv1d 1.7.0's sdist, patched by buildtool's engine for the stable track, every TU compiled with nvcc for
sm_90 and linked into ``_C_stable.abi3.so`` as the stable kernel specs link it (-ltorch_cpu -ltorch_cuda
-lc10 -lcudart): it needs only the C shim (nm), its binding has no ATen/c10/pybind11, it loads with
torch.ops.load_library, the shim's functions refuse CPU tensors with a clear dispatcher error (no GPU here),
return upstream's structures on meta tensors (the fake kernels), and torch.compile(fullgraph=True) traces
them; one kernel TU per package has SASS identical to the full-ABI build of the same TU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_stable_abi_port import TARGET_2_10, _cuda_home, _link_cudart, _skip_reason

from buildtool.compile.procgroup import spawn_guarded

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import stable_abi_check  # noqa: E402
import tinyproj  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.network]

_PACKAGES = {
    # package: (recipe version, stable spec, full-ABI spec, shim, kernel TU compared both ways). mamba-ssm's
    # library is built by the builder on the stable track (its wheel goes through buildtool verify and the GPU).
    "causal-conv1d": ("1.7.0", "causal_conv1d_stable-1.7", "causal_conv1d_cuda-1.5", "causal_conv1d_cuda",
                      "csrc/causal_conv1d_update.cu"),
}


def _nvcc() -> Path | None:
    found = shutil.which("nvcc")
    cand = Path(found) if found else Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    return cand if cand.is_file() else None


def _fetch_tree(package: str, version: str, dest: Path, abi: str) -> Path:
    """The recipe's real sdist, extracted and patched by buildtool's engine for one ABI track."""
    from buildtool.source import patching
    from buildtool.source.fetch import fetch
    from buildtool.spec.recipe import load_recipe

    recipe = load_recipe(REPO / "recipes" / f"{package}.yaml")
    entry = next(v for v in recipe.versions if v.version == version)
    tree = fetch(entry.source, dest).tree
    patches = patching.select(patching.load_patches(REPO / "patches", package), version, "linux-x86_64", abi=abi)
    patching.apply_to_tree(tree, patches, context=f"{package} {version} {abi}")
    return tree


def _compile(tree: Path, source: str, out: Path, spec: dict[str, object], *, stable: bool, site: Path,
             cuda: Path) -> Path:
    torch_inc = site / "torch" / "include"
    incs = [f"-I{torch_inc}", *(f"-I{tree / d}" for d in spec["include_dirs"])]  # type: ignore[union-attr]
    if stable:
        defs = [f"-DTORCH_TARGET_VERSION={TARGET_2_10}", "-DUSE_CUDA", "-DPy_LIMITED_API=0x030a0000"]
    else:
        incs.append(f"-I{torch_inc / 'torch' / 'csrc' / 'api' / 'include'}")
        defs = ["-DTORCH_EXTENSION_NAME=_C", "-D_GLIBCXX_USE_CXX11_ABI=1", "-DTORCH_API_INCLUDE_EXTENSION_H"]
    if source.endswith(".cpp"):
        cmd = ["g++", "-std=c++20", "-fPIC", "-c", *spec["cxx_flags"], *incs, f"-I{cuda / 'include'}", *defs]  # type: ignore[misc]
    else:
        cmd = [str(_nvcc()), "-c", "-std=c++20", *spec["nvcc_flags"], *incs, *defs,  # type: ignore[misc]
               "-gencode", "arch=compute_90,code=sm_90", "-Xcompiler", "-fPIC"]
    cmd += [str(tree / source), "-o", str(out)]
    # the compiler tree dies with the test process, whatever kills it (buildtool's own guard)
    guarded = spawn_guarded(cmd, env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = guarded.proc.communicate()
    guarded.finish()
    assert guarded.proc.returncode == 0, f"{' '.join(cmd)}\n{err[-4000:]}"
    return out


@pytest.fixture(scope="module", params=sorted(_PACKAGES))
def stable_build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One package's stable-ABI library (every TU, sm_90) and the full-ABI build of one kernel TU."""
    from concurrent.futures import ThreadPoolExecutor

    reason = _skip_reason() or (None if _nvcc() else "no nvcc")
    if reason:
        pytest.skip(reason)
    package = request.param
    version, stable_spec, full_spec, shim, compared = _PACKAGES[package]
    site = tinyproj.torch_site_packages()
    cuda = _cuda_home(site)
    assert cuda is not None
    root = tmp_path_factory.mktemp(package)
    spec = yaml.safe_load((REPO / "kernels" / f"{stable_spec}.yaml").read_text())
    full = yaml.safe_load((REPO / "kernels" / f"{full_spec}.yaml").read_text())
    stable_tree = _fetch_tree(package, version, root / "stable", "stable")
    full_tree = _fetch_tree(package, version, root / "full", "full")
    objs = root / "obj"
    objs.mkdir()
    jobs = [(stable_tree, src, objs / f"{Path(src).stem}.o", spec, True) for src in spec["sources"]]
    jobs.append((full_tree, compared, objs / "full.o", full, False))
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        outs = list(pool.map(lambda j: _compile(*j[:4], stable=j[4], site=site, cuda=cuda), jobs))
    pkg_dir = root / "site" / spec["package"]
    pkg_dir.mkdir(parents=True)
    lib = pkg_dir / "_C_stable.abi3.so"
    torch_lib = site / "torch" / "lib"
    link = ["g++", "-shared", *map(str, outs[:-1]), f"-L{torch_lib}", "-ltorch_cpu", "-ltorch_cuda", "-lc10",
            *_link_cudart(cuda, root / "link"), "-o", str(lib)]
    proc = subprocess.run(link, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copyfile(REPO / "kernels" / "shims" / f"{shim}.py", root / "site" / f"{shim}.py")
    for py in (stable_tree / spec["package"]).glob("*.py"):  # upstream's Python, unpatched, as in the wheel
        shutil.copyfile(py, pkg_dir / py.name)
    stable_obj = objs / f"{Path(compared).stem}.o"
    return {"package": package, "lib": lib, "site": root / "site", "shim": shim, "stable_tree": stable_tree,
            "stable_obj": stable_obj, "full_obj": outs[-1]}


def test_patched_library_needs_only_the_c_shim(stable_build: dict[str, object]) -> None:
    groups = stable_abi_check.classify(stable_abi_check.undefined_symbols(Path(str(stable_build["lib"]))))
    assert groups["forbidden"] == []
    assert "aoti_torch_get_current_cuda_stream" in groups["c_shim"]
    assert "torch_c10_cuda_check_msg" in groups["c_shim"]  # STD_CUDA_KERNEL_LAUNCH_CHECK in the kernels


def test_patched_binding_has_no_aten_c10_or_pybind11(stable_build: dict[str, object]) -> None:
    tree = Path(str(stable_build["stable_tree"]))
    binding = tree / ("csrc/causal_conv1d.cpp" if stable_build["package"] == "causal-conv1d"
                      else "csrc/selective_scan/selective_scan.cpp")
    code = [ln.split("//")[0] for ln in binding.read_text().splitlines()]
    for forbidden in ("at::", "c10::", "pybind11", "PYBIND11", "torch/extension.h", "ATen/", "c10/"):
        assert not [ln for ln in code if forbidden in ln], forbidden


def test_patched_library_loads_and_shim_refuses_cpu_and_traces(stable_build: dict[str, object]) -> None:
    proc = subprocess.run([str(tinyproj.torch_python()), str(REPO / "scripts" / "stable_abi_check.py"), "probe",
                           "--path", str(stable_build["site"]), "--shim", str(stable_build["shim"])],
                          capture_output=True, text=True, timeout=900)
    report = json.loads(proc.stdout)
    assert report["ok"], report
    assert all(report["ops"].values())
    assert report["upstream"].startswith("Could not run 'causal_conv1d::causal_conv1d_fwd'")


def test_kernel_sass_identical_to_the_full_abi_build(stable_build: dict[str, object]) -> None:
    from buildtool.verify.static import find_cuobjdump, sass_by_kernel

    tool = find_cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (PATH, CUDA_HOME, triton)")
    stable = sass_by_kernel(tool, Path(str(stable_build["stable_obj"])))
    full = sass_by_kernel(tool, Path(str(stable_build["full_obj"])))
    assert stable and set(stable) == set(full)
    assert [k for k in stable if stable[k] != full[k]] == []
