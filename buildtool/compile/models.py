"""What crosses the compile stage's boundary: the settings it takes, the toolchain and build env it
needs (as protocols, so it stays importable without torch), and the result it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import Field

from buildtool.compile.units import ResolvedKernel
from buildtool.model import Frozen
from buildtool.spec.kernelspec import KernelSpec
from buildtool.spec.matrix import Cell


# ------------------------------------------------------------------------------------------ interfaces
# Read-only members: the frozen models that satisfy them (Toolchain, BuildEnv) cannot be assigned to.
class HostCompilerLike(Protocol):
    """What compile needs from ``buildtool.toolchain.models.HostCompiler``."""

    @property
    def kind(self) -> str: ...  # gcc / clang / msvc
    @property
    def path(self) -> Path: ...
    @property
    def version(self) -> str: ...


class ToolchainLike(Protocol):
    """What compile needs from ``buildtool.toolchain.Toolchain``."""

    @property
    def cuda_home(self) -> Path: ...
    @property
    def nvcc(self) -> Path: ...
    @property
    def cuda_version(self) -> str: ...
    @property
    def env(self) -> Mapping[str, str]: ...
    @property
    def host(self) -> HostCompilerLike: ...
    @property
    def include_dirs(self) -> Sequence[Path]: ...  # the toolkit's headers for host TUs (CUDA >= 13: cccl)
    @property
    def library_dirs(self) -> Sequence[Path]: ...


class BuildEnvLike(Protocol):
    """What compile needs from ``buildtool.build.buildenv.BuildEnv``."""

    @property
    def python(self) -> Path: ...
    @property
    def torch_version(self) -> str: ...
    @property
    def cxx11_abi(self) -> bool: ...
    @property
    def include_dirs(self) -> Sequence[Path]: ...
    @property
    def library_dirs(self) -> Sequence[Path]: ...
    @property
    def libraries(self) -> Sequence[str]: ...
    @property
    def ext_suffix(self) -> str: ...
    @property
    def cuda_library_include_dirs(self) -> Sequence[Path]: ...


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
    jobserver: bool = Field(False, description="one token pool for ninja's jobs and nvcc's workers where they honour it")
    fair_share: bool = Field(False, description="each compile in its own session: Linux shares the CPU per TU")


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
    jobserver: int = Field(0, description="slots of the build's jobserver (0: none, compile/jobserver.py)")
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


class CompileRequest(Frozen):
    """What the compile stage is asked to do: every kernel spec's module of one cell, from a prepared tree,
    objects under ``build_dir``, the compiler output appended to ``log_path``."""

    tree: Path
    specs: tuple[KernelSpec, ...]
    cell: Cell
    build_dir: Path
    log_path: Path
    jobs: int | None = Field(None, ge=1, description="parallel compiles (None: default_jobs)")
    cache_dir: Path | None = Field(None, description="the object cache (None: buildtool.host.default_cache_dir)")
    use_object_cache: bool = True
    use_ccache: bool = True
    split: bool = Field(True, description="False: compile each source whole, ignoring the specs' split rules")
    split_compile: int | None = Field(None, description="nvcc -split-compile threads (None: default; 1: off)")
    priorities: bool = Field(False, description="run cheaper TUs at a lower CPU priority (nice), POSIX only")
    jobserver: bool = Field(False, description="one token pool for ninja's jobs and nvcc's workers where they honour it")
    fair_share: bool = Field(False, description="each compile in its own session: Linux shares the CPU per TU")
    quiet: bool = False

    @classmethod
    def for_settings(cls, settings: CompileSettings, **fields: Any) -> CompileRequest:
        """A request with the command line's compile settings (``--jobs``, ``--no-cache``, ...)."""
        return cls(jobs=settings.jobs, use_object_cache=settings.cache, use_ccache=settings.cache,
                   split=settings.split_sources, split_compile=settings.split_compile,
                   priorities=settings.priorities, jobserver=settings.jobserver, fair_share=settings.fair_share, **fields)
