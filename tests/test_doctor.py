"""`buildtool doctor` on constructed environments.

Real venvs with the wrong things installed (real ELF extensions compiled here with libtorch symbols of
another torch or the old C++ ABI, a cu12 libcudart dependency, a wrong-Python suffix, a mismatched
triton, an API-skewed mamba-ssm/causal-conv1d pair, HOME unset, CUDA_HOME wrong, stale pip cache, ...).
Recorded fixtures (tests named *_fixture) only where the real thing cannot exist here: a GPU, a driver,
Windows, another nvcc/gcc/glibc.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixture_wheels import (
    ABI0_CALL,
    ABI0_DECL,
    OLD_TORCH_CALL,
    OLD_TORCH_DECL,
    buildtool,
    clean_env,
    compile_extension,
    find_torch_site,
    label,
    make_venv,
    make_wheel,
    pip_install,
)
from provenance_samples import current_provenance, legacy_provenance

from buildtool.user.doctor import Context, diagnose, load_catalogue
from buildtool.user.doctor.checks import CHECKS
from buildtool.user.doctor.model import Status
from buildtool.user.envinfo import DistInfo, Environment, HostInfo, PythonEnv, TorchInfo, probe_python

pytestmark = pytest.mark.slow

MAMBA_SIMPLE = "class Mamba:\n    def __init__(self, d_model, d_state=16, d_conv=4, expand=2):\n        pass\n"


def statuses(stdout: str) -> dict[str, str]:
    data = json.loads(stdout)
    return {r["id"]: r["status"] for r in data["results"]}


def evidence(stdout: str, check_id: str) -> str:
    return next(r["evidence"] for r in json.loads(stdout)["results"] if r["id"] == check_id)


# ---------------------------------------------------------------- catalogue
def test_catalogue_covers_at_least_20_failures() -> None:
    cat = load_catalogue()
    covered = {f for e in cat.checks for f in e.failures if f.startswith("F")}
    assert len({f[:3] for f in covered}) >= 20, sorted(covered)
    assert {e.check for e in cat.checks} <= set(CHECKS)
    assert len({e.id for e in cat.checks}) == len(cat.checks)
    assert all(e.fix and e.title for e in cat.checks)


# ---------------------------------------------------------------- real broken venv
@pytest.fixture(scope="module")
def torch_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return find_torch_site(tmp_path_factory.mktemp("torchcache"))


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory, torch_site: Path) -> subprocess.CompletedProcess[str]:
    root = tmp_path_factory.mktemp("broken")
    work = root / "build"
    minor = "2.14" if "2.14" in str(list(torch_site.glob("torch-*.dist-info"))) else "2.13"
    # a libcudart.so.12 to link against: the extension then records DT_NEEDED libcudart.so.12 (F03)
    work.mkdir()
    (work / "stub.c").write_text("int cudart_stub(void) { return 0; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcudart.so.12", str(work / "stub.c"),
                    "-o", str(work / "libcudart.so")], check=True)
    conv_so, conv = compile_extension(work, "causal_conv1d_cuda", decls=OLD_TORCH_DECL, calls=OLD_TORCH_CALL,
                                      flags=(f"-L{work}", "-Wl,--no-as-needed", "-lcudart"))
    mamba_so, mamba = compile_extension(work, "selective_scan_cuda", decls=ABI0_DECL, calls=ABI0_CALL,
                                        flags=("-D_GLIBCXX_USE_CXX11_ABI=0",))
    oflex_so, oflex = compile_extension(work, "selective_scan_cuda_oflex", suffix=".cpython-310-x86_64-linux-gnu.so")
    dist = root / "dist"
    wheels = [
        make_wheel(dist, "causal-conv1d", f"1.4.0+{label(minor, '12.4')}",
                   files={"causal_conv1d/__init__.py": "__version__ = '1.4.0'\n", conv_so: conv}),
        make_wheel(dist, "mamba-ssm", f"2.3.2+{label(minor)}",
                   files={"mamba_ssm/__init__.py": "", "mamba_ssm/modules/__init__.py": "",
                          "mamba_ssm/modules/mamba_simple.py": MAMBA_SIMPLE, "mamba_ssm/ops/__init__.py": "",
                          "mamba_ssm/ops/triton/__init__.py": "", "mamba_ssm/ops/triton/layer_norm.py": "",
                          mamba_so: mamba}),
        # upstream style: +label in the file name only (F40), and a .so for Python 3.10 (F38)
        make_wheel(dist, "selective-scan", f"0.0.2+{label(minor)}", metadata_version="0.0.2",
                   files={oflex_so: oflex}),
        make_wheel(dist, "triton", "3.2.0", python_tag="py3", platform_tag="any",
                   files={"triton/__init__.py": "__version__ = '3.2.0'\n"}),
    ]
    python = make_venv(root / "venv", torch_site, exclude=("triton",))
    pip_install(python, *wheels)
    project = root / "vim-checkout"
    project.mkdir()
    (project / "models_mamba.py").write_text("# Vim\n")
    (project / "=1.2.0").write_text("")
    cache = root / "pipcache" / "wheels" / "ab" / "cd"
    cache.mkdir(parents=True)
    (cache / "causal_conv1d-1.4.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"PK")
    env = clean_env(CUDA_HOME=str(root / "no-such-cuda"), NVIDIA_PYTORCH_VERSION="24.08",
                    PIP_CACHE_DIR=str(root / "pipcache"))
    env.pop("HOME", None)
    return buildtool("doctor", "--python", str(python), "--json", env=env, cwd=project)


@pytest.mark.parametrize(("check_id", "status", "words"), [
    ("torch-symbols", "fail", "c10::cuda::SetDevice(int)"),
    ("cxx11-abi", "fail", "pre-C++11 ABI"),
    ("cuda-major", "fail", "libcudart.so.12"),
    ("import", "fail", "causal_conv1d_cuda"),
    ("causal-conv1d-kernel", "ok", "causal_conv1d_cuda found"),
    ("vmamba-kernel", "fail", "neither selective_scan_cuda_oflex"),
    ("conv1d-api", "fail", "mamba-ssm 2.3.2 with causal-conv1d 1.4.0"),
    ("conv1d-cpp-functions", "fail", "no causal_conv1d.cpp_functions"),
    ("triton-version", "fail", "triton 3.2.0"),
    ("vim-fork", "fail", "bimamba_type"),
    ("cuda-home", "fail", "does not exist"),
    ("nvcc-present", "warn", "no nvcc"),
    ("extension-platform", "fail", "cpython-310"),
    ("home", "fail", "HOME is not set"),
    ("pip-cache", "warn", "causal_conv1d-1.4.0"),
    ("stray-files", "warn", "=1.2.0"),
    ("wheel-version", "warn", "METADATA says 0.0.2"),
    ("ngc", "warn", "NVIDIA_PYTORCH_VERSION=24.08"),
])
def test_broken_venv(broken: subprocess.CompletedProcess[str], check_id: str, status: str, words: str) -> None:
    assert broken.returncode == 2, broken.stderr
    got = statuses(broken.stdout)
    assert got[check_id] == status, evidence(broken.stdout, check_id)
    assert words in evidence(broken.stdout, check_id)


def test_broken_venv_import_error_is_the_real_one(broken: subprocess.CompletedProcess[str]) -> None:
    ev = evidence(broken.stdout, "import")
    assert "libcudart.so.12" in ev or "undefined symbol" in ev
    assert "selective_scan_cuda" in ev


# ---------------------------------------------------------------- real healthy venv
def test_healthy_venv(tmp_path: Path, torch_site: Path) -> None:
    facts = probe_python(str(make_venv(tmp_path / "probe", torch_site)))
    t = facts.torch
    assert t.minor
    so_name, so = compile_extension(tmp_path / "b", "causal_conv1d_cuda")
    wheel = make_wheel(tmp_path / "d", "causal-conv1d", f"1.7.0+{label(t.minor, t.cuda or '13.0', bool(t.cxx11_abi))}",
                       files={"causal_conv1d/__init__.py": "", "causal_conv1d/cpp_functions.py": "", so_name: so})
    python = make_venv(tmp_path / "venv", torch_site)
    pip_install(python, wheel)
    proc = buildtool("doctor", "--python", str(python), "--json", env=clean_env(CUDA_HOME="/usr/local/cuda"),
                     cwd=tmp_path)
    got = statuses(proc.stdout)
    for cid in ("torch-symbols", "cxx11-abi", "import", "causal-conv1d-kernel", "glibc", "libstdcxx",
                "extension-platform", "home", "stray-files", "wheel-version", "python-headers", "wheel-tags"):
        assert got[cid] == "ok", (cid, evidence(proc.stdout, cid))
    if t.cuda:
        assert got["cuda-major"] == "ok"
        if Path("/usr/local/cuda/bin/nvcc").exists():
            assert got["cuda-home"] == "ok" and got["cccl"] in ("ok", "info")
    assert proc.returncode == json.loads(proc.stdout)["exit_code"]


def test_mamba_without_triton_and_kernel(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "d", "mamba-ssm", "2.3.2", files={
        "mamba_ssm/__init__.py": "", "mamba_ssm/modules/__init__.py": "",
        "mamba_ssm/modules/mamba_simple.py": MAMBA_SIMPLE})
    python = make_venv(tmp_path / "venv")
    pip_install(python, wheel)
    proc = buildtool("doctor", "--python", str(python), "--json", cwd=tmp_path)
    got = statuses(proc.stdout)
    assert got["triton-for-mamba"] == "fail" and "import triton" in evidence(proc.stdout, "triton-for-mamba")
    assert got["mamba-kernel"] == "fail" and "MAMBA_KEEP_CUDA_BUILD" in evidence(proc.stdout, "mamba-kernel")
    assert got["torch-symbols"] == "skip"
    assert proc.returncode == 2


def test_human_table_and_exit_code(tmp_path: Path) -> None:
    proc = buildtool("doctor", "--only", "F37", cwd=tmp_path)
    assert proc.returncode == 0 and "stray-files" in proc.stdout and "check" in proc.stdout
    (tmp_path / "=2.0").write_text("")
    proc = buildtool("doctor", "--only", "stray-files", cwd=tmp_path)
    assert proc.returncode == 1 and "warn" in proc.stdout


# ---------------------------------------------------------------- recorded fixtures (GPU, driver, Windows, other toolchains)
@pytest.fixture(scope="module")
def base_python() -> PythonEnv:
    return probe_python(sys.executable, with_torch=False)


def ctx_of(base: PythonEnv, tmp: Path, *, host: HostInfo | None = None, **py: object) -> Context:
    torch = TorchInfo(installed=True, version="2.14.1+cu130", cuda="13.0", cxx11_abi=True)
    fields = {"torch": torch, **py}
    return Context(env=Environment(python=base.model_copy(update=fields), host=host or HostInfo()), cwd=tmp)


def one(ctx: Context, check_id: str) -> tuple[Status, str]:
    (r,) = diagnose(ctx, {check_id}).results
    return r.status, r.evidence


def _dist(version: str, provenance: dict[str, object] | None = None) -> DistInfo:
    return DistInfo(version=version, location="/nowhere", provenance=provenance)


def test_gpu_arch_missing_fixture(base_python: PythonEnv, tmp_path: Path) -> None:
    host = HostInfo(gpus=({"name": "NVIDIA GeForce RTX 5090", "cc": "12.0"},), driver_version="580.1", driver_cuda="13.0")
    prov = legacy_provenance(["8.0", "9.0"], ptx=False)
    ctx = ctx_of(base_python, tmp_path, host=host, dists={"causal-conv1d": _dist("1.7.0", prov)})
    status, ev = one(ctx, "gpu-arch")
    assert status == Status.fail and "sm_120" in ev
    ctx = ctx_of(base_python, tmp_path, host=host,
                 dists={"causal-conv1d": _dist("1.7.0", current_provenance(["8.0", "9.0"], ptx=True))})
    assert one(ctx, "gpu-arch")[0] == Status.ok


def test_b300_fixture(base_python: PythonEnv, tmp_path: Path) -> None:
    """A B300 (GPU fixture: no B300 here) with causal-conv1d wheels of each kind (data/bad_sass.yaml)."""
    host = HostInfo(gpus=({"name": "NVIDIA B300", "cc": "10.3"},))

    def status(version: str, archs: list[str], nvcc: str | None) -> tuple[Status, str]:
        # a wheel built elsewhere may record no nvcc; buildtool's always does
        prov = legacy_provenance(archs, nvcc=nvcc or "unknown")
        return one(ctx_of(base_python, tmp_path, host=host, dists={"causal-conv1d": _dist(version, prov)}), "b300")

    bad = status("1.7.0+cu130torch2.14cxx11abiTRUE", ["10.0", "10.3"], "13.0.88")
    assert bad[0] == Status.fail and "sm_103 SASS built by nvcc 13.0.88" in bad[1]
    assert "Dao-AILab/causal-conv1d#105" in bad[1] and "causal_conv1d_fwd" in bad[1]
    assert status("1.7.0", ["10.0", "10.3"], "12.9.86")[0] == Status.ok  # only nvcc 13.x miscompiles it
    assert status("1.7.0", ["9.0", "10.0"], "13.0.88")[0] == Status.ok  # buildtool's wheels: sm_100 instead
    assert status("1.7.0", ["10.3"], None)[0] == Status.fail  # unknown nvcc: assume the worst
    no_prov = one(ctx_of(base_python, tmp_path, host=host, dists={"causal-conv1d": _dist("1.7.0")}), "b300")
    assert no_prov[0] == Status.info and "source build with CUDA >= 13" in no_prov[1]
    h100 = HostInfo(gpus=({"name": "NVIDIA H100", "cc": "9.0"},))
    assert one(ctx_of(base_python, tmp_path, host=h100, dists={"causal-conv1d": _dist("1.7.0", legacy_provenance(["10.3"]))}),
               "b300")[0] == Status.skip


def test_driver_too_old_fixture(base_python: PythonEnv, tmp_path: Path) -> None:
    ctx = ctx_of(base_python, tmp_path, host=HostInfo(driver_version="535.1", driver_cuda="12.2"))
    status, ev = one(ctx, "driver")
    assert status == Status.fail and "insufficient" in ev


def test_driver_below_a_wheels_floor_fixture(base_python: PythonEnv, tmp_path: Path) -> None:
    # a cu12.8 torch runs on a 12.2 driver (minor-version compatibility), but a wheel with size-compressed
    # fatbins records 12.4 as its floor
    wheels = {"causal-conv1d": _dist("1.7.0", legacy_provenance(min_driver_cuda="12.4")),
              "mamba-ssm": _dist("2.3.2", legacy_provenance(package="mamba-ssm", version="2.3.2", min_driver_cuda="12.0"))}
    ctx = ctx_of(base_python, tmp_path, host=HostInfo(driver_version="535.1", driver_cuda="12.2"), dists=wheels)
    status, ev = one(ctx, "driver-wheels")
    assert status == Status.fail and "causal-conv1d needs CUDA >= 12.4" in ev and "mamba-ssm" not in ev
    ctx = ctx_of(base_python, tmp_path, host=HostInfo(driver_version="550.54", driver_cuda="12.4"), dists=wheels)
    assert one(ctx, "driver-wheels")[0] == Status.ok
    ctx = ctx_of(base_python, tmp_path, host=HostInfo(driver_version="550.54", driver_cuda="12.4"),
                 dists={"causal-conv1d": _dist("1.7.0", legacy_provenance(min_driver_cuda=None))})
    assert one(ctx, "driver-wheels")[0] == Status.skip


def test_nvcc_major_mismatch_fixture(base_python: PythonEnv, tmp_path: Path) -> None:
    ctx = ctx_of(base_python, tmp_path, host=HostInfo(nvcc_version="12.8", nvcc_path="/opt/cuda-12.8/bin/nvcc"))
    status, ev = one(ctx, "nvcc-vs-torch")
    assert status == Status.fail and "mismatches" in ev


def test_gcc_too_new_fixture(base_python: PythonEnv, tmp_path: Path) -> None:
    ctx = ctx_of(base_python, tmp_path, host=HostInfo(nvcc_version="12.4", gcc_version="14.2.0", gcc_path="/usr/bin/g++"))
    status, ev = one(ctx, "gcc-vs-nvcc")
    assert status == Status.fail and "gcc <= 13" in ev


def test_glibc_241_with_cuda12_fixture(base_python: PythonEnv, tmp_path: Path) -> None:
    ctx = ctx_of(base_python, tmp_path, glibc="2.41", host=HostInfo(nvcc_version="12.9"))
    assert one(ctx, "glibc-vs-cuda-headers")[0] == Status.fail


def test_glibc_too_old_fixture(base_python: PythonEnv, tmp_path: Path) -> None:
    """A real .so compiled here (it needs GLIBC_2.2.5+) against a recorded old glibc."""
    name, data = compile_extension(tmp_path / "b", "causal_conv1d_cuda")
    site = tmp_path / "site"
    site.mkdir()
    (site / name).write_bytes(data)
    dist = DistInfo(version="1.7.0", location=str(site), ext_files=(name,))
    ctx = ctx_of(base_python, tmp_path, glibc="2.1", dists={"causal-conv1d": dist})
    status, ev = one(ctx, "glibc")
    assert status == Status.fail and "GLIBC_2" in ev


def test_windows_triton_fixture(base_python: PythonEnv, tmp_path: Path) -> None:
    win = {"sys_platform": "win32", "machine": "AMD64", "glibc": None}
    ctx = ctx_of(base_python, tmp_path, dists={"triton": _dist("3.2.0")}, **win)
    status, ev = one(ctx, "triton-distribution")
    assert status == Status.fail and "Windows" in ev
    ctx = ctx_of(base_python, tmp_path, dists={"triton-windows": _dist("3.8.0.post21")}, **win)
    assert one(ctx, "triton-distribution")[0] == Status.ok
    assert one(ctx, "triton-version")[0] == Status.ok
    ctx = ctx_of(base_python, tmp_path, host=HostInfo(nvcc_version="13.2"), **win)
    assert one(ctx, "msvc-preprocessor")[0] == Status.warn


def test_triton_without_libcuda_so_fixture(base_python: PythonEnv, tmp_path: Path) -> None:
    host = HostInfo(gpus=({"name": "H100", "cc": "9.0"},), nvidia_smi="/usr/bin/nvidia-smi", ldconfig="/sbin/ldconfig",
                    libcuda_so=("/usr/lib/x86_64-linux-gnu/libcuda.so.1",))
    ctx = ctx_of(base_python, tmp_path, host=host, modules={**base_python.modules, "triton": {"origin": "/x/triton/__init__.py"}})
    status, ev = one(ctx, "libcuda")
    assert status == Status.fail and "libcuda.so.1" in ev


def test_triton_too_old_for_rtx50_fixture(base_python: PythonEnv, tmp_path: Path) -> None:
    host = HostInfo(gpus=({"name": "RTX 5090", "cc": "12.0"},))
    ctx = ctx_of(base_python, tmp_path, host=host, dists={"triton": _dist("3.2.0")})
    assert one(ctx, "triton-gpu")[0] == Status.fail


def test_python_headers_missing_fixture(base_python: PythonEnv, tmp_path: Path) -> None:
    ctx = ctx_of(base_python, tmp_path, include_dir=str(tmp_path),
                 modules={**base_python.modules, "triton": {"origin": "/x/triton/__init__.py"}})
    assert one(ctx, "python-headers")[0] == Status.fail


@pytest.mark.parametrize(("tags", "status"), [
    (("cp310-abi3-manylinux_2_28_x86_64",), Status.ok),                           # abi3 from 3.10 runs on 3.11+
    (("cp39-abi3-manylinux_2_27_x86_64", "cp39-abi3-manylinux_2_28_x86_64"), Status.ok),
    (("cp312-cp312-linux_x86_64",), Status.fail),                                 # copied from another Python
    (("cp311-cp311-win_amd64",), Status.fail),
])
def test_wheel_tags_fixture(base_python: PythonEnv, tmp_path: Path, tags: tuple[str, ...], status: Status) -> None:
    """Recorded WHEEL tags (pip refuses to install a wheel whose tags do not fit, so it is copied in by hand)."""
    if base_python.python_tag != "cp311" or base_python.platform != "linux-x86_64":
        pytest.skip("tags chosen for CPython 3.11 on linux-x86_64")
    dist = DistInfo(version="1.7.0", location="/nowhere", wheel_tags=tags)
    got, ev = one(ctx_of(base_python, tmp_path, dists={"causal-conv1d": dist}), "wheel-tags")
    assert got == status, ev
    if status == Status.fail:
        assert "does not accept" in ev and tags[0] in ev


# ---------------------------------------------------------------- build environment variables (real tools)
def _doctor(check_id: str, python: Path | str = sys.executable, **env: str) -> tuple[str, str]:
    from buildtool.user.doctor import run_doctor

    report = run_doctor(str(python), env=clean_env(**env), only={check_id})
    (result,) = report.results
    return result.status.value, result.evidence


def _fake_toolkit(root: Path, release: str) -> Path:
    """A CUDA toolkit dir whose nvcc reports ``release`` (stands in for an nvcc that cannot be installed
    here: only nvcc 13.0 exists on this machine)."""
    nvcc = root / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.0'\n")
    nvcc.chmod(0o755)
    (root / "include").mkdir()
    return root


gcc_bin = next((g for g in ("gcc-12", "gcc-13", "gcc-14", "gcc") if shutil.which(g)), None)


@pytest.mark.skipif(gcc_bin is None or shutil.which("nvcc") is None, reason="needs a real gcc and nvcc")
def test_cc_names_a_real_gcc_that_nvcc_accepts() -> None:
    status, ev = _doctor("cc-cxx", CC=gcc_bin or "", CXX="g++")
    assert status == "ok" and f"CC={gcc_bin} -> gcc" in ev and "nvcc" in ev


@pytest.mark.skipif(gcc_bin is None, reason="needs a real gcc")
def test_cc_newer_than_nvcc_accepts_fake_nvcc_11_8(tmp_path: Path) -> None:
    home = _fake_toolkit(tmp_path / "cuda-11.8", "11.8")  # nvcc 11.8 takes gcc <= 11
    status, ev = _doctor("cc-cxx", CC=gcc_bin or "", CUDA_HOME=str(home))
    major = subprocess.run([gcc_bin or "", "-dumpversion"], capture_output=True, text=True).stdout.split(".")[0]
    if int(major) <= 11:
        pytest.skip(f"{gcc_bin} is gcc {major}, which nvcc 11.8 accepts")
    assert status == "fail" and "newer than nvcc 11.8 accepts (gcc <= 11)" in ev and "-ccbin $CC" in ev


def test_cc_not_on_path_is_a_failure() -> None:
    status, ev = _doctor("cc-cxx", CC="gcc-99-does-not-exist")
    assert status == "fail" and "CC=gcc-99-does-not-exist is not on PATH" in ev


@pytest.mark.parametrize(("flags", "status", "words"), [
    ("", "ok", "not set"),
    ("-G", "fail", "device debug"),
    ("-ccbin /usr/bin/gcc-12", "warn", "overrides the host compiler"),
    ("--allow-unsupported-compiler", "warn", "silences"),
    ("-gencode=arch=compute_90,code=sm_90", "warn", "GPU targets"),
    ("-lineinfo", "info", "line info"),
])
def test_nvcc_flags_from_the_environment(flags: str, status: str, words: str) -> None:
    env = {"NVCC_APPEND_FLAGS": flags} if flags else {}
    got, ev = _doctor("nvcc-env-flags", **env)
    assert got == status and words in ev, ev


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
@pytest.mark.parametrize(("arch_list", "status", "words"), [
    ("9.0;10.0+PTX", "ok", "9.0, 10.0"),
    ("Hopper", "ok", "9.0"),
    ("3.5", "fail", "cannot compile"),
    ("Hoppper", "fail", "is not an arch"),
    ("9.0;sm_90", "fail", "'sm_90'"),
])
def test_torch_cuda_arch_list(arch_list: str, status: str, words: str) -> None:
    got, ev = _doctor("arch-list-env", TORCH_CUDA_ARCH_LIST=arch_list,
                      CUDA_HOME=str(Path(shutil.which("nvcc") or "").resolve().parent.parent))
    assert got == status and words in ev, ev


def test_missing_triton_where_torch_requires_it(tmp_path: Path, torch_site: Path) -> None:
    # a real venv seeing the real torch, whose METADATA requires triton on Linux, without triton's
    # distribution (pip would report it as not installed)
    site = tmp_path / "site-without-triton"  # the real torch site, every entry linked except triton's
    site.mkdir()
    for entry in torch_site.iterdir():
        if not entry.name.lower().startswith("triton"):
            (site / entry.name).symlink_to(entry)
    python = make_venv(tmp_path / "venv", site)
    status, ev = _doctor("triton-version", python)
    facts = probe_python(str(python))
    requires = facts.dists["torch"].requires
    if not any(r.startswith("triton") for r in requires) or sys.platform != "linux":
        pytest.skip("this torch does not require triton here")
    assert status == "fail" and "requires triton" in ev, ev
