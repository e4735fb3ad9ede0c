"""Toolchain data: what a compile needs (nvcc, CUDA_HOME, host compiler, environment) and how it was found.

`Toolchain` is the stage boundary between toolchain provisioning and the compile: the compile never looks
for CUDA or a compiler itself, it applies `Toolchain.env` and uses `nvcc`, `cuda_home`, `include_dirs`.
`ProviderFacts` is buildtool/data/toolchain.yaml, validated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Literal

from buildtool.errors import EnvironmentProblem
from buildtool.model import Frozen
from buildtool.spec import yamlsrc
from buildtool.versions import major_minor

ProviderName = Literal["system", "pypi", "debian", "conda"]
ProviderChoice = Literal["auto", "system", "pypi", "debian", "conda"]
#: the order `auto` tries them in
PROVIDERS: tuple[ProviderName, ...] = ("system", "pypi", "debian", "conda")


class HostCompiler(Frozen):
    """The C++ compiler nvcc drives (-ccbin) and that compiles the .cpp sources."""

    kind: Literal["gcc", "msvc", "clang"]
    path: Path
    version: str  # gcc: "12.2.0"; msvc: the VC tools version "14.44.35207"; clang: "18.1.8"
    cc: Path | None = None  # the matching C compiler (gcc-N for g++-N); None for MSVC (cl does both)
    product: str | None = None  # MSVC: Visual Studio product line ("2022")

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])


class ProviderAttempt(Frozen):
    """One provider tried: whether it supplied the toolkit and, either way, why."""

    provider: ProviderName
    ok: bool
    detail: str


class Toolchain(Frozen):
    """A CUDA toolkit plus host compiler that can compile the cell, and the environment to do it in.

    `env` holds every variable the compile must set (PATH already prefixed with `path_prefix`, CUDA_HOME,
    CUDA_PATH, CC/CXX and NVCC_CCBIN on Linux; the vcvars64 environment and DISTUTILS_USE_SDK=1 on Windows);
    `apply()` merges it over a base environment.
    """

    provider: ProviderName
    cuda_home: Path
    nvcc: Path
    cuda_version: str  # full, from `nvcc --version`: "13.0.88"
    host: HostCompiler
    env: dict[str, str]
    path_prefix: tuple[Path, ...] = ()
    include_dirs: tuple[Path, ...] = ()  # CUDA headers; CUDA >= 13 adds include/cccl (failures.md F27)
    library_dirs: tuple[Path, ...] = ()
    attempts: tuple[ProviderAttempt, ...] = ()

    @property
    def cuda_minor(self) -> str:
        """major.minor of the toolkit: "13.0"."""
        return major_minor(self.cuda_version)

    def apply(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (default: os.environ) with this toolchain's variables set."""
        merged = dict(os.environ if base is None else base)
        merged.update(self.env)
        return merged

    def summary(self) -> dict[str, object]:
        return self.model_dump(mode="json")


class ToolchainNotFound(EnvironmentProblem):
    """No provider could supply the cell's CUDA (or no host compiler fits it); lists what was tried."""

    def __init__(self, message: str, *, attempts: tuple[ProviderAttempt, ...] = (), hint: str | None = None):
        super().__init__(message, hint=hint)
        self.attempts = attempts


# --- provider facts (buildtool/data/toolchain.yaml) ---------------------------------------------------


class SystemFacts(Frozen):
    env_vars: tuple[str, ...]
    versioned_env_vars: tuple[str, ...]
    default_dirs: dict[str, tuple[str, ...]]
    install_hint: dict[str, str]


class PypiFacts(Frozen):
    full_nvcc_majors: tuple[int, ...]
    missing_reason: dict[str, str]
    requirement: dict[str, str]
    cuda_home_subdir: dict[str, str]
    install_hint: str


class CondaFacts(Frozen):
    tools: tuple[str, ...]
    channel: str
    packages: tuple[str, ...]
    labels: dict[str, str]
    cuda_home_subdir: dict[str, str]
    install_hint: str

    def full_version(self, cuda: str) -> str:
        """The label's X.Y.Z for a cell CUDA "X.Y" (or an X.Y.Z given as is)."""
        parts = cuda.split(".")
        if len(parts) >= 3:
            return cuda
        return self.labels.get(cuda, f"{cuda}.0")

    def channel_for(self, cuda: str) -> str:
        return self.channel.format(full=self.full_version(cuda))


class DebianRelease(Frozen):
    """One Debian release's CUDA: where it is and which packages make a toolkit of it."""

    suite: str
    version: str  # the nvcc version it ships, "12.4.131"
    components: tuple[str, ...]
    architectures: tuple[str, ...]
    packages: tuple[str, ...]


class DebianLayout(Frozen):
    """How the unpacked packages become a CUDA_HOME (paths relative to the unpacked root; {triplet})."""

    tools_dir: str
    skip_tools: tuple[str, ...]
    nvcc: str
    links: dict[str, str]
    nvcc_profile: str


class DebianFacts(Frozen):
    hosts: tuple[str, ...]
    archive: str
    keyring: str
    keyring_fix: str
    dpkg_arch: dict[str, str]
    triplet: dict[str, str]
    releases: dict[str, DebianRelease]
    prune: tuple[str, ...]
    layout: DebianLayout
    install_hint: str
    system_hint: str


class MsvcFacts(Frozen):
    vswhere: str
    vswhere_args: tuple[str, ...]
    vcvars: str
    fix: str


class HostCompilerFacts(Frozen):
    gcc_fix: tuple[str, ...]
    msvc: MsvcFacts


class BuildEnvFacts(Frozen):
    torch_index: str
    pypi_cuda_platforms: tuple[str, ...]
    extra_packages: tuple[str, ...]


class ProviderFacts(Frozen):
    system: SystemFacts
    pypi: PypiFacts
    debian: DebianFacts
    conda: CondaFacts
    host_compiler: HostCompilerFacts
    build_env: BuildEnvFacts


@cache
def load_facts() -> ProviderFacts:
    return yamlsrc.load_packaged(ProviderFacts, "toolchain.yaml")


def os_of(platform: str) -> str:
    """"linux-x86_64" -> "linux"."""
    return platform.split("-", 1)[0]
