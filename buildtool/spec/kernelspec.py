"""Kernel specs (kernels/*.yaml): what one compiled extension module is made of, and the pure resolution of
a spec for one target (cell + toolchain facts) into exact per-translation-unit compiler flags.

Resolution never touches the disk or runs a tool: ``resolve(spec, facts)`` is a function of its inputs, so
every flag decision (C++ standard, MSVC switches, fatbin compression, CUDA 13's cccl include, arch list,
split parts) is unit-tested without a compiler. The common flags every module gets (torch's own defaults
and the cross-cutting rules) live in ``buildtool/data/compile_flags.yaml``; a spec adds its own.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import Field, field_validator, model_validator

from buildtool.errors import UserError, allowed_list, did_you_mean
from buildtool.model import Frozen
from buildtool.spec import yamlsrc
from buildtool.spec.abitrack import AbiTrack
from buildtool.spec.compat import PLATFORMS

OsName = Literal["linux", "windows"]


CompilerKind = Literal["gcc", "msvc"]


Language = Literal["cxx", "cuda"]


#: Placeholders a flag or include dir may use; filled from the target facts at resolution.
PLACEHOLDERS = ("cxx_std", "cxx11_abi", "module", "cuda_home", "torch_target_version")


CUDA_SUFFIXES = (".cu",)


CXX_SUFFIXES = (".cpp", ".cc", ".cxx", ".c")


#: An explicit instantiation definition on one line: ``template void f<float, float>(Params &, cudaStream_t);``
DEFAULT_SPLIT_MATCH = r"^\s*template\s+(?:void|class|struct|__global__\s+void)\b[^;{]*;\s*(?://.*)?$"


def _as_tuple(v: Any) -> Any:
    if v is None:
        return v
    if isinstance(v, str | int | float):
        return (str(v),)
    return tuple(str(x) for x in v)


def _check_placeholders(values: Iterable[str]) -> None:
    for value in values:
        for _, name, _, _ in string.Formatter().parse(value):
            if name is not None and name not in PLACEHOLDERS:
                raise ValueError(
                    f'unknown placeholder "{{{name}}}" in "{value}"{did_you_mean(name, PLACEHOLDERS)}; '
                    f"allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)} (write {{{{ }}}} for a literal brace)"
                )


def _check_specifier(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        SpecifierSet(v)
    except InvalidSpecifier as exc:
        raise ValueError(f"not a version specifier like '>=2.13': {exc}") from None
    return v


class When(Frozen):
    """Conditions of a rule; every given condition must hold (an empty ``when`` always holds)."""

    platform: tuple[str, ...] | None = None
    os: tuple[OsName, ...] | None = None
    compiler: tuple[CompilerKind, ...] | None = Field(None, description="host compiler kind")
    torch: str | None = Field(None, description="version specifier on the cell's torch, e.g. '>=2.13'")
    cuda: str | None = Field(None, description="version specifier on the toolkit's CUDA, e.g. '>=13.2'")
    cxx_std: tuple[str, ...] | None = None
    abi: AbiTrack | None = Field(None, description="the module's ABI track (full or stable)")

    _t = field_validator("platform", "os", "compiler", "cxx_std", mode="before")(_as_tuple)
    _s = field_validator("torch", "cuda")(_check_specifier)

    @field_validator("platform")
    @classmethod
    def _platforms(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for p in v or ():
            if p not in PLATFORMS:
                raise ValueError(f'unknown platform "{p}"{did_you_mean(p, PLATFORMS)}; allowed: {", ".join(PLATFORMS)}')
        return v

    def matches(self, facts: TargetFacts) -> bool:
        checks = (
            self.platform is None or facts.platform in self.platform,
            self.os is None or facts.os in self.os,
            self.compiler is None or facts.compiler in self.compiler,
            self.cxx_std is None or facts.cxx_std in self.cxx_std,
            self.torch is None or Version(facts.torch) in SpecifierSet(self.torch, prereleases=True),
            self.cuda is None or Version(facts.cuda) in SpecifierSet(self.cuda, prereleases=True),
            self.abi is None or facts.abi == self.abi,
        )
        return all(checks)


class FlagSet(Frozen):
    """Flags a spec or rule contributes. ``defines`` are NAME or NAME=VALUE (both compilers get them);
    ``cxx_include_dirs`` reach only the host compiler (CUDA 13's cccl dir, which nvcc adds by itself)."""

    include_dirs: tuple[str, ...] = ()
    cxx_include_dirs: tuple[str, ...] = ()
    defines: tuple[str, ...] = ()
    undefines: tuple[str, ...] = ()
    cxx_flags: tuple[str, ...] = ()
    nvcc_flags: tuple[str, ...] = Field((), description="flags for nvcc itself (host flags go via -Xcompiler)")
    link_flags: tuple[str, ...] = ()

    _t = field_validator(
        "include_dirs", "cxx_include_dirs", "defines", "undefines", "cxx_flags", "nvcc_flags", "link_flags",
        mode="before",
    )(_as_tuple)

    @field_validator("include_dirs", "cxx_include_dirs", "defines", "cxx_flags", "nvcc_flags", "link_flags")
    @classmethod
    def _placeholders(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        _check_placeholders(v)
        return v

    @field_validator("defines", "undefines")
    @classmethod
    def _define_form(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for d in v:
            if not re.match(r"^[A-Za-z_]\w*(=.*)?$", d):
                raise ValueError(f'"{d}" is not NAME or NAME=VALUE (no -D prefix)')
        return v

    @field_validator("cxx_flags", "nvcc_flags")
    @classmethod
    def _no_debug_or_noise(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # Debug line info bloats the library and verbose ptxas output floods the log; both are upstream habits.
        banned = {"-lineinfo": "debug line info", "-G": "device debug", "-g": "host debug info",
                  "--ptxas-options=-v": "verbose ptxas output", "-Xptxas=-v": "verbose ptxas output"}
        for flag in v:
            if flag in banned:
                raise ValueError(f'"{flag}" ({banned[flag]}) is not allowed in release builds')
            if flag.startswith(("-gencode", "--generate-code", "-arch", "--gpu-architecture")):
                raise ValueError(f'"{flag}": arch flags come from the cell (matrix arch_policy), not the spec')
        return v


class Rule(FlagSet):
    when: When = When()
    why: str = Field("", description="one line: why the rule exists (error text, upstream issue)")
    min_driver_cuda: str | None = Field(None, description="the code this rule builds needs a driver of this CUDA "
                                        "version or newer at run time (e.g. fatbin -compress-mode=size: 12.4)")

    @field_validator("min_driver_cuda")
    @classmethod
    def _driver_form(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^\d+\.\d+$", v):
            raise ValueError(f'"{v}" must be a CUDA version like 12.4')
        return v


class Fanout(Frozen):
    """Split below the file's own instantiations, without patching: the function template they call
    (e.g. ``selective_scan_bwd_launch<kNThreads, kNItems, input_t, weight_t>``) is explicitly instantiated
    per ``item`` in parts of its own, and part 1 keeps the original instantiation lines preceded by
    ``extern template`` declarations of those, so it compiles only the light dispatcher. ``{item}`` and
    ``{match}`` (the ``key`` capture of the original line, e.g. ``at::Half, complex_t``) are filled in."""

    declaration: str = Field(description="e.g. 'void launch<{item}, {match}>(Params &params, cudaStream_t stream)'")
    items: tuple[str, ...] = Field(min_length=1)

    _t = field_validator("items", mode="before")(_as_tuple)

    @field_validator("declaration")
    @classmethod
    def _fields(cls, v: str) -> str:
        names = {name for _, name, _, _ in string.Formatter().parse(v) if name is not None}
        if not names <= {"item", "match"} or "item" not in names:
            raise ValueError("declaration uses {item} (required) and {match} (optional) only")
        if v.strip().startswith(("template", "extern")) or v.strip().endswith(";"):
            raise ValueError("give the bare declaration; `template`/`extern template` and `;` are added")
        return v


class SplitRule(Frozen):
    """Compile each ``source`` as ``parts`` generated TUs. Each part holds the whole text (every template
    definition) but only its share of the lines matching ``match`` (explicit instantiations, grouped by the
    ``key`` capture, 0 = whole line); the other matched lines are blanked so line numbers stay those of
    the real file. With ``fanout``, part 1 keeps every matched line and the other parts instantiate the
    fanout declarations instead. A non-template, non-inline definition would be defined once per part
    and break the link: the splitter refuses such code unless an ``exclusive`` regex matches its first
    line, and then keeps it in part 1 only."""

    source: tuple[str, ...]
    parts: int = Field(ge=2, le=64)
    match: str = DEFAULT_SPLIT_MATCH
    key: int = Field(0, ge=0, description="capture group of `match` that groups lines (0: the whole line)")
    exclusive: tuple[str, ...] = ()
    fanout: Fanout | None = None
    min_jobs: int = Field(1, ge=1, description="split only when the build runs at least this many jobs: each "
                          "part re-parses the headers, which costs more than it saves on a machine the "
                          "unsplit TUs already keep busy")
    max_jobs: int | None = Field(None, ge=1, description="and at most this many (a coarser split for small "
                                 "machines next to a finer one for big machines)")
    without_split_compile: bool = Field(False, description="split only when nvcc -split-compile is off: where "
                                        "it is on, it spreads the TU over the cores without re-parsing headers")

    _t = field_validator("source", "exclusive", mode="before")(_as_tuple)

    @field_validator("match", "exclusive")
    @classmethod
    def _regex(cls, v: str | tuple[str, ...]) -> str | tuple[str, ...]:
        for pattern in (v,) if isinstance(v, str) else v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {pattern!r}: {exc}") from None
        return v

    def applies(self, jobs: int, split_compile: int = 1) -> bool:
        if self.without_split_compile and split_compile > 1:
            return False
        return self.min_jobs <= jobs and (self.max_jobs is None or jobs <= self.max_jobs)

    @model_validator(mode="after")
    def _key_group(self) -> SplitRule:
        if self.max_jobs is not None and self.max_jobs < self.min_jobs:
            raise ValueError("max_jobs is below min_jobs")
        if self.key > re.compile(self.match).groups:
            raise ValueError(f"key {self.key} names a capture group that `match` does not have")
        if self.fanout is not None and "{match}" in self.fanout.declaration and self.key == 0:
            raise ValueError("fanout.declaration uses {match}: set `key` to the capture group holding the template arguments")
        return self


#: What a stable-ABI library links: the C shim lives in libtorch_cpu, the CUDA stream getter in
#: libtorch_cuda; never libtorch_python or libpython (that would tie it to one torch or one CPython).
STABLE_LINK_LIBS = ("torch_cpu", "torch_cuda", "c10", "cudart")


_FORBIDDEN_STABLE_LIBS = re.compile(r"^(torch_python|python\d.*)$")


class KernelSpec(FlagSet):
    """One extension module: ``kernels/<name>.yaml``. Paths are relative to the prepared source tree."""

    name: str = Field("", description="the spec's file stem (set by the loader)")
    module: str = Field(description="the Python extension module name, e.g. causal_conv1d_cuda")
    package: str = Field("", description="Python package the module goes in ('' = top level)")
    description: str = ""
    sources: tuple[str, ...]
    split: tuple[SplitRule, ...] = ()
    rules: tuple[Rule, ...] = ()
    abi: AbiTrack = Field("full", description="stable: a LibTorch-stable-ABI library loaded with "
                          "torch.ops.load_library (no pybind11, no Python headers, abi3 suffix)")
    link_libs: tuple[str, ...] | None = Field(None, description="libraries to link instead of the full-ABI "
                                              "default (stable: torch_cpu torch_cuda c10 cudart)")
    shims: tuple[str, ...] = Field((), description="Python modules (relative to kernels/) installed at the "
                                   "wheel's top level, e.g. shims/causal_conv1d_cuda.py")

    _s = field_validator("sources", "link_libs", "shims", mode="before")(_as_tuple)

    @field_validator("shims")
    @classmethod
    def _shim_paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for s in v:
            _check_relative(s)
            if not s.endswith(".py"):
                raise ValueError(f'"{s}": a shim is a Python module (.py)')
        return v

    @model_validator(mode="after")
    def _stable_rules(self) -> KernelSpec:
        if self.abi != "stable":
            if self.shims:
                raise ValueError("shims belong to `abi: stable` specs (they forward upstream's module to torch.ops)")
            return self
        bad = [lib for lib in self.link_libs or () if _FORBIDDEN_STABLE_LIBS.match(lib)]
        if bad:
            raise ValueError(f"link_libs: {', '.join(bad)} cannot be linked by an `abi: stable` library "
                             "(it would tie the wheel to one torch / one CPython)")
        defined = [d for flags in (self, *self.rules) for d in flags.defines if d.split("=")[0] == "TORCH_TARGET_VERSION"]
        if defined:
            raise ValueError("TORCH_TARGET_VERSION is set by the builder from the recipe's stable_abi.torch_floor; "
                             "remove it from the spec")
        return self

    @property
    def libraries(self) -> tuple[str, ...] | None:
        """Libraries to link (None: the compile stage's full-ABI default)."""
        if self.link_libs is not None:
            return self.link_libs
        return STABLE_LINK_LIBS if self.abi == "stable" else None

    @field_validator("module")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError("must be a Python identifier")
        return v

    @field_validator("sources")
    @classmethod
    def _source_paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("needs at least one source")
        for s in v:
            _check_relative(s)
            if not s.endswith(CUDA_SUFFIXES + CXX_SUFFIXES):
                raise ValueError(f'"{s}": sources end in {", ".join(CUDA_SUFFIXES + CXX_SUFFIXES)}')
        if len(set(v)) != len(v):
            raise ValueError("sources must be unique")
        return v

    @field_validator("include_dirs")
    @classmethod
    def _include_paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for s in v:
            _check_relative(s)
        return v

    @model_validator(mode="after")
    def _split_sources_listed(self) -> KernelSpec:
        seen: dict[str, list[SplitRule]] = {}
        for rule in self.split:
            for source in rule.source:
                if source not in self.sources:
                    raise ValueError(f'split source "{source}" is not in sources{did_you_mean(source, self.sources)}')
                if not source.endswith(CUDA_SUFFIXES):
                    raise ValueError(f'split source "{source}" is not a CUDA source')
                for other in seen.setdefault(source, []):
                    if other.match == rule.match and _ranges_overlap(other, rule):
                        raise ValueError(f'split source "{source}" is split twice with the same `match` '
                                         f"for the same job counts (set min_jobs/max_jobs apart)")
                seen[source].append(rule)
        return self

    def for_jobs(self, jobs: int, split_compile: int = 1) -> KernelSpec:
        """This spec as a build with ``jobs`` parallel compiles (and nvcc -split-compile ``split_compile``)
        uses it: split rules outside their ``min_jobs``..``max_jobs`` range, or `without_split_compile`
        rules while -split-compile is on, dropped."""
        kept = tuple(r for r in self.split if r.applies(jobs, split_compile))
        return self if kept == self.split else self.model_copy(update={"split": kept})

    def rules_for(self, source: str) -> tuple[SplitRule, ...]:
        """The split rules of ``source``, in spec order (each owns the lines its ``match`` selects)."""
        return tuple(r for r in self.split if source in r.source)


def _ranges_overlap(a: SplitRule, b: SplitRule) -> bool:
    a_max = a.max_jobs if a.max_jobs is not None else 10**9
    b_max = b.max_jobs if b.max_jobs is not None else 10**9
    return a.min_jobs <= b_max and b.min_jobs <= a_max


def _check_relative(path: str) -> None:
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or "\\" in path:
        raise ValueError(f'"{path}" must be a relative path inside the source tree (forward slashes, no ..)')


class CommonFlags(Frozen):
    """buildtool/data/compile_flags.yaml: what every module gets, before the spec's own flags."""

    base: FlagSet
    rules: tuple[Rule, ...] = ()
    split_compile_min_cuda: str = Field(
        description="oldest nvcc that honours -split-compile; older ones pass it to llc, which rejects it (off there)")
    split_compile_below_arch: str = Field(
        description="-split-compile only while every target is older than this arch: it changes newer targets' code")
    split_compile_cpu_overhead: float = Field(
        ge=0, lt=1, description="extra CPU share -split-compile costs; it is used only where idle cores outweigh it")
    jobserver_min_cuda: str = Field(
        description="oldest nvcc whose nvcc, cicc and ptxas take --jobserver (compile/jobserver.py)")


# ---------------------------------------------------------------------------------------------- loading
def load_kernel_spec(path: Path) -> KernelSpec:
    doc = yamlsrc.load(path)
    spec: KernelSpec = yamlsrc.validate(KernelSpec, doc)
    if spec.name and spec.name != path.stem:
        raise UserError(f'name "{spec.name}" does not match the file name {path.name}', location=doc.location(("name",)))
    return spec.model_copy(update={"name": path.stem})


def load_kernel_specs(kernels_dir: Path, names: Sequence[str]) -> list[KernelSpec]:
    """The specs a recipe version names, in order; an unknown name is a UserError listing the known ones."""
    known = sorted(p.stem for p in kernels_dir.glob("*.yaml")) if kernels_dir.is_dir() else []
    out = []
    for name in names:
        path = kernels_dir / f"{name}.yaml"
        if not path.is_file():
            raise UserError(
                f'unknown kernel spec "{name}"{did_you_mean(name, known)} in {kernels_dir}; known: {allowed_list(known)}'
            )
        out.append(load_kernel_spec(path))
    return out


@cache
def load_common_flags() -> CommonFlags:
    return yamlsrc.load_packaged(CommonFlags, "compile_flags.yaml")


# ------------------------------------------------------------------------------------------- resolution
class TargetFacts(Frozen):
    """Everything resolution depends on: the cell's target and the toolchain's facts (no paths but CUDA's)."""

    platform: str
    torch: str
    cuda: str = Field(description="the toolkit's CUDA version (major.minor[.patch]), not just the cell's label")
    cxx_std: str
    cxx11_abi: bool
    archs: tuple[str, ...]
    ptx: bool
    compiler: CompilerKind
    cuda_home: str = ""
    abi: AbiTrack = "full"
    torch_floor: str | None = Field(None, description="stable track: the torch the library targets")

    @property
    def os(self) -> OsName:
        return "windows" if self.platform.startswith("windows") else "linux"

    @classmethod
    def from_cell(cls, cell: Any, *, cuda: str | None = None, compiler: CompilerKind | None = None,
                  cuda_home: str = "") -> TargetFacts:
        """From a ``buildtool.spec.matrix.Cell`` (duck-typed) plus the toolchain's CUDA version and compiler."""
        os_name = "windows" if cell.platform.startswith("windows") else "linux"
        return cls(
            platform=cell.platform, torch=cell.torch, cuda=cuda or cell.cuda, cxx_std=cell.cxx_std,
            cxx11_abi=cell.cxx11_abi, archs=tuple(cell.archs), ptx=cell.ptx,
            compiler=compiler or ("msvc" if os_name == "windows" else "gcc"), cuda_home=cuda_home,
            abi=getattr(cell, "abi", "full"), torch_floor=getattr(cell, "torch_floor", None),
        )


def min_driver_cuda(cuda: str, sets: Sequence[FlagSet]) -> str:
    """The oldest driver, as the CUDA version it reports, that loads code from this toolkit with these rules:
    CUDA's minor-version compatibility lets a X.y build run on any X.0+ driver, unless a rule's code needs more
    (fatbin -compress-mode=size needs 12.4)."""
    floor = Version(f"{Version(cuda).major}.0")
    for s in sets:
        need = getattr(s, "min_driver_cuda", None)
        if need and Version(need) > floor:
            floor = Version(need)
    return f"{floor.major}.{floor.minor}"
