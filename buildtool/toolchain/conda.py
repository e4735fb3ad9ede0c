"""The `conda` provider: cuda-nvcc + cuda-cccl (+ cuda-cudart-dev) from NVIDIA's versioned conda label.

`micromamba`, `mamba` or `conda` on PATH (first found, data: toolchain.yaml `conda.tools`) creates a
cached prefix <cache>/toolchains/conda-cuda<X.Y.Z>-<platform>/ from channel `nvidia/label/cuda-X.Y.Z`, the
route Windows users of the seeds take. The label pins every package of the toolkit to one release, so
nvcc, crt and the CCCL headers match. CUDA_HOME is the prefix on Linux and <prefix>/Library on Windows.
Created in place (conda prefixes are not relocatable) and marked complete once nvcc answers with the
right version.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from buildtool.errors import BuildError
from buildtool.toolchain.models import ProviderFacts, os_of
from buildtool.toolchain.system import nvcc_name, nvcc_version
from buildtool.versions import split_cuda

MARKER = "buildtool-toolchain.complete"


def find_tool(env: Mapping[str, str], facts: ProviderFacts) -> Path | None:
    """The first conda-like tool on PATH (micromamba preferred: a single static binary)."""
    for name in facts.conda.tools:
        found = shutil.which(name, path=env.get("PATH", ""))
        if found:
            return Path(found)
    return None


def create_command(tool: Path, prefix: Path, cuda: str, facts: ProviderFacts) -> list[str]:
    """`<tool> create -y -p PREFIX -c nvidia/label/cuda-X.Y.Z cuda-nvcc cuda-cccl cuda-cudart-dev`."""
    return [str(tool), "create", "--yes", "--prefix", str(prefix), "-c", facts.conda.channel_for(cuda),
            *facts.conda.packages]


def cache_path(cache_dir: Path, cuda: str, platform: str, facts: ProviderFacts) -> Path:
    return cache_dir / "toolchains" / f"conda-cuda{facts.conda.full_version(cuda)}-{platform}"


def cuda_home_in(prefix: Path, platform: str, facts: ProviderFacts) -> Path:
    return prefix / facts.conda.cuda_home_subdir.get(os_of(platform), ".")


def install_hint(cuda: str, facts: ProviderFacts) -> str:
    return facts.conda.install_hint.format(full=facts.conda.full_version(cuda))


def provision(
    cuda: str, platform: str, cache_dir: Path, facts: ProviderFacts, tool: Path,
    *, env: Mapping[str, str] | None = None,
) -> tuple[Path, str, str]:
    """(CUDA_HOME, full version, detail) of the cached conda prefix; creates it when absent.

    conda writes its prefix into installed files, so the prefix is created in place (not renamed from a
    temporary directory); a marker written last says it is complete, and an unmarked one is recreated."""
    final = cache_path(cache_dir, cuda, platform, facts)
    home = cuda_home_in(final, platform, facts)
    nvcc = home / "bin" / nvcc_name(platform)
    marker = final / MARKER
    if marker.is_file() and nvcc.is_file():
        return home, nvcc_version(nvcc), f"cached conda prefix {final}"
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    cmd = create_command(tool, final, cuda, facts)
    ok = False
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=dict(env) if env else None)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
            raise BuildError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
        version = nvcc_version(nvcc)
        if split_cuda(version) != split_cuda(cuda):
            raise BuildError(f"{facts.conda.channel_for(cuda)} installed nvcc {version}, not {cuda}")
        marker.write_text(f"{version}\n", encoding="utf-8")
        ok = True
        return home, version, f"created conda prefix {final} with {tool.name}"
    finally:
        if not ok:
            shutil.rmtree(final, ignore_errors=True)
