"""A kernel spec resolved for one target (platform, torch, CUDA, archs, host compiler): its translation
units, each with its language and complete flags, and the module's link flags. Pure: no files, no tools."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath

from packaging.version import Version
from pydantic import Field

from buildtool.errors import UserError
from buildtool.model import Frozen
from buildtool.spec.abitrack import AbiTrack, torch_target_version
from buildtool.spec.kernelspec import (
    CUDA_SUFFIXES,
    CommonFlags,
    CompilerKind,
    FlagSet,
    KernelSpec,
    Language,
    TargetFacts,
    load_common_flags,
    min_driver_cuda,
)


class SplitPart(Frozen):
    """One generated TU of a split source; parts are numbered over all the rules that split the source."""

    index: int = Field(description="1-based")
    total: int

    @property
    def label(self) -> str:
        return f"part{self.index}of{self.total}"


class CompileUnit(Frozen):
    """One translation unit: the command is ``compiler <flags> <includes> -c <source> -o <object>``."""

    source: str = Field(description="the real file, relative to the tree")
    language: Language
    split: SplitPart | None = None
    flags: tuple[str, ...]
    include_dirs: tuple[str, ...] = Field(description="relative (to the tree) or absolute (toolkit) dirs")
    uses_python: bool = Field(description="host binding TU: needs Python headers, so it is per Python version")

    @property
    def name(self) -> str:
        """Stable, unique name of this TU (the generated file name for split parts)."""
        if self.split is None:
            return self.source
        p = PurePosixPath(self.source)
        return str(p.with_name(f"{p.stem}.{self.split.label}{p.suffix}"))

    @property
    def object_name(self) -> str:
        return self.name + ".o"


class ResolvedKernel(Frozen):
    spec_name: str
    module: str
    package: str
    units: tuple[CompileUnit, ...]
    link_flags: tuple[str, ...]
    nvcc_threads: int
    abi: AbiTrack = "full"
    libraries: tuple[str, ...] | None = None  # None: the compile stage's full-ABI default
    min_driver_cuda: str = Field("", description="oldest driver (as the CUDA version it supports) the module loads on")


def arch_flags(archs: Sequence[str], ptx: bool) -> tuple[str, ...]:
    """``-gencode arch=compute_XY,code=sm_XY`` per arch (``9.0a`` -> ``sm_90a``), plus PTX of the newest."""
    if not archs:
        raise UserError("the cell has no target archs; set arch_policy or archs in matrix.yaml")
    out: list[str] = []
    for arch in archs:
        m = re.fullmatch(r"(\d+)\.(\d+)([af]?)", arch)
        if m is None:
            raise UserError(f'arch "{arch}" must look like 8.0, 9.0 or 9.0a')
        xy = f"{m.group(1)}{m.group(2)}{m.group(3)}"
        out += ["-gencode", f"arch=compute_{xy},code=sm_{xy}"]
    if ptx:
        newest = max(archs, key=lambda a: Version(a.rstrip("af")))
        xy = newest.replace(".", "")
        out += ["-gencode", f"arch=compute_{xy},code=compute_{xy}"]
    return tuple(out)


def nvcc_threads(archs: Sequence[str], ptx: bool) -> int:
    """nvcc --threads parallelises over gencode targets; more than 4 only multiplies peak memory."""
    return max(1, min(4, len(archs) + (1 if ptx else 0)))


def _fill(values: Iterable[str], facts: TargetFacts, module: str) -> list[str]:
    target = torch_target_version(facts.torch_floor) if facts.torch_floor else ""
    table = {"cxx_std": facts.cxx_std, "cxx11_abi": "1" if facts.cxx11_abi else "0",
             "module": module, "cuda_home": facts.cuda_home, "torch_target_version": target}
    return [v.format_map(table) for v in values]


def _collect(sets: Sequence[FlagSet], attr: str) -> list[str]:
    return [v for s in sets for v in getattr(s, attr)]


def active_flag_sets(spec: KernelSpec, facts: TargetFacts, common: CommonFlags | None = None) -> list[FlagSet]:
    """Common base, common rules, the spec's own flags, then the spec's rules, in that order (later wins
    where a compiler takes the last of conflicting flags)."""
    common = common or load_common_flags()
    sets: list[FlagSet] = [common.base]
    sets += [r for r in common.rules if r.when.matches(facts)]
    sets.append(spec)
    sets += [r for r in spec.rules if r.when.matches(facts)]
    return sets


def _define_flags(defines: Sequence[str], undefines: Sequence[str], compiler: CompilerKind) -> list[str]:
    d, u = ("/D", "/U") if compiler == "msvc" else ("-D", "-U")
    return [f"{d}{x}" for x in _dedupe(defines)] + [f"{u}{x}" for x in _dedupe(undefines)]


def _dedupe(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def resolve(spec: KernelSpec, facts: TargetFacts, common: CommonFlags | None = None, *,
            jobs: int | None = None, split_compile: int = 1) -> ResolvedKernel:
    """Exact compiler flags for every TU of ``spec`` on ``facts``; with ``jobs``, only the split rules a
    build with that many parallel compiles uses (``KernelSpec.for_jobs``). Pure: no disk, no tools."""
    if jobs is not None:
        spec = spec.for_jobs(jobs, split_compile)
    if spec.abi != facts.abi:
        raise UserError(f"kernel spec {spec.name or spec.module} is an `abi: {spec.abi}` spec, the build is on the "
                        f"{facts.abi}-ABI track", hint="the recipe names full-ABI specs in `kernels` and stable "
                        "ones in `stable_abi.kernels`")
    if spec.abi == "stable" and not facts.torch_floor:
        raise UserError(f"kernel spec {spec.name or spec.module} is stable-ABI but the build has no torch floor")
    sets = active_flag_sets(spec, facts, common)
    defines = _fill(_collect(sets, "defines"), facts, spec.module)
    undefines = _collect(sets, "undefines")
    include_dirs = _dedupe(_fill(_collect(sets, "include_dirs"), facts, spec.module))
    cxx_only_includes = _dedupe(_fill(_collect(sets, "cxx_include_dirs"), facts, spec.module))
    cxx_flags = _fill(_collect(sets, "cxx_flags"), facts, spec.module)
    nvcc_flags = _fill(_collect(sets, "nvcc_flags"), facts, spec.module)
    threads = nvcc_threads(facts.archs, facts.ptx)

    host_defines = _define_flags(defines, undefines, facts.compiler)
    # nvcc takes -D/-U itself and forwards them to the host compiler, whatever that is.
    nvcc_defines = _define_flags(defines, undefines, "gcc")
    cuda_flags = (*nvcc_defines, *nvcc_flags, *arch_flags(facts.archs, facts.ptx), "--threads", str(threads))

    units: list[CompileUnit] = []
    for source in spec.sources:
        language: Language = "cuda" if source.endswith(CUDA_SUFFIXES) else "cxx"
        if language == "cxx":
            # A stable-ABI binding includes no Python header: one object serves every CPython.
            units.append(CompileUnit(
                source=source, language="cxx", flags=(*host_defines, *cxx_flags),
                include_dirs=(*include_dirs, *cxx_only_includes), uses_python=spec.abi == "full",
            ))
            continue
        total = sum(r.parts for r in spec.rules_for(source))
        parts = [SplitPart(index=i, total=total) for i in range(1, total + 1)] if total else [None]
        units += [
            CompileUnit(source=source, language="cuda", split=part, flags=cuda_flags,
                        include_dirs=tuple(include_dirs), uses_python=False)
            for part in parts
        ]
    link_flags = tuple(_fill(_collect(sets, "link_flags"), facts, spec.module))
    return ResolvedKernel(spec_name=spec.name, module=spec.module, package=spec.package, units=tuple(units),
                          link_flags=link_flags, nvcc_threads=threads, abi=spec.abi, libraries=spec.libraries,
                          min_driver_cuda=min_driver_cuda(facts.cuda, sets))
