"""The `pypi` provider: NVIDIA's `cuda-toolkit` meta-package assembled into a cached CUDA_HOME.

Only CUDA 13.x has a full nvcc on PyPI. `cuda-toolkit[nvcc]` pulls nvidia-cuda-nvcc (nvcc, ptxas,
fatbinary, nvlink, cudafe++), nvidia-cuda-crt (crt/ headers), nvidia-nvvm (cicc, libnvvm, libdevice) and
nvidia-cuda-runtime (cuda_runtime.h, libcudart); the CCCL headers (cub/thrust/libcu++, needed by every
kernel here) are the separate `cccl` extra, so the requirement is `cuda-toolkit[nvcc,cccl]==13.0.*`.
All of them install into one `nvidia/cu13/` tree that is already shaped like a toolkit (bin/, include/,
lib/, nvvm/, bin/nvcc.profile); `assemble()` adds what tools expect of a CUDA_HOME: lib64 -> lib,
targets/<arch>-linux/{include,lib}, and the unversioned libcudart.so/libnvvm.so links.

Cache: <cache>/toolchains/pypi-cuda<X.Y>-<platform>/ (key = CUDA version + platform), built in a temporary
sibling and renamed into place only after a tiny .cu compiled to an object with the assembled nvcc, so a
half-installed toolkit is never reused. The 12.x nvidia-cuda-nvcc-cu12 wheels carry only ptxas: the
provider says so instead of trying.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from buildtool.errors import BuildError
from buildtool.toolchain.models import ProviderFacts, os_of
from buildtool.toolchain.system import nvcc_name, nvcc_version
from buildtool.versions import split_cuda

MARKER = "buildtool-toolchain.json"
_PROBE = "#include <cuda_runtime.h>\n#include <cub/block/block_reduce.cuh>\n__global__ void probe(float* x) { x[threadIdx.x] *= 2.0f; }\n"


def unsupported_reason(cuda: str, facts: ProviderFacts) -> str | None:
    """Why PyPI cannot supply ``cuda`` (None when it can)."""
    major, _ = split_cuda(cuda)
    if major in facts.pypi.full_nvcc_majors:
        return None
    reason = facts.pypi.missing_reason.get(str(major))
    full = ", ".join(f"{m}.x" for m in facts.pypi.full_nvcc_majors)
    return " ".join((reason or f"PyPI has no nvcc for CUDA {major}.x").split()) + f" (full nvcc on PyPI: CUDA {full} only)"


def requirement(cuda: str, facts: ProviderFacts) -> str:
    major, minor = split_cuda(cuda)
    return facts.pypi.requirement[str(major)].format(major=major, minor=minor)


def pip_command(cuda: str, target: Path, facts: ProviderFacts, *, python: str | None = None) -> list[str]:
    """pip install --target: binary wheels only, no bytecode (there is no Python in these wheels)."""
    return [
        python or sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
        "--no-compile", "--only-binary=:all:", "--target", str(target), requirement(cuda, facts),
    ]


def cache_path(cache_dir: Path, cuda: str, platform: str) -> Path:
    major, minor = split_cuda(cuda)
    return cache_dir / "toolchains" / f"pypi-cuda{major}.{minor}-{platform}"


def cuda_home_in(site: Path, cuda: str, facts: ProviderFacts) -> Path:
    major, _ = split_cuda(cuda)
    return site / facts.pypi.cuda_home_subdir[str(major)]


def _link(link: Path, target: str) -> None:
    if not link.exists() and not link.is_symlink():
        link.symlink_to(target)


def assemble(cuda_home: Path, platform: str) -> None:
    """Add the CUDA_HOME conventions the wheels leave out (Linux; Windows uses the tree as installed)."""
    if os_of(platform) != "linux":
        return
    lib = cuda_home / "lib"
    _link(cuda_home / "lib64", "lib")
    machine = platform.split("-", 1)[1]
    target = cuda_home / "targets" / f"{'sbsa' if machine == 'aarch64' else machine}-linux"
    target.mkdir(parents=True, exist_ok=True)
    _link(target / "include", "../../include")
    _link(target / "lib", "../../lib")
    # The wheels ship only the SONAME files; linkers want the unversioned name for -lcudart / -lnvvm.
    for soname in sorted(lib.glob("lib*.so.*")):
        plain = lib / (soname.name.split(".so.", 1)[0] + ".so")
        _link(plain, soname.name)


def publish_toolkit(tmp: Path, final: Path, record: Mapping[str, object]) -> None:
    """Mark a provisioned toolkit complete (``MARKER``, with ``record``) and move it from ``tmp`` into place;
    another process may have published the same toolkit meanwhile (its copy stays), or left a half-built
    directory without the marker (it is replaced)."""
    (tmp / MARKER).write_text(json.dumps(record, indent=2), encoding="utf-8")
    try:
        tmp.rename(final)
    except OSError:
        if not (final / MARKER).is_file():  # someone else's half-built dir: replace it
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)


def verify_compile(nvcc: Path, workdir: Path, env: Mapping[str, str] | None = None,
                   host_cxx: Path | None = None) -> None:
    """Compile a tiny kernel (with CCCL) to an object: proves nvcc, cicc, ptxas, headers all work (with
    ``host_cxx`` as nvcc's host compiler when given)."""
    if host_cxx is not None:
        env = {**(env if env is not None else os.environ), "NVCC_CCBIN": str(host_cxx)}
    src = workdir / "probe.cu"
    src.write_text(_PROBE, encoding="utf-8")
    obj = workdir / "probe.o"
    proc = subprocess.run(
        [str(nvcc), "-c", str(src), "-o", str(obj), "-arch=sm_90"],
        capture_output=True, text=True, timeout=600, env=dict(env) if env else None,
    )
    if proc.returncode != 0 or not obj.is_file():
        raise BuildError(
            f"the assembled PyPI toolkit cannot compile a test kernel: {nvcc} exited {proc.returncode}\n"
            + (proc.stderr or proc.stdout)[-2000:]
        )
    src.unlink()
    obj.unlink()


def provision(
    cuda: str, platform: str, cache_dir: Path, facts: ProviderFacts, *, env: Mapping[str, str] | None = None,
    host_cxx: Path | None = None,
) -> tuple[Path, str, str]:
    """(CUDA_HOME, full version, detail) of the cached PyPI toolkit for ``cuda``; installs it when absent.

    Raises BuildError when pip or the test compile fails (the reason goes into the attempt)."""
    final = cache_path(cache_dir, cuda, platform)
    marker = final / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text(encoding="utf-8"))
        home = final / info["cuda_home"]
        if (home / "bin" / nvcc_name(platform)).is_file():
            return home, str(info["version"]), f"cached {requirement(cuda, facts)} at {home}"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    started = time.monotonic()
    try:
        cmd = pip_command(cuda, tmp, facts)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=dict(env) if env else None)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
            raise BuildError(f"`{' '.join(cmd[2:])}` failed (exit {proc.returncode}):\n{tail}")
        home = cuda_home_in(tmp, cuda, facts)
        nvcc = home / "bin" / nvcc_name(platform)
        if not nvcc.is_file():
            raise BuildError(f"{requirement(cuda, facts)} installed no {nvcc.relative_to(tmp)}")
        assemble(home, platform)
        version = nvcc_version(nvcc)
        if split_cuda(version) != split_cuda(cuda):
            raise BuildError(f"{requirement(cuda, facts)} installed nvcc {version}, not {cuda}")
        verify_compile(nvcc, tmp, dict(env if env is not None else os.environ), host_cxx)
        rel = home.relative_to(tmp).as_posix()
        seconds = round(time.monotonic() - started, 1)
        publish_toolkit(tmp, final, {"requirement": requirement(cuda, facts), "version": version, "cuda_home": rel,
                                     "install_seconds": seconds})
        return final / rel, version, f"installed {requirement(cuda, facts)} into {final / rel} in {seconds} s"
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
