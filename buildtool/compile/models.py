"""What crosses the compile stage's boundary: the settings it takes, the toolchain and build env it
needs (as protocols, so it stays importable without torch), and the result it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import Field

from buildtool.compile.units import ResolvedKernel
from buildtool.model import Frozen


# ------------------------------------------------------------------------------------------ interfaces
class ToolchainLike(Protocol):
    """What compile needs from ``buildtool.toolchain.Toolchain``."""

    cuda_home: Path
    nvcc: Path
    cuda_version: str
    env: Mapping[str, str]


class BuildEnvLike(Protocol):
    """What compile needs from ``buildtool.build.buildenv.BuildEnv``."""

    python: Path
    torch_version: str
    cxx11_abi: bool
    include_dirs: Sequence[Path]
    library_dirs: Sequence[Path]
    libraries: Sequence[str]


class ModuleArtifact(Frozen):
    name: str
    package: str
    path: Path
    size: int
    device_code: dict[str, int] = Field(default_factory=dict,
                                        description="bytes of device code per target as stored (sm_90, compute_90)")
    device_code_uncompressed: dict[str, int] = Field(default_factory=dict,
                                                     description="the same, before fatbin compression")


class UnitTiming(Frozen):
    module: str
    unit: str
    seconds: float
    cached: bool = False


class CompileSettings(Frozen):
    """How to compile, resolved once from the command line: parallelism, splitting and caching. None of it
    changes the kernels' machine code."""

    jobs: int | None = Field(None, ge=1, description="parallel compiles (None: default_jobs)")
    split_compile: int | None = Field(None, ge=1, description="nvcc -split-compile threads (None: default_split_compile; 1: off)")
    split_sources: bool = Field(True, description="False: compile each source whole, ignoring the specs' split rules")
    cache: bool = Field(True, description="object cache + ccache; off to measure cold compiles")
    priorities: bool = Field(False, description="run cheaper TUs at a lower CPU priority (nice), POSIX only")


class CompileBound(Frozen):
    """How close the compile came to what the machine allows: no schedule of the same TUs finishes before
    max(the longest TU alone, total CPU-s / usable cores). The longest TU alone is not known inside one
    parallel build (`nox -s bench` measures it); the bound here is the CPU term, so the ratio errs high."""

    cores: int = Field(description="CPUs this process may use (affinity mask)")
    wall_seconds: float = Field(description="ninja's run: first compile start to last link end")
    cpu_seconds: float = Field(description="user + system CPU of every compiler and linker process")
    longest_tu_alone_seconds: float | None = Field(None, description="measured apart (bench); None here")

    @property
    def bound_seconds(self) -> float:
        return max(self.cpu_seconds / self.cores, self.longest_tu_alone_seconds or 0.0)

    @property
    def ratio(self) -> float | None:
        return round(self.wall_seconds / self.bound_seconds, 3) if self.bound_seconds > 0 else None

    def summary(self) -> dict[str, Any]:
        return {**self.model_dump(), "bound_seconds": round(self.bound_seconds, 2), "ratio": self.ratio}


class CompileResult(Frozen):
    modules: tuple[ModuleArtifact, ...]
    timings: tuple[UnitTiming, ...] = Field(description="compiled TUs, slowest first (cache hits have 0 s)")
    cache_hits: int
    cache_misses: int
    ccache: bool
    jobs: int
    split_compile: int = 1
    wall_seconds: float
    cpu_seconds: float | None
    peak_rss_mb: float | None
    log_path: Path
    build_ninja: Path
    kernels: tuple[ResolvedKernel, ...] = Field((), description="what was compiled: TUs and flags per module")
    bound: CompileBound | None = Field(None, description="the compile against its bound (None: all cached)")

    @property
    def slowest(self) -> UnitTiming | None:
        compiled = [t for t in self.timings if not t.cached]
        return compiled[0] if compiled else None
