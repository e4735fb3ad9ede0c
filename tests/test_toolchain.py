"""Toolchain provisioning: real system toolkit, real PyPI toolkit (CUDA 13.0), the not-found message,
gcc selection tables, conda command construction, and MSVC parsing from recorded Windows fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hostsim import path_without

from buildtool.cli import main
from buildtool.errors import EnvironmentProblem, UserError
from buildtool.host import default_cache_dir, host_platform
from buildtool.toolchain import (
    ToolchainNotFound,
    conda,
    debian,
    gcc,
    msvc,
    pypi,
    resolve,
    system,
)
from buildtool.toolchain.models import load_facts

FIXTURES = Path(__file__).parent / "fixtures" / "windows"
HERE = host_platform()
# PATH without any conda/mamba: what "not present" looks like, deterministically.
PLAIN_PATH = os.pathsep.join(p for p in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin") if Path(p).is_dir())
KERNEL = "#include <cuda_runtime.h>\n#include <cub/block/block_reduce.cuh>\n__global__ void twice(float* x) { x[threadIdx.x] *= 2.0f; }\n"


def _system_13_0() -> Path | None:
    home, _, _ = system.find_system_toolkit("13.0", HERE, os.environ, load_facts())
    return home


needs_system_cuda = pytest.mark.skipif(
    not HERE.startswith("linux") or _system_13_0() is None, reason="no system CUDA 13.0 toolkit on this machine"
)


# --- pure parsing / data ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("Cuda compilation tools, release 13.0, V13.0.88\nBuild cuda_13.0.r13.0/compiler.36424714_0", "13.0.88"),
        ("Cuda compilation tools, release 12.4, V12.4.131", "12.4.131"),
        ("nvcc: command not found", None),
    ],
)
def test_parse_nvcc_version(text: str, version: str | None) -> None:
    assert system.parse_nvcc_version(text) == version


def test_pypi_facts_say_only_13x_has_a_full_nvcc() -> None:
    facts = load_facts()
    assert pypi.unsupported_reason("13.0", facts) is None
    assert pypi.requirement("13.0", facts) == "cuda-toolkit[nvcc,cccl]==13.0.*"
    reason = pypi.unsupported_reason("12.4", facts)
    assert reason is not None and "ptxas" in reason and "12.x" in reason
    cmd = pypi.pip_command("13.0", Path("/c/t"), facts, python="py")
    assert cmd[:4] == ["py", "-m", "pip", "install"]
    assert "--target" in cmd and "/c/t" in cmd and "--only-binary=:all:" in cmd


def test_pypi_assemble_adds_cuda_home_conventions(tmp_path: Path) -> None:
    home = tmp_path / "nvidia" / "cu13"
    (home / "lib").mkdir(parents=True)
    (home / "include").mkdir()
    (home / "lib" / "libcudart.so.13").write_bytes(b"")
    (home / "lib" / "libnvvm.so.4").write_bytes(b"")
    pypi.assemble(home, "linux-x86_64")
    pypi.assemble(home, "linux-x86_64")  # idempotent
    assert (home / "lib64").resolve() == (home / "lib").resolve()
    assert os.readlink(home / "lib" / "libcudart.so") == "libcudart.so.13"
    assert os.readlink(home / "lib" / "libnvvm.so") == "libnvvm.so.4"
    assert (home / "targets" / "x86_64-linux" / "include").resolve() == (home / "include").resolve()
    assert (home / "targets" / "x86_64-linux" / "lib").resolve() == (home / "lib").resolve()


def test_conda_command_construction(tmp_path: Path) -> None:
    facts = load_facts()
    cmd = conda.create_command(Path("/opt/bin/micromamba"), tmp_path / "p", "12.4", facts)
    assert cmd == ["/opt/bin/micromamba", "create", "--yes", "--prefix", str(tmp_path / "p"),
                   "-c", "nvidia/label/cuda-12.4.1", "cuda-nvcc", "cuda-cccl", "cuda-cudart-dev"]
    assert facts.conda.channel_for("13.0.1") == "nvidia/label/cuda-13.0.1"
    assert facts.conda.channel_for("12.3") == "nvidia/label/cuda-12.3.0"  # not in the table: X.Y.0
    assert conda.cuda_home_in(tmp_path, "windows-x86_64", facts) == tmp_path / "Library"
    assert conda.cache_path(tmp_path, "12.8", "linux-x86_64", facts).name == "conda-cuda12.8.1-linux-x86_64"


def test_conda_tool_discovery(tmp_path: Path) -> None:
    facts = load_facts()
    assert conda.find_tool({"PATH": str(tmp_path)}, facts) is None
    tool = tmp_path / "micromamba"
    tool.write_text("#!/bin/sh\nexit 1\n")
    tool.chmod(0o755)
    assert conda.find_tool({"PATH": str(tmp_path)}, facts) == tool


# --- gcc selection (pure tables) ----------------------------------------------------------------------


def _c(origin: str, version: str, kind: str = "gcc") -> gcc.GccCandidate:
    name = origin.split()[0].lstrip("$")
    return gcc.GccCandidate(path=Path(f"/usr/bin/{name}"), version=version, kind=kind, origin=origin)


@pytest.mark.parametrize(
    ("candidates", "max_gcc", "chosen"),
    [
        # default fits
        ([_c("g++ on PATH", "12.2.0"), _c("g++-11 on PATH", "11.4.0")], 13, "g++ on PATH"),
        # default too new: newest versioned that fits
        ([_c("g++ on PATH", "14.2.0"), _c("g++-11 on PATH", "11.4.0"), _c("g++-13 on PATH", "13.3.0"),
          _c("g++-14 on PATH", "14.2.0")], 13, "g++-13 on PATH"),
        # CUDA 11.8 (max 11) on a gcc-12 machine with gcc-11 installed
        ([_c("g++ on PATH", "12.2.0"), _c("g++-11 on PATH", "11.4.0")], 11, "g++-11 on PATH"),
        # nothing fits
        ([_c("g++ on PATH", "14.2.0"), _c("g++-14 on PATH", "14.2.0")], 13, None),
        # no compiler at all
        ([], 15, None),
        # an explicit $CXX decides alone: used when it fits ...
        ([_c("$CXX", "13.1.0")], 13, "$CXX"),
        # ... and an error when it does not (never silently replaced)
        ([_c("$CXX", "14.1.0")], 13, None),
        # clang has no max table here: accepted, nvcc checks it
        ([_c("$CXX", "18.1.8", kind="clang")], 13, "$CXX"),
    ],
)
def test_gcc_choose_table(candidates: list[gcc.GccCandidate], max_gcc: int, chosen: str | None) -> None:
    result, notes = gcc.choose(candidates, max_gcc)
    assert (result.origin if result else None) == chosen
    assert notes  # every decision is explained


def test_gcc_version_parsing() -> None:
    assert gcc.parse_version("12\n") == "12"
    assert gcc.parse_version("12.2.0\n") == "12.2.0"
    assert gcc.kind_from_banner("g++ (Debian 12.2.0-14) 12.2.0") == "gcc"
    assert gcc.kind_from_banner("Ubuntu clang version 18.1.3 (1ubuntu1)") == "clang"


def test_gcc_too_new_error_names_the_fix() -> None:
    text = gcc.fix_text(13, load_facts())
    assert "apt install gcc-13 g++-13" in text and "gxx_linux-64=13" in text


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ on PATH")
def test_gcc_discover_real_and_explicit_cxx_too_new() -> None:
    found = gcc.discover({"PATH": os.environ["PATH"]})
    assert any(c.origin == "g++ on PATH" for c in found)
    default = next(c for c in found if c.origin == "g++ on PATH")
    # The real g++ as $CXX against a CUDA whose max is below it: a ToolchainNotFound with the fix.
    with pytest.raises(ToolchainNotFound) as exc:
        gcc.select_host_compiler("11.8", default.major - 1, {"PATH": os.environ["PATH"], "CXX": str(default.path)}, load_facts())
    assert "$CXX" in exc.value.message and "apt install" in (exc.value.hint or "")


# --- MSVC from recorded Windows output ------------------------------------------------------------------


def test_vswhere_parse_fixture() -> None:
    installs = msvc.parse_vswhere((FIXTURES / "vswhere.json").read_text(encoding="utf-8"))
    assert [i.product_line for i in installs] == ["2019", "2022", "2026"]
    assert installs[1].vcvars64 == r"C:\Program Files (x86)\Microsoft Visual Studio\2022\BuildTools\VC\Auxiliary\Build\vcvars64.bat"


def test_vswhere_choose_respects_max_msvc_fixture() -> None:
    installs = msvc.parse_vswhere((FIXTURES / "vswhere.json").read_text(encoding="utf-8"))
    best, notes = msvc.choose_install(installs, "2022")
    assert best is not None and best.product_line == "2022"
    assert any("2026 is newer than 2022" in n for n in notes)
    only_new, notes = msvc.choose_install(installs[2:], "2022")
    assert only_new is None and notes
    none, notes = msvc.choose_install([], "2022")
    assert none is None and "no Visual Studio" in notes[0]


def test_vcvars_environment_fixture() -> None:
    before = msvc.parse_set_output((FIXTURES / "set_before.txt").read_text(encoding="utf-8"))
    after = msvc.parse_set_output((FIXTURES / "set_after_vcvars64.txt").read_text(encoding="utf-8"))
    assert "=C:" not in after and not any(k.startswith("*") for k in after)  # banner and hidden vars skipped
    delta = msvc.env_delta(before, after)
    assert {"INCLUDE", "LIB", "LIBPATH", "Path", "VCToolsVersion", "VSCMD_ARG_TGT_ARCH"} <= set(delta)
    assert "USERNAME" not in delta and "CUDA_PATH" not in delta
    installs = msvc.parse_vswhere((FIXTURES / "vswhere.json").read_text(encoding="utf-8"))
    best, _ = msvc.choose_install(installs, "2022")
    assert best is not None
    host = msvc.host_from_env(after, best)
    assert host.kind == "msvc" and host.version == "14.44.35207" and host.product == "2022"
    assert str(host.path).replace("/", "\\").endswith(r"MSVC\14.44.35207\bin\Hostx64\x64\cl.exe")
    cuda_home = r"C:\Program Files\NVIDIA GPU Computing Toolkit\CUDA\v13.2"
    env = msvc.toolchain_env(delta, cuda_home, "13.2")
    assert env["DISTUTILS_USE_SDK"] == "1"
    assert env["Path"].startswith(cuda_home + r"\bin;") and r"\bin\HostX64\x64" in env["Path"]
    assert env["CUDA_HOME"] == env["CUDA_PATH"] == env["CUDA_PATH_V13_2"] == cuda_home
    assert env["INCLUDE"] == after["INCLUDE"]


def test_vcvars_without_x64_tools_fixture() -> None:
    installs = msvc.parse_vswhere((FIXTURES / "vswhere.json").read_text(encoding="utf-8"))
    before = msvc.parse_set_output((FIXTURES / "set_before.txt").read_text(encoding="utf-8"))
    with pytest.raises(ValueError, match="VCToolsVersion"):
        msvc.host_from_env(before, installs[1])


# --- resolve(): real providers -----------------------------------------------------------------------


@needs_system_cuda
def test_system_provider_real(tmp_path: Path) -> None:
    tc = resolve("13.0", HERE, "system", cache_dir=tmp_path)
    assert tc.provider == "system" and tc.cuda_minor == "13.0" and tc.cuda_version.count(".") == 2
    assert tc.nvcc.is_file() and tc.nvcc.parent == tc.cuda_home / "bin"
    assert tc.host.kind in ("gcc", "clang") and tc.host.path.exists()
    assert tc.env["CUDA_HOME"] == str(tc.cuda_home)
    assert tc.env["PATH"].split(os.pathsep)[0] == str(tc.cuda_home / "bin")
    assert tc.env["NVCC_CCBIN"] == tc.env["CXX"] == str(tc.host.path)
    assert tc.cuda_home / "include" / "cccl" in tc.include_dirs  # CUDA 13 moved CCCL (failures.md F27)
    assert [a.provider for a in tc.attempts] == ["system"] and tc.attempts[0].ok
    assert not any(tmp_path.iterdir())  # system provisions nothing


@needs_system_cuda
def test_system_requires_the_cells_minor(tmp_path: Path) -> None:
    home = _system_13_0()
    env = {"PATH": PLAIN_PATH, "CUDA_HOME": str(home)}
    with pytest.raises(ToolchainNotFound) as exc:
        resolve("13.2", HERE, "system", cache_dir=tmp_path, env=env)
    assert f"$CUDA_HOME: {home} is CUDA 13.0" in exc.value.message and "not 13.2" in exc.value.message


def test_not_found_12_4_lists_every_provider(tmp_path: Path) -> None:
    """A host without CUDA 12.4 and without apt-get: every provider says why, nothing is downloaded."""
    env = {"PATH": path_without(("apt-get", "dpkg-deb", "micromamba", "mamba", "conda"), tmp_path / "bin")}
    cache = tmp_path / "cache"
    with pytest.raises(ToolchainNotFound) as exc:
        resolve("12.4", "linux-x86_64" if HERE.startswith("linux") else HERE, cache_dir=cache, env=env)
    err = exc.value
    assert isinstance(err, EnvironmentProblem) and err.exit_code == 3
    assert [(a.provider, a.ok) for a in err.attempts] == [
        ("system", False), ("pypi", False), ("debian", False), ("conda", False)]
    text = str(err)
    assert "no CUDA 12.4 toolkit" in text
    assert "- system:" in text and "- pypi: PyPI has no full nvcc for CUDA 12.x" in text and "ptxas" in text
    assert "- conda: no micromamba, mamba or conda on PATH" in text
    assert "https://developer.nvidia.com/cuda-toolkit-archive" in text  # the system route, on any distribution
    assert "cuda-toolkit-12-4" not in text  # a package of NVIDIA's repositories only, not of the host's
    assert "conda install -c nvidia/label/cuda-12.4.1 cuda-nvcc cuda-cccl" in text
    assert "pip install" not in text  # no PyPI route for 12.x
    if debian.is_debian_like(debian.read_os_release(), load_facts().debian):
        assert "- debian: apt-get and dpkg-deb not on PATH" in text
        assert "debian: pass --toolchain debian, which downloads Debian trixie's nvidia-cuda-toolkit 12.4.131" in text
    assert not cache.exists() or not any(cache.iterdir())  # nothing downloaded or created


# --- debian provider: pure parts --------------------------------------------------------------------

DEBIAN_12 = debian.parse_os_release('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n')
UBUNTU_24 = debian.parse_os_release("ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\nPRETTY_NAME='Ubuntu 24.04.1 LTS'\n")
FEDORA_41 = debian.parse_os_release('ID=fedora\nPRETTY_NAME="Fedora Linux 41 (Workstation Edition)"\n# comment\n')


def test_os_release_parsing_and_debian_hosts() -> None:
    facts = load_facts().debian
    assert DEBIAN_12["VERSION_CODENAME"] == "bookworm" and UBUNTU_24["PRETTY_NAME"] == "Ubuntu 24.04.1 LTS"
    assert debian.is_debian_like(DEBIAN_12, facts) and debian.is_debian_like(UBUNTU_24, facts)
    assert not debian.is_debian_like(FEDORA_41, facts) and not debian.is_debian_like({}, facts)


@pytest.mark.parametrize(
    ("cuda", "platform", "host", "fragment"),
    [
        ("12.4", "linux-x86_64", FEDORA_41, "this host is Fedora Linux 41 (Workstation Edition), not Debian or Ubuntu"),
        ("13.0", "linux-x86_64", DEBIAN_12, "Debian's archive has no CUDA 13.0 (nvidia-cuda-toolkit is CUDA 12.4.131 (trixie), 11.8.89 (bookworm))"),
        ("11.8", "linux-aarch64", UBUNTU_24, "bookworm's nvidia-cuda-toolkit 11.8.89 has no aarch64 build (amd64)"),
        ("12.4", "windows-x86_64", DEBIAN_12, "Linux hosts only"),
    ],
)
def test_debian_unavailable_reasons(cuda: str, platform: str, host: dict[str, str], fragment: str) -> None:
    reason = debian.unsupported_reason(cuda, platform, host, {"PATH": PLAIN_PATH}, load_facts().debian)
    assert reason is not None and fragment in reason


def test_debian_needs_apt_and_the_keyring(tmp_path: Path) -> None:
    facts = load_facts().debian
    reason = debian.unsupported_reason("12.4", "linux-x86_64", UBUNTU_24, {"PATH": str(tmp_path)}, facts)
    assert reason == "apt-get and dpkg-deb not on PATH"
    if shutil.which("apt-get", path=PLAIN_PATH) and shutil.which("dpkg-deb", path=PLAIN_PATH):
        no_key = facts.model_copy(update={"keyring": str(tmp_path / "none.gpg")})
        reason = debian.unsupported_reason("12.4", "linux-x86_64", UBUNTU_24, {"PATH": PLAIN_PATH}, no_key)
        assert reason is not None and "no Debian archive keyring" in reason and "debian-archive-keyring" in reason


def test_debian_private_apt_configuration(tmp_path: Path) -> None:
    """Every apt directory, the sources and the dpkg status live under the provider's root; nothing of /etc/apt
    or /var/lib is named."""
    facts = load_facts().debian
    release = facts.releases["12.4"]
    root = tmp_path / "apt"
    debian.prepare_apt_root(root, release, "amd64", facts)
    assert (root / "sources.list").read_text() == (
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian "
        "trixie main non-free\n")
    assert (root / "status").read_text() == ""
    opts = debian.apt_options(root, "amd64")
    values = dict(o.split("=", 1) for o in opts[1::2])
    for key in ("Dir::Etc::SourceList", "Dir::Etc::SourceParts", "Dir::State::Lists", "Dir::State::status", "Dir::Cache"):
        assert Path(values[key]).is_relative_to(root), key
    assert values["APT::Architecture"] == "amd64" and values["Debug::NoLocking"] == "1"
    assert "/etc/apt" not in " ".join(opts) and "/var/lib" not in " ".join(opts)


def test_debian_hints_name_routes_of_the_host_distribution() -> None:
    from buildtool.toolchain import how_to_get

    facts = load_facts()
    on_debian = how_to_get("12.4", "linux-x86_64", facts, DEBIAN_12)
    assert "debian: pass --toolchain debian, which downloads Debian trixie's nvidia-cuda-toolkit 12.4.131" in on_debian
    assert "sudo apt install nvidia-cuda-toolkit" not in on_debian  # bookworm's is 11.8, not 12.4
    bookworm_118 = how_to_get("11.8", "linux-x86_64", facts, DEBIAN_12)
    assert "`sudo apt install nvidia-cuda-toolkit` (Debian bookworm, non-free enabled) installs CUDA 11.8.89" in bookworm_118
    assert "sudo apt install nvidia-cuda-toolkit" not in how_to_get("11.8", "linux-x86_64", facts, UBUNTU_24)
    on_fedora = how_to_get("12.4", "linux-x86_64", facts, FEDORA_41)
    assert "debian:" not in on_fedora and "apt" not in on_fedora
    assert "debian:" not in how_to_get("13.0", "linux-x86_64", facts, DEBIAN_12)  # Debian ships no 13.0
    for text in (on_debian, bookworm_118, on_fedora):
        assert "cuda-toolkit-1" not in text


def _fake_unpacked(root: Path, triplet: str) -> None:
    """The paths Debian's packages unpack to (contents are placeholders; the layout is what is tested)."""
    for rel in ("usr/bin/ptxas", "usr/bin/fatbinary", "usr/bin/nvlink", "usr/bin/cudafe++", "usr/bin/nvcc",
                "usr/lib/nvidia-cuda-toolkit/bin/nvcc", "usr/lib/nvidia-cuda-toolkit/bin/cicc",
                "usr/lib/nvidia-cuda-toolkit/bin/crt/link.stub", "usr/lib/nvidia-cuda-toolkit/libdevice/libdevice.10.bc",
                "usr/include/cuda_runtime.h", "usr/include/cub/cub.cuh", f"usr/lib/{triplet}/libcudart.so.12",
                f"usr/lib/{triplet}/libcublas_static.a", f"usr/lib/{triplet}/libcudadevrt.a"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    (root / "usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile").symlink_to("/etc/nvcc.profile")


def test_debian_assemble_layout(tmp_path: Path) -> None:
    facts = load_facts().debian
    unpacked, home = tmp_path / "unpacked", tmp_path / "cuda"
    _fake_unpacked(unpacked, "x86_64-linux-gnu")
    assert debian.prune(unpacked, facts.prune, "x86_64-linux-gnu") == len("usr/lib/x86_64-linux-gnu/libcublas_static.a")
    assert (unpacked / "usr/lib/x86_64-linux-gnu/libcudadevrt.a").is_file()  # needed by -rdc builds: kept
    debian.assemble(unpacked, home, facts, "x86_64-linux-gnu", "x86_64")
    nvcc = home / "bin" / "nvcc"
    assert nvcc.is_file() and not nvcc.is_symlink()  # the real driver, not the /usr/bin wrapper
    assert nvcc.read_text() == "usr/lib/nvidia-cuda-toolkit/bin/nvcc"
    assert (home / "bin" / "ptxas").resolve() == (unpacked / "usr/bin/ptxas").resolve()
    assert os.readlink(home / "bin" / "ptxas") == "../../unpacked/usr/bin/ptxas"  # relative: the cache dir can move
    profile = (home / "bin" / "nvcc.profile").read_text()
    assert not (home / "bin" / "nvcc.profile").is_symlink() and "/etc" not in profile and "/usr/lib" not in profile
    assert "NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice" in profile
    assert (home / "nvvm" / "libdevice" / "libdevice.10.bc").is_file() and (home / "nvvm" / "bin" / "cicc").is_file()
    assert (home / "include" / "cuda_runtime.h").is_file() and (home / "include" / "cub" / "cub.cuh").is_file()
    assert (home / "lib64" / "libcudart.so.12").is_file()
    assert (home / "targets" / "x86_64-linux" / "include" / "cuda_runtime.h").is_file()
    assert system.is_toolkit_root(home, "linux-x86_64")


def test_debian_assemble_reports_a_missing_piece(tmp_path: Path) -> None:
    from buildtool.errors import BuildError

    unpacked = tmp_path / "root"
    _fake_unpacked(unpacked, "x86_64-linux-gnu")
    shutil.rmtree(unpacked / "usr/lib/nvidia-cuda-toolkit/libdevice")
    with pytest.raises(BuildError, match=r"no usr/lib/nvidia-cuda-toolkit/libdevice \(needed for nvvm/libdevice\)"):
        debian.assemble(unpacked, tmp_path / "cuda", load_facts().debian, "x86_64-linux-gnu", "x86_64")


ON_DEBIAN = HERE.startswith("linux") and debian.is_debian_like(debian.read_os_release(), load_facts().debian) and all(
    shutil.which(t) for t in ("apt-get", "apt-cache", "dpkg-deb"))
# The full toolkit is 1 GB to download and about 4 min on the 2-core machine: out of the default suite (CI has 90
# minutes for everything), in `nox -s build-cu124` and here on request.
WANT_DEBIAN_TOOLKIT = os.environ.get("BUILDTOOL_TEST_DEBIAN_TOOLKIT") == "1"


@pytest.mark.network
@pytest.mark.skipif(not ON_DEBIAN, reason="the debian provider runs on Debian/Ubuntu hosts with apt")
def test_debian_private_apt_sees_the_data_packages(tmp_path: Path) -> None:
    """The real archive through the private configuration (lists only, about 10 MB): every package the data names
    exists for this machine, at the CUDA version the data says."""
    facts = load_facts().debian
    machine = HERE.split("-", 1)[1]
    arch = facts.dpkg_arch[machine]
    for cuda, release in facts.releases.items():
        if arch not in release.architectures:
            continue
        root = tmp_path / release.suite
        debian.prepare_apt_root(root, release, arch, facts)
        debian.update(root, arch, dict(os.environ))
        versions = debian.candidate_versions(root, release, arch, dict(os.environ))
        assert set(versions) == set(release.packages), cuda
        assert versions["nvidia-cuda-toolkit"].startswith(release.version + "~"), versions["nvidia-cuda-toolkit"]


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.skipif(not ON_DEBIAN, reason="the debian provider runs on Debian/Ubuntu hosts with apt")
@pytest.mark.skipif(not WANT_DEBIAN_TOOLKIT, reason="1 GB download, ~4 min: set BUILDTOOL_TEST_DEBIAN_TOOLKIT=1")
def test_debian_provider_real_compiles(tmp_path: Path) -> None:
    """Debian trixie's nvidia-cuda-toolkit 12.4 downloaded (1 GB), unpacked and assembled in the user cache (paid
    once: about 4 min on the 2-core machine), then a kernel with cub compiled by it for sm_90."""
    cache = default_cache_dir()
    tc = resolve("12.4", HERE, "debian", cache_dir=cache)
    assert tc.provider == "debian" and tc.cuda_version == "12.4.131"
    assert tc.cuda_home.is_relative_to(cache / "toolchains")
    detail = tc.attempts[0].detail
    assert "assembled Debian trixie nvidia-cuda-toolkit 12.4.131" in detail or "cached" in detail
    assert "cached" in resolve("12.4", HERE, "debian", cache_dir=cache).attempts[0].detail
    src = tmp_path / "k.cu"
    src.write_text(KERNEL)
    proc = subprocess.run([str(tc.nvcc), "-c", str(src), "-o", str(tmp_path / "k.o"), "-arch=sm_90"],
                          env=tc.apply(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "k.o").stat().st_size > 0


def test_conda_not_present(tmp_path: Path) -> None:
    with pytest.raises(ToolchainNotFound) as exc:
        resolve("13.0", HERE, "conda", cache_dir=tmp_path, env={"PATH": PLAIN_PATH})
    assert [a.provider for a in exc.value.attempts] == ["conda"]
    assert "no micromamba, mamba or conda on PATH" in exc.value.attempts[0].detail


def test_other_platform_and_unknown_cuda(tmp_path: Path) -> None:
    other = "windows-x86_64" if HERE.startswith("linux") else "linux-x86_64"
    with pytest.raises(ToolchainNotFound, match=f"this machine is {HERE}"):
        resolve("13.0", other, cache_dir=tmp_path)
    with pytest.raises(UserError, match="not in the compatibility table"):
        resolve("12.5", HERE, cache_dir=tmp_path)
    with pytest.raises(UserError, match=r"not of the form X\.Y"):
        resolve("thirteen", HERE, cache_dir=tmp_path)


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.skipif(not HERE.startswith("linux"), reason="the pypi toolchain is exercised on Linux")
def test_pypi_provider_real_compiles(tmp_path: Path) -> None:
    """cuda-toolkit[nvcc,cccl]==13.0.* from PyPI, assembled and cached in the user cache (paid once)."""
    cache = default_cache_dir()
    tc = resolve("13.0", HERE, "pypi", cache_dir=cache)
    assert tc.provider == "pypi" and tc.cuda_minor == "13.0"
    assert tc.cuda_home.is_relative_to(cache / "toolchains")
    assert (tc.cuda_home / "lib64" / "libcudart.so").exists()
    assert (tc.cuda_home / "include" / "cccl" / "cub").is_dir()
    assert tc.attempts[0].ok and ("installed" in tc.attempts[0].detail or "cached" in tc.attempts[0].detail)
    again = resolve("13.0", HERE, "pypi", cache_dir=cache)
    assert "cached" in again.attempts[0].detail and again.cuda_home == tc.cuda_home
    src = tmp_path / "k.cu"
    src.write_text(KERNEL)
    proc = subprocess.run([str(tc.nvcc), "-c", str(src), "-o", str(tmp_path / "k.o"), "-arch=sm_90"],
                          env=tc.apply(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "k.o").stat().st_size > 0


# --- CLI ---------------------------------------------------------------------------------------------


def test_cli_not_found_exits_3(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", path_without(("apt-get", "dpkg-deb", "micromamba", "mamba", "conda"), tmp_path / "bin"))
    monkeypatch.setenv("BUILDTOOL_CACHE_DIR", str(tmp_path))
    assert main(["toolchain", "--cuda", "12.4"]) == 3  # an EnvironmentProblem: this machine lacks the toolkit
    err = capsys.readouterr().err
    assert "error: no CUDA 12.4 toolkit" in err and "Traceback" not in err


@needs_system_cuda
def test_cli_json_system(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import json

    assert main(["toolchain", "--cuda", "13.0", "--provider", "system", "--json", "--cache-dir", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["provider"] == "system" and data["cuda_version"].startswith("13.0.")
    assert data["attempts"][0]["ok"] is True


@needs_system_cuda
def test_toolkit_found_but_no_host_compiler(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    with pytest.raises(ToolchainNotFound) as exc:
        resolve("13.0", HERE, "system", cache_dir=tmp_path, env={"PATH": str(empty), "CUDA_HOME": str(_system_13_0())})
    assert "no host C++ compiler for CUDA 13.0" in exc.value.message and "no g++ on PATH" in exc.value.message
    assert "apt install gcc-15 g++-15" in (exc.value.hint or "")
