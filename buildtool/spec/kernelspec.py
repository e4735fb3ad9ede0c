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
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import Field, field_validator, model_validator

from buildtool.errors import UserError, allowed_list, did_you_mean
from buildtool.model import Frozen
from buildtool.spec import yamlsrc
from buildtool.spec.abitrack import AbiTrack, torch_target_version
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


# ------------------------------------------------------------------------------------------- splitting
class SplitError(UserError):
    pass


class LinkHazard(Frozen):
    """A top-level definition every generated part would define again (a duplicate symbol at link)."""

    first_line: int = Field(description="1-based")
    last_line: int
    head: str


_STRING_OR_COMMENT = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
_NAMESPACE_HEAD = re.compile(r'^(?:inline\s+)?namespace\b[^;=]*$|^extern\s+"[^"]*"\s*$')
_SAFE_WORDS = re.compile(r"\b(?:inline|__inline__|__forceinline__|static|constexpr|consteval)\b")
_TYPE_HEAD = re.compile(r"^(?:typedef\s+)?(?:struct|class|union|enum)\b")


def _blank_code(text: str) -> str:
    """Comments and string/char contents blanked, preprocessor lines blanked; newlines kept."""

    def blank(m: re.Match[str]) -> str:
        token = m.group(0)
        if token[0] in "\"'":
            return token[0] + re.sub(r"[^\n]", " ", token[1:-1]) + token[-1]
        return re.sub(r"[^\n]", " ", token)

    code = _STRING_OR_COMMENT.sub(blank, text)
    out, continued = [], False
    for line in code.split("\n"):
        directive = continued or line.lstrip().startswith("#")
        continued = directive and line.rstrip().endswith("\\")
        out.append(" " * len(line) if directive else line)
    return "\n".join(out)


def _is_hazard(head: str, has_body: bool) -> bool:
    head = " ".join(head.split())
    if not head or head.startswith(("using ", "typedef ", "extern ", "static_assert", "friend ", "namespace ")):
        return False
    if head.startswith("template"):
        # A full specialisation `template<> R f<T>(...) {...}` is an ordinary (strong) definition.
        m = re.match(r"^template\s*<\s*>\s*", head)
        if m is None or not has_body:
            return False
        return not _TYPE_HEAD.match(head[m.end():]) and not _device_only_or_safe(head)
    if _TYPE_HEAD.match(head) or _device_only_or_safe(head):
        return False
    if has_body:
        return True  # a function (or braced variable) definition with external linkage
    return "(" not in head or "=" in head  # `int x;` / `T x = ...;` (a prototype or macro call is fine)


def _device_only_or_safe(head: str) -> bool:
    if _SAFE_WORDS.search(head) or re.search(r"\bconst\b", head.split("(")[0]):
        return True
    # __device__ / __constant__ symbols without __host__/__global__ live in each TU's own device image.
    device = re.search(r"\b(?:__device__|__constant__|__shared__)\b", head)
    return bool(device) and not re.search(r"\b(?:__host__|__global__)\b", head)


def link_hazards(text: str) -> list[LinkHazard]:
    """Top-level (namespace-scope) definitions that are not templates, inline, static, const or device-only:
    compiling the text in several TUs would define them several times."""
    code = _blank_code(text)
    hazards: list[LinkHazard] = []
    stack: list[tuple[str, int, str]] = []  # (kind, start offset, head)
    stmt_start = 0

    def top_level() -> bool:
        return all(kind == "ns" for kind, _, _ in stack)

    def line_of(offset: int) -> int:
        return code.count("\n", 0, offset) + 1

    for pos, ch in enumerate(code):
        if ch == "{":
            if top_level():
                head = code[stmt_start:pos].strip()
                start = stmt_start + (len(code[stmt_start:pos]) - len(code[stmt_start:pos].lstrip()))
                if _NAMESPACE_HEAD.match(" ".join(head.split())):
                    stack.append(("ns", start, head))
                    stmt_start = pos + 1
                    continue
                stack.append(("body", start, head))
            else:
                stack.append(("inner", pos, ""))
        elif ch == "}":
            if not stack:
                continue
            kind, start, head = stack.pop()
            if kind == "ns":
                stmt_start = pos + 1
            elif kind == "body" and top_level():
                end = pos + 1
                # `struct S {...} s;` and `T x = {...};` end at the semicolon
                flat = " ".join(head.split())
                m = re.match(r"[^;{}]*;", code[end:]) if _TYPE_HEAD.match(flat) or "=" in flat else None
                trailer = m.group(0)[:-1].strip() if m else ""
                if m:
                    end += m.end()
                if _is_hazard(head, has_body=True) or (trailer and _TYPE_HEAD.match(flat)):
                    hazards.append(LinkHazard(first_line=line_of(start), last_line=line_of(end - 1),
                                              head=" ".join(head.split())[:160]))
                stmt_start = end
        elif ch == ";" and top_level() and pos >= stmt_start:
            head = code[stmt_start:pos].strip()
            start = stmt_start + (len(code[stmt_start:pos]) - len(code[stmt_start:pos].lstrip()))
            if _is_hazard(head, has_body=False):
                hazards.append(LinkHazard(first_line=line_of(start), last_line=line_of(pos),
                                          head=" ".join(head.split())[:160]))
            stmt_start = pos + 1
    return hazards


def _matched_groups(lines: Sequence[str], rule: SplitRule) -> dict[str, list[tuple[int, str]]]:
    pattern = re.compile(rule.match)
    groups: dict[str, list[tuple[int, str]]] = {}
    for i, line in enumerate(lines):
        m = pattern.match(line.rstrip("\r\n"))
        if m:
            key = (m.group(rule.key) or "").strip() if rule.key else line.strip()
            groups.setdefault(key, []).append((i, key))
    return groups


def _deal(count: int, parts: int) -> list[int]:
    """Contiguous, balanced assignment of ``count`` ordered items to ``parts`` parts (0-based)."""
    return [i * parts // count for i in range(count)]


def split_text(text: str, rule: SplitRule, *, origin: str) -> list[str]:
    """The generated texts of a source split by one rule (see ``split_source``)."""
    return split_source(text, (rule,), origin=origin)


def split_source(text: str, rules: Sequence[SplitRule], *, origin: str) -> list[str]:
    """The generated TUs of one source, ``sum(rule.parts)`` of them, rule after rule (see ``SplitRule``).

    Each rule owns the lines its ``match`` selects (a line selected by two rules is an error); a part of
    one rule blanks the lines of every other rule. Explicit instantiations no rule selects, and
    ``exclusive`` definitions, stay in the very first part only, so nothing is compiled twice. Every part
    starts with a ``#line`` directive naming the real file and keeps every line's number, so diagnostics
    point at the source."""
    lines = text.splitlines(keepends=True)
    owner: dict[int, int] = {}  # line index -> the only (global, 0-based) part that keeps it
    extra: dict[tuple[int, int], str] = {}  # (part, line index) -> replacement text for that line
    claimed: dict[int, int] = {}  # line index -> rule index
    offset = 0
    for r, rule in enumerate(rules):
        groups = _matched_groups(lines, rule)
        for members in groups.values():
            for i, _ in members:
                if i in claimed:
                    raise SplitError(f"{origin}:{i + 1}: the line is matched by split rules {claimed[i] + 1} and {r + 1}",
                                     hint="make the rules' `match` patterns disjoint")
                claimed[i] = r
        _plan_rule(lines, rule, groups, offset, owner, extra, origin)
        offset += rule.parts
    default = re.compile(DEFAULT_SPLIT_MATCH)
    for i, line in enumerate(lines):
        if i not in claimed and default.match(line.rstrip("\r\n")):
            owner[i] = 0
    exclusive = [x for rule in rules for x in rule.exclusive]
    for hazard in link_hazards(text):
        head_line = lines[hazard.first_line - 1] if hazard.first_line <= len(lines) else ""
        if not any(re.search(x, head_line) for x in exclusive):
            raise SplitError(
                f"{origin}:{hazard.first_line}: cannot split: `{hazard.head}` is a non-template definition that "
                f"every part would define again (a duplicate symbol at link)",
                hint="add a regex matching that line to the split rule's `exclusive` (kept in part 1 only), "
                     "or do not split this file",
            )
        for i in range(hazard.first_line - 1, hazard.last_line):
            owner[i] = 0
    header = f'#line 1 "{origin}"\n'
    out = []
    for part in range(offset):
        body = []
        for i, line in enumerate(lines):
            if (part, i) in extra:
                body.append(extra[(part, i)])
            elif owner.get(i, part) == part:
                body.append(line)
            else:
                body.append(_blank(line))
        out.append(header + "".join(body))
    return out


def _plan_rule(lines: Sequence[str], rule: SplitRule, groups: Mapping[str, list[tuple[int, str]]], offset: int,
               owner: dict[int, int], extra: dict[tuple[int, int], str], origin: str) -> None:
    """Assign one rule's matched lines to its parts ``offset .. offset + parts - 1`` (fanout: write the
    ``extern template`` / ``template`` lines)."""
    if rule.fanout is None:
        if len(groups) < rule.parts:
            raise SplitError(
                f"{origin}: split into {rule.parts} parts needs at least {rule.parts} distinct instantiation "
                f"groups; found {len(groups)} lines matching {rule.match!r}",
                hint="lower `parts`, or check that the source version matches the kernel spec",
            )
        for part, members in zip(_deal(len(groups), rule.parts), groups.values(), strict=True):
            for i, _ in members:
                owner[i] = offset + part
        return
    fan = rule.fanout
    matched = sorted(m for members in groups.values() for m in members)
    if not matched:
        raise SplitError(f"{origin}: no line matches {rule.match!r}; nothing to fan out",
                         hint="check that the source version matches the kernel spec")
    decls = [fan.declaration.format(item=item, match=args) for _, args in matched for item in fan.items]
    if len(decls) < rule.parts - 1:
        raise SplitError(f"{origin}: {rule.parts} parts need at least {rule.parts - 1} fanout "
                         f"instantiations; the rule yields {len(decls)}")
    first, last = matched[0][0], matched[-1][0]
    for i, _ in matched:
        owner[i] = offset
    extra[(offset, first)] = " ".join(f"extern template {d};" for d in decls) + " " + lines[first]
    ending = lines[last][len(lines[last].rstrip("\r\n")):] or "\n"
    for part, decl in zip(_deal(len(decls), rule.parts - 1), decls, strict=True):
        key = (offset + 1 + part, last)
        extra[key] = extra.get(key, "").rstrip("\r\n") + (" " if key in extra else "") + f"template {decl};" + ending


def _blank(line: str) -> str:
    ending = line[len(line.rstrip("\r\n")):]
    return "// [buildtool split] compiled in another part" + ending


def split_summary(text: str, rule: SplitRule | Sequence[SplitRule]) -> Mapping[int, list[str]]:
    """What each part (1-based) instantiates: for docs, `buildtool` output and tests."""
    rules = (rule,) if isinstance(rule, SplitRule) else tuple(rule)
    inst = re.compile(r"^(?:extern\s+)?template\s+(?!<)")
    parts = split_source(text, rules, origin="x")
    summary: dict[int, list[str]] = {}
    for k, p in enumerate(parts):
        found = []
        for ln in p.splitlines()[1:]:
            if inst.match(ln.strip()):
                found += [s.strip() + ";" for s in ln.split(";") if s.strip() and not s.strip().startswith("//")]
        summary[k + 1] = found
    return summary
