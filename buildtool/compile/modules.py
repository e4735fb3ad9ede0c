"""Compile kernel specs into extension modules: our own build.ninja (cxx, cuda and link rules with
depfiles), jobs sized to cores and free memory, heavy TUs split, an object cache keyed by content so a
second Python version of a cell reuses every CUDA object, ccache when present, live progress, full log.

Importable without torch: everything about the target environment comes from the toolchain and build-env
objects (duck-typed, see ``ToolchainLike`` / ``BuildEnvLike``) and from running the target Python once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

from packaging.version import InvalidVersion, Version
from pydantic import Field

from buildtool.binary.elf import read_elf
from buildtool.binary.fatbin import FATBIN_SECTION, device_code_sizes
from buildtool.errors import BuildError, UserError
from buildtool.host import default_cache_dir
from buildtool.model import Frozen
from buildtool.spec.kernelspec import (
    CompileUnit,
    KernelSpec,
    ResolvedKernel,
    TargetFacts,
    load_common_flags,
    nvcc_threads,
    resolve,
    split_source,
)
from buildtool.versions import major_minor

GIB = 1024**3
#: nvcc's peak memory per gencode target on the heavy Mamba TUs (measured 2.5-4 GB); sizes -j.
NVCC_BYTES_PER_THREAD = 4 * GIB
#: nvcc -split-compile optimises and assembles partitions of one TU in parallel (the nvcc versions that honour it:
#: compile_flags.yaml `split_compile_min_cuda`). Each kernel's
#: SASS is identical to the unsplit compile (tests/test_compile.py, real nvcc), so, like -j, it is a scheduling
#: knob: it stays out of cache keys and provenance. Measured on mamba's selective_scan_bwd_fp32_real.cu,
#: sm_90: 0.66 GB peak unsplit, 0.90 GB with 8 partitions, hence the factor that sizes -j.
SPLIT_COMPILE_MEMORY_FACTOR = 1.4
CACHE_FORMAT = 1
# Headers only: a TU's own text is hashed separately (none of the packages #includes a .cu/.cpp file).
HEADER_SUFFIXES = {".h", ".hh", ".hpp", ".hxx", ".cuh", ".inl", ".inc", ".tcc", ".def"}


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


# -------------------------------------------------------------------------------------------- host facts
@dataclass(frozen=True)
class HostCompiler:
    path: str
    kind: Literal["gcc", "msvc"]


@dataclass(frozen=True)
class PythonFacts:
    version: str
    ext_suffix: str
    include_dirs: tuple[str, ...]
    lib_dirs: tuple[str, ...] = ()


def host_compiler(toolchain: Any, platform: str) -> HostCompiler:
    """The host C++ compiler the toolchain chose (``Toolchain.host``; clang is driven like gcc)."""
    windows = platform.startswith("windows")
    for attr in ("host", "host_cxx", "host_compiler"):
        value = getattr(toolchain, attr, None)
        if value is None:
            continue
        path = getattr(value, "path", value)
        declared = getattr(value, "kind", None)
        kind: Literal["gcc", "msvc"] = "msvc" if declared == "msvc" else "gcc"
        if declared not in ("gcc", "msvc") and Path(str(path)).name.lower() in ("cl", "cl.exe"):
            kind = "msvc"
        return HostCompiler(str(path), kind)
    return HostCompiler("cl.exe" if windows else (shutil.which("g++") or "c++"), "msvc" if windows else "gcc")


def query_python(python: Path) -> PythonFacts:
    """EXT_SUFFIX and include dirs of the *target* interpreter (not necessarily the one running us)."""
    code = (
        "import json, sys, sysconfig; p = sysconfig.get_paths(); "
        "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
        "'ext_suffix': sysconfig.get_config_var('EXT_SUFFIX'), "
        "'include_dirs': sorted({p['include'], p['platinclude']}), "
        "'lib_dirs': [sys.base_exec_prefix + '/libs']}))"
    )
    try:
        out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"cannot query the target Python {python}: {exc}") from None
    data = json.loads(out.stdout)
    return PythonFacts(data["version"], data["ext_suffix"], tuple(data["include_dirs"]), tuple(data["lib_dirs"]))


@cache
def tool_identity(argv: tuple[str, ...]) -> str:
    """The version banner of a compiler: part of every cache key (a new nvcc or g++ invalidates objects)."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"cannot run {argv[0]}: {exc}") from None
    return (out.stdout + out.stderr).strip()


def hash_tree(dirs: Iterable[Path], suffixes: set[str] | None = HEADER_SUFFIXES) -> str:
    """sha256 over (relative path, content) of every file under ``dirs`` with a source/header suffix."""
    h = hashlib.sha256()
    for root in sorted({d.resolve() for d in dirs if d.is_dir()}):
        h.update(f"dir {root.name}\n".encode())
        for path in sorted(root.rglob("*")):
            if path.is_file() and (suffixes is None or path.suffix.lower() in suffixes):
                h.update(f"{path.relative_to(root).as_posix()}\n".encode())
                h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def torch_include_dir(env: BuildEnvLike) -> Path | None:
    for d in env.include_dirs:
        if (Path(d) / "torch" / "extension.h").is_file():
            return Path(d)
    return None


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _usable_cores() -> int:
    """CPUs this process may run on (a container's affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_jobs(nvcc_threads: int, cores: int | None = None, memory: int | None = None, *,
                 split_compile: int = 1) -> int:
    """Parallel compile jobs: one per core, fewer when free memory cannot hold that many nvcc processes."""
    cores = cores or _usable_cores()
    if memory is None:
        return cores
    per_job = NVCC_BYTES_PER_THREAD * max(1, nvcc_threads) * (SPLIT_COMPILE_MEMORY_FACTOR if split_compile > 1 else 1)
    return max(1, min(cores, int(memory // per_job)))


def default_split_compile(cuda_version: str, cores: int | None = None) -> int:
    """Threads for nvcc -split-compile: every usable core (1 = off, and off for an nvcc older than
    compile_flags.yaml's `split_compile_min_cuda`, which does not honour it).

    A job count alone leaves cores idle once fewer TUs than cores remain, which on a 16-core host is most of a
    Mamba build: its wall time is the slowest TU. With every nvcc allowed all cores, the tail TUs spread over
    the cores the finished ones freed; while many TUs run, the kernel's scheduler shares the cores among them.
    """
    return max(1, cores or _usable_cores()) if honours_split_compile(cuda_version) else 1


def honours_split_compile(cuda_version: str) -> bool:
    """Whether this nvcc splits (compile_flags.yaml `split_compile_min_cuda`); an older one only warns per TU."""
    try:
        return Version(cuda_version) >= Version(load_common_flags().split_compile_min_cuda)
    except InvalidVersion:
        return False


# ----------------------------------------------------------------------------------------------- plan
@dataclass
class PlannedUnit:
    spec: KernelSpec
    unit: CompileUnit
    source_path: Path  # the file the compiler reads (generated for split parts)
    object_path: Path
    cache_key: str
    cached: bool = False

    @property
    def label(self) -> str:
        return f"{self.spec.module}: {self.unit.name}"


@dataclass
class PlannedModule:
    spec: KernelSpec
    resolved: ResolvedKernel
    units: list[PlannedUnit]
    output: Path
    link_command: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BuildContext:
    tree: Path
    build_dir: Path
    facts: TargetFacts
    toolchain: ToolchainLike
    env: BuildEnvLike
    cxx: HostCompiler
    python: PythonFacts
    torch_includes: tuple[str, ...]
    cache_dir: Path | None
    nvcc_identity: str = ""  # `nvcc --version` banner: part of the CUDA objects' cache key
    host_identity: str = ""  # the host compiler's version banner
    split_compile: int = 1  # nvcc -split-compile threads (1: off); not part of cache keys (same SASS)

    @property
    def windows(self) -> bool:
        return self.facts.os == "windows"


def _abs_includes(ctx: BuildContext, unit: CompileUnit, source_dir: Path) -> list[str]:
    """Spec dirs, the source's own dir, the toolkit's (host TUs; nvcc knows its own), torch's, Python's
    (binding TUs only), then the CUDA library wheels' headers last so the toolkit's own headers win."""
    dirs = [str(ctx.tree / d) if not Path(d).is_absolute() else d for d in unit.include_dirs]
    dirs.append(str(source_dir))  # split parts live elsewhere; their quoted includes resolve here
    if unit.language == "cxx":
        dirs += [str(d) for d in getattr(ctx.toolchain, "include_dirs", ())]
    else:
        # nvcc searches its own include dir only after every -I: name it before the CUDA library wheels'
        # headers (nvidia/cu13/include holds a cuda_runtime.h too) so the toolkit's headers win.
        dirs.append(str(Path(ctx.toolchain.cuda_home) / "include"))
    dirs += ctx.torch_includes
    if unit.uses_python:
        dirs += list(ctx.python.include_dirs)
    dirs += [str(d) for d in getattr(ctx.env, "cuda_library_include_dirs", ())]
    return list(dict.fromkeys(dirs))


def compile_argv(ctx: BuildContext, planned: PlannedUnit) -> list[str]:
    """The full compiler command for one TU (without depfile options, which the ninja rule adds)."""
    unit = planned.unit
    includes = _abs_includes(ctx, unit, (ctx.tree / unit.source).parent)
    if unit.language == "cuda":
        argv = [str(ctx.toolchain.nvcc)]
        if not ctx.windows and ctx.cxx.kind == "gcc":
            argv += ["-ccbin", ctx.cxx.path]
        argv += [f"-I{d}" for d in includes] + list(unit.flags)
        if ctx.split_compile > 1:
            argv.append(f"-split-compile={ctx.split_compile}")
        return [*argv, "-c", str(planned.source_path), "-o", str(planned.object_path)]
    if ctx.cxx.kind == "msvc":
        return [ctx.cxx.path, "/nologo", *(f"/I{d}" for d in includes), *unit.flags,
                "/c", str(planned.source_path), f"/Fo{planned.object_path}"]
    return [ctx.cxx.path, *(f"-I{d}" for d in includes), *unit.flags,
            "-c", str(planned.source_path), "-o", str(planned.object_path)]


def _norm(ctx: BuildContext, value: str) -> str:
    cuda_home = ctx.facts.cuda_home
    return value.replace(cuda_home, "<cuda>") if cuda_home else value


def cache_key(ctx: BuildContext, unit: CompileUnit, text: bytes, tree_headers: str,
              torch_headers: str, python_headers: str) -> str:
    """Content hash of everything that decides the object. The Python version enters only for TUs that
    include Python headers (the .cpp binding), so CUDA objects are shared across Python versions."""
    payload: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "language": unit.language,
        "name": unit.name,
        "text": hashlib.sha256(text).hexdigest(),
        "tree_headers": tree_headers,
        "flags": [_norm(ctx, f) for f in unit.flags],
        "include_dirs": [_norm(ctx, d) for d in unit.include_dirs],
        "platform": ctx.facts.platform,
        "host_compiler": ctx.host_identity or ctx.cxx.path,
        "torch": [ctx.env.torch_version, torch_headers],
    }
    if unit.language == "cuda":
        payload["nvcc"] = ctx.nvcc_identity
    if unit.uses_python:
        payload["python"] = [ctx.python.version, ctx.python.ext_suffix, python_headers]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan_modules(ctx: BuildContext, specs: Sequence[KernelSpec]) -> list[PlannedModule]:
    """Resolve specs, write split TUs, compute cache keys. Writes only under build_dir."""
    torch_dir = torch_include_dir(ctx.env)
    torch_headers = hash_tree([torch_dir]) if torch_dir else ""
    python_headers = hash_tree([Path(d) for d in ctx.python.include_dirs], {".h"})
    modules = []
    for spec in specs:
        resolved = resolve(spec, ctx.facts)
        missing = [s for s in spec.sources if not (ctx.tree / s).is_file()]
        if missing:
            raise UserError(
                f"kernel spec {spec.name}: sources missing from the prepared tree {ctx.tree}: {', '.join(missing)}",
                hint="the spec and the package version do not match, or the tree was not prepared",
            )
        header_dirs = {ctx.tree / d for d in spec.include_dirs} | {(ctx.tree / s).parent for s in spec.sources}
        tree_headers = hash_tree(header_dirs)
        mod_dir = ctx.build_dir / spec.name
        split_texts: dict[str, list[str]] = {}
        units = []
        for unit in resolved.units:
            real = ctx.tree / unit.source
            if unit.split is None:
                source_path, text = real, real.read_bytes()
            else:
                if unit.source not in split_texts:
                    raw = real.read_text(encoding="utf-8")
                    split_texts[unit.source] = split_source(raw, spec.rules_for(unit.source), origin=unit.source)
                generated = split_texts[unit.source][unit.split.index - 1]
                source_path = mod_dir / "gen" / unit.name
                _write_if_changed(source_path, generated)
                text = generated.encode()
            key = cache_key(ctx, unit, text, tree_headers, torch_headers, python_headers)
            obj = mod_dir / "obj" / (unit.name + ".obj" if ctx.windows else unit.object_name)
            units.append(PlannedUnit(spec, unit, source_path, obj, key))
        output = mod_dir / f"{spec.module}{module_suffix(spec, ctx.python.ext_suffix, windows=ctx.windows)}"
        modules.append(PlannedModule(spec, resolved, units, output))
    return modules


def module_suffix(spec: KernelSpec, ext_suffix: str, *, windows: bool) -> str:
    """The file suffix of a module: the target Python's EXT_SUFFIX on the full-ABI track; on the stable
    track the limited-API suffix every CPython >= 3.2 imports (``.abi3.so``; Windows: ``.pyd``)."""
    if spec.abi == "stable":
        return ".pyd" if windows else ".abi3.so"
    return ext_suffix


def _write_if_changed(path: Path, text: str) -> None:
    """Keep the mtime of unchanged generated files so ninja does not rebuild them."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ link
def link_argv(ctx: BuildContext, module: PlannedModule) -> list[str]:
    """Host link into ``<module><EXT_SUFFIX>``: torch's libraries and cudart, no rpath (torch is imported
    first at runtime and has loaded them), no host debug info."""
    objects = [str(u.object_path) for u in module.units]
    lib_dirs = [str(d) for d in ctx.env.library_dirs]
    torch_lib = _torch_lib_dir(ctx)
    if torch_lib and torch_lib not in lib_dirs:
        lib_dirs.insert(0, torch_lib)
    cuda_home = Path(ctx.toolchain.cuda_home)
    lib_dirs += [str(d) for d in getattr(ctx.toolchain, "library_dirs", ())]
    stable = module.resolved.libraries
    if stable is not None:
        return _link_stable_argv(ctx, module, objects, lib_dirs, stable, cuda_home)
    libraries = list(dict.fromkeys([*ctx.env.libraries, "c10", "torch", "torch_cpu", "torch_python",
                                    "c10_cuda", "torch_cuda"]))
    if ctx.windows:
        lib_dirs += [str(cuda_home / "lib" / "x64"), *ctx.python.lib_dirs]
        return [
            "link.exe", "/nologo", "/DLL", "/INCREMENTAL:NO", "/DEBUG:NONE", f"/OUT:{module.output}",
            f"/EXPORT:PyInit_{module.spec.module}", *objects, *(f"/LIBPATH:{d}" for d in lib_dirs),
            *(f"{lib}.lib" for lib in libraries), "cudart.lib",
            # keep torch_cuda linked although nothing names it directly (pytorch/pytorch#31611)
            "-INCLUDE:?warp_size@cuda@at@@YAHXZ", *module.resolved.link_flags,
        ]
    cuda_lib = cuda_home / "lib64" if (cuda_home / "lib64").is_dir() else cuda_home / "lib"
    lib_dirs = list(dict.fromkeys([*lib_dirs, str(cuda_lib)]))
    return [
        ctx.cxx.path, "-shared", "-s", "-o", str(module.output), *objects,
        *(f"-L{d}" for d in lib_dirs), *(f"-l{lib}" for lib in libraries), "-lcudart",
        *module.resolved.link_flags,
    ]


def _link_stable_argv(ctx: BuildContext, module: PlannedModule, objects: list[str], lib_dirs: list[str],
                      libraries: Sequence[str], cuda_home: Path) -> list[str]:
    """A library the spec's libraries only (stable ABI: torch_cpu, torch_cuda, c10, cudart): no Python
    library, no libtorch_python, no PyInit export (it is loaded with torch.ops.load_library)."""
    if ctx.windows:
        lib_dirs = [*lib_dirs, str(cuda_home / "lib" / "x64")]
        return ["link.exe", "/nologo", "/DLL", "/INCREMENTAL:NO", "/DEBUG:NONE", f"/OUT:{module.output}", *objects,
                *(f"/LIBPATH:{d}" for d in lib_dirs), *(f"{lib}.lib" for lib in libraries), *module.resolved.link_flags]
    cuda_lib = cuda_home / "lib64" if (cuda_home / "lib64").is_dir() else cuda_home / "lib"
    lib_dirs = list(dict.fromkeys([*lib_dirs, str(cuda_lib)]))
    return [ctx.cxx.path, "-shared", "-s", "-o", str(module.output), *objects, *(f"-L{d}" for d in lib_dirs),
            *(f"-l{lib}" for lib in libraries), *module.resolved.link_flags]


def _torch_lib_dir(ctx: BuildContext) -> str | None:
    inc = torch_include_dir(ctx.env)
    if inc and (inc.parent / "lib").is_dir():
        return str(inc.parent / "lib")
    return None


# ------------------------------------------------------------------------------------------ scheduling
#: ninja starts ready edges in manifest order, so build.ninja lists the costliest TUs first (longest
#: processing time first: the last TUs to start are the short ones, and no core idles behind a long tail).
#: Costs are the seconds each TU took in earlier builds (``unit-seconds.json`` next to the object cache) or,
#: for a TU never timed, an estimate from its size: a fixed start-up (nvcc's header-only TU: 3 s; g++ parsing
#: torch/extension.h: 10 s) plus seconds per KiB of the TU and the tree headers it includes, per GPU target
#: (mamba's bwd TU: 70 KiB of local headers, 38 s for sm_90 on the 2-core machine, docs/performance.md).
UNIT_COST_BASE = {"cuda": 3.0, "cxx": 10.0}
UNIT_COST_PER_KIB = {"cuda": 0.5, "cxx": 0.05}
UNIT_SECONDS_FILE = "unit-seconds.json"
_INCLUDE_RE = re.compile(rb'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)


def _local_include_bytes(source: Path, text: bytes, search: Sequence[Path]) -> int:
    """Bytes of the TU plus every header it includes with quotes, transitively, found in the tree."""
    seen: set[Path] = set()
    total = len(text)
    stack = [(source.parent, text)]
    while stack:
        here, body = stack.pop()
        for name in _INCLUDE_RE.findall(body):
            rel = name.decode(errors="replace")
            for d in (here, *search):
                path = (d / rel).resolve()
                if path in seen or not path.is_file():
                    continue
                seen.add(path)
                data = path.read_bytes()
                total += len(data)
                stack.append((path.parent, data))
                break
    return total


def unit_history_key(planned: PlannedUnit, targets: int) -> str:
    return f"{planned.spec.name}|{planned.unit.name}|{targets}"


def estimate_unit_seconds(language: str, include_bytes: int, targets: int) -> float:
    """Seconds a TU costs, estimated from its size (see UNIT_COST_BASE)."""
    per_target = 1 if language == "cxx" else max(1, targets)
    return UNIT_COST_BASE[language] + UNIT_COST_PER_KIB[language] * include_bytes / 1024 * per_target


def order_by_cost(units: Sequence[PlannedUnit], costs: Mapping[str, float]) -> list[PlannedUnit]:
    """Costliest first; ties keep the spec's order."""
    return sorted(units, key=lambda u: -costs[u.label])


def unit_costs(ctx: BuildContext, units: Sequence[PlannedUnit], history: Mapping[str, float]) -> dict[str, float]:
    targets = len(ctx.facts.archs) + (1 if ctx.facts.ptx else 0)
    costs: dict[str, float] = {}
    for u in units:
        known = history.get(unit_history_key(u, targets))
        if known is not None:
            costs[u.label] = known
            continue
        search = [ctx.tree / d for d in u.unit.include_dirs if not Path(d).is_absolute()]
        search.append((ctx.tree / u.unit.source).parent)
        size = _local_include_bytes(ctx.tree / u.unit.source, u.source_path.read_bytes(), search)
        costs[u.label] = estimate_unit_seconds(u.unit.language, size, targets)
    return costs


#: CFS gives each nice step 1.25x less CPU weight. With ``priorities``, a TU estimated at 1/r of the costliest
#: runs at nice log(r)/log(1.25), so TUs sharing the cores progress in proportion to their work and finish
#: together instead of the costliest finishing last, alone. From the estimates only (not the measured
#: history), so the commands, and with them ninja's up-to-date check, stay the same from build to build.
NICE_STEP = 1.25
MAX_NICE = 19


def nice_levels(estimated: Mapping[str, float]) -> dict[str, int]:
    top = max(estimated.values(), default=0.0)
    if top <= 0:
        return dict.fromkeys(estimated, 0)
    return {label: min(MAX_NICE, round(math.log(top / max(cost, 1e-3)) / math.log(NICE_STEP)))
            for label, cost in estimated.items()}


def read_unit_history(cache_root: Path | None) -> dict[str, float]:
    if cache_root is None:
        return {}
    try:
        data = json.loads((cache_root / UNIT_SECONDS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}


def write_unit_history(cache_root: Path | None, measured: Mapping[str, float]) -> None:
    """Merge this build's per-TU seconds into the history (atomic replace; a lost race loses one build's times)."""
    if cache_root is None or not measured:
        return
    merged = {**read_unit_history(cache_root), **{k: round(v, 2) for k, v in measured.items()}}
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = cache_root / f"{UNIT_SECONDS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(merged, indent=0, sort_keys=True), encoding="utf-8")
    os.replace(tmp, cache_root / UNIT_SECONDS_FILE)


# ----------------------------------------------------------------------------------------------- ninja
def _quote(argv: Sequence[str], windows: bool) -> str:
    if windows:
        return subprocess.list2cmdline(list(argv))
    return shlex.join(argv)


def _ninja_escape(text: str) -> str:
    return text.replace("$", "$$").replace("\n", "$\n")


def _ninja_path(path: Path | str) -> str:
    return str(path).replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def write_build_ninja(ctx: BuildContext, modules: Sequence[PlannedModule], launcher: str | None,
                      costs: Mapping[str, float] | None = None, nice: Mapping[str, int] | None = None) -> Path:
    """build.ninja with one edge per TU still to compile (cache hits are plain inputs), costliest first
    (``costs`` by unit label; ninja starts ready edges in manifest order), then one per link; ``nice``: a
    CPU priority per unit label (POSIX). Each compile first touches ``<object>.start`` so the progress
    display can show what is running."""
    w = ctx.windows
    niced = bool(nice) and not w
    pre = f"{launcher} " if launcher else ""

    def command(body: str, *, keep: bool = False) -> str:
        # ninja runs commands through /bin/sh on POSIX and directly (CreateProcess) on Windows, where the
        # `&&` needs cmd; /s makes cmd take the rest of the line verbatim.
        # keep: nvcc names its intermediates after the source inside a per-object --keep-dir instead of
        # tmpxft_<pid>_..., so two cold compiles give identical objects (docs/building.md); the dir goes
        # away after a successful compile and stays for inspection after a failed one.
        if w:
            fresh = "(if exist $out.keep rmdir /s /q $out.keep) && mkdir $out.keep && " if keep else ""
            done = " && rmdir /s /q $out.keep" if keep else ""
            return f'  command = cmd /s /c "type nul > $out.start && {fresh}{pre}{body}{done}"'
        fresh = "rm -rf $out.keep && mkdir -p $out.keep && " if keep else ""
        done = " && rm -rf $out.keep" if keep else ""
        prio = "nice -n $nice " if niced else ""
        return f"  command = : > $out.start && {fresh}{prio}{pre}{body}{done}"

    lines = ["# generated by buildtool.compile; do not edit", "ninja_required_version = 1.8", ""]
    lines += [
        "rule cuda",
        # -MD -MF (nvcc's short spellings): ccache understands them and can then cache nvcc too
        command("$cmd -MD -MF $out.d --keep --keep-dir $out.keep", keep=True),
        "  depfile = $out.d", "  deps = gcc", "  description = $desc", "",
        "rule cxx",
        command("$cmd /showIncludes" if w else "$cmd -MMD -MF $out.d"),
        *(["  deps = msvc"] if w else ["  depfile = $out.d", "  deps = gcc"]),
        "  description = $desc", "",
        "rule link", "  command = $cmd", "  description = $desc", "",
    ]
    pending = [pu for module in modules for pu in module.units if not pu.cached]
    if costs is not None:
        pending = order_by_cost(pending, costs)
    for pu in pending:
        lines += [
            f"build {_ninja_path(pu.object_path)}: {pu.unit.language} {_ninja_path(pu.source_path)}",
            f"  cmd = {_ninja_escape(_quote(compile_argv(ctx, pu), w))}",
            f"  desc = {_ninja_escape(pu.label)}",
            *([f"  nice = {(nice or {}).get(pu.label, 0)}"] if niced else []),
        ]
    for module in modules:
        objs = " ".join(_ninja_path(u.object_path) for u in module.units)
        lines += [
            f"build {_ninja_path(module.output)}: link {objs}",
            f"  cmd = {_ninja_escape(_quote(module.link_command, w))}",
            f"  desc = {_ninja_escape('link ' + module.output.name)}",
        ]
    path = ctx.build_dir / "build.ninja"
    _write_if_changed(path, "\n".join(lines) + "\n")
    return path


def ninja_binary(env: Mapping[str, str]) -> str:
    found = shutil.which("ninja", path=env.get("PATH"))
    if found:
        return found
    try:
        import ninja  # the PyPI wheel, a dependency of buildtool

        return str(Path(ninja.BIN_DIR) / ("ninja.exe" if os.name == "nt" else "ninja"))
    except ImportError:
        raise BuildError("ninja not found", hint="pip install ninja") from None


def read_ninja_log(build_dir: Path) -> dict[str, float]:
    """Seconds per output from .ninja_log (last entry wins)."""
    path = build_dir / ".ninja_log"
    out: dict[str, float] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 4 and parts[0].isdigit():
            out[os.path.normpath(parts[3])] = (int(parts[1]) - int(parts[0])) / 1000.0
    return out


# ------------------------------------------------------------------------------------------- the stage
def compile_modules(
    tree: Path,
    specs: list[KernelSpec],
    cell: Any,
    toolchain: ToolchainLike,
    env: BuildEnvLike,
    build_dir: Path,
    log_path: Path,
    *,
    jobs: int | None = None,
    cache_dir: Path | None = None,
    use_object_cache: bool = True,
    use_ccache: bool = True,
    split: bool = True,
    split_compile: int | None = None,
    priorities: bool = False,
    quiet: bool = False,
) -> CompileResult:
    """Compile and link every spec's module for ``cell``; returns the module files and build statistics.
    ``cache_dir`` holds the object cache (default: the user cache dir, ``buildtool.host.default_cache_dir``);
    ``split=False`` compiles every source as one TU, ignoring the specs' split rules (for comparisons);
    ``split_compile``: nvcc -split-compile threads (default: ``default_split_compile``; 1 turns it off)."""
    from buildtool.compile.progress import STATUS_MARK, NinjaProgress

    started = time.monotonic()
    tree, build_dir = Path(tree).resolve(), Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path).resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    python = query_python(Path(env.python))
    ext_suffix = getattr(env, "ext_suffix", None) or python.ext_suffix
    python = PythonFacts(python.version, ext_suffix, python.include_dirs, python.lib_dirs)
    cxx = host_compiler(toolchain, cell.platform)
    facts = TargetFacts.from_cell(cell, cuda=major_minor(toolchain.cuda_version), compiler=cxx.kind,
                                  cuda_home=str(Path(toolchain.cuda_home)))
    python_dirs = {os.path.normpath(d) for d in python.include_dirs}
    torch_includes = tuple(str(d) for d in env.include_dirs if os.path.normpath(str(d)) not in python_dirs)
    cache_root = None
    if use_object_cache:
        cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    if split_compile is None:
        split_compile = default_split_compile(toolchain.cuda_version)
    elif split_compile < 1:
        raise UserError(f"split_compile must be at least 1 (1 turns nvcc -split-compile off), not {split_compile}")
    elif not honours_split_compile(toolchain.cuda_version):
        split_compile = 1  # an explicit --split-compile applies to the cells whose nvcc honours it
    ctx = BuildContext(
        tree, build_dir, facts, toolchain, env, cxx, python, torch_includes, cache_root,
        nvcc_identity=tool_identity((str(toolchain.nvcc), "--version")),
        host_identity=(tool_identity((cxx.path, "--version")) if cxx.kind == "gcc"
                       else f"{cxx.path} {getattr(getattr(toolchain, 'host', None), 'version', '')}"),
        split_compile=split_compile,
    )

    threads = nvcc_threads(facts.archs, facts.ptx)
    jobs = jobs or default_jobs(threads, memory=available_memory(), split_compile=split_compile)
    # split rules apply per machine size (min_jobs); split=False compiles every source whole
    planned_specs = [s.for_jobs(jobs, split_compile) if split else s.model_copy(update={"split": ()}) for s in specs]
    modules = plan_modules(ctx, planned_specs)
    hits = _restore_cached(ctx, modules)
    for m in modules:
        m.link_command = link_argv(ctx, m)
    run_env = {**os.environ, **{k: str(v) for k, v in toolchain.env.items()}}
    launcher = shutil.which("ccache", path=run_env.get("PATH")) if use_ccache else None
    to_compile = [u for m in modules for u in m.units if not u.cached]
    history = read_unit_history(cache_root)
    costs = unit_costs(ctx, to_compile, history)
    nice = nice_levels(unit_costs(ctx, to_compile, {})) if priorities else None
    ninja_file = write_build_ninja(ctx, modules, launcher, costs, nice)
    to_compile = order_by_cost(to_compile, costs)

    usage_before = _children_usage()
    with open(log_path, "a", encoding="utf-8") as log:  # the caller's cell log: append
        log.write(f"# buildtool compile: {', '.join(s.name for s in specs)} for {getattr(cell, 'id', cell)}\n")
        log.write(f"# tree {tree}\n# build.ninja {ninja_file}\n# jobs {jobs}, nvcc --threads {threads}, "
                  f"-split-compile {split_compile if split_compile > 1 else 'off'}, "
                  f"ccache {launcher or 'off'}, object cache {cache_root or 'off'}: "
                  f"{hits} hits, {len(to_compile)} to compile\n")
        for u in to_compile:
            origin = "measured" if unit_history_key(u, _targets(ctx)) in history else "estimated"
            prio = f", nice {nice[u.label]}" if nice else ""
            log.write(f"# {u.label} ({origin} cost {costs[u.label]:.0f} s{prio}): {_quote(compile_argv(ctx, u), ctx.windows)}\n")
        log.flush()
        progress = NinjaProgress(
            units={str(u.object_path): u.label for u in to_compile}, log=log, quiet=quiet,
            title=", ".join(s.module for s in specs),
        )
        argv = [ninja_binary(run_env), "-C", str(build_dir), "-f", ninja_file.name, "-j", str(jobs), "-k", "1"]
        ninja_started = time.monotonic()
        code = progress.run(argv, {**run_env, "NINJA_STATUS": STATUS_MARK + "%f/%t| "})
        ninja_seconds = time.monotonic() - ninja_started
    if code != 0:
        raise BuildError(
            f"compiling {', '.join(s.module for s in specs)} failed"
            + (f" in {progress.failed[0]}" if progress.failed else "")
            + ("\n" + "\n".join(progress.error_excerpt(40)) if progress.error_excerpt(40) else ""),
            hint=f"full log: {log_path}",
        )
    cpu, rss = _children_usage_delta(usage_before)
    misses = _store_compiled(ctx, modules)
    seconds = read_ninja_log(build_dir)
    timings = [
        UnitTiming(module=pu.spec.module, unit=pu.unit.name, cached=pu.cached,
                   seconds=0.0 if pu.cached else seconds.get(os.path.normpath(str(pu.object_path)), 0.0))
        for m in modules for pu in m.units
    ]
    timings.sort(key=lambda t: (-t.seconds, t.unit))
    write_unit_history(cache_root, {
        unit_history_key(pu, _targets(ctx)): seconds[os.path.normpath(str(pu.object_path))]
        for pu in to_compile if os.path.normpath(str(pu.object_path)) in seconds
    })
    bound = (CompileBound(cores=_usable_cores(), wall_seconds=round(ninja_seconds, 2), cpu_seconds=cpu)
             if to_compile and cpu is not None else None)
    artifacts = []
    for m in modules:
        if not m.output.is_file():
            raise BuildError(f"link produced no {m.output}", hint=f"full log: {log_path}")
        elf = read_elf(m.output, sections=(FATBIN_SECTION,))
        fatbin = elf.fatbin if elf is not None else ()  # a Windows .pyd carries none we can read
        artifacts.append(ModuleArtifact(name=m.spec.module, package=m.spec.package, path=m.output,
                                        size=m.output.stat().st_size, device_code=device_code_sizes(fatbin),
                                        device_code_uncompressed=device_code_sizes(fatbin, uncompressed=True)))
    return CompileResult(
        modules=tuple(artifacts), timings=tuple(timings), cache_hits=hits, cache_misses=misses,
        ccache=launcher is not None, jobs=jobs, split_compile=split_compile, wall_seconds=round(time.monotonic() - started, 3),
        cpu_seconds=cpu, peak_rss_mb=rss, log_path=log_path, build_ninja=ninja_file,
        kernels=tuple(m.resolved for m in modules), bound=bound,
    )


def _targets(ctx: BuildContext) -> int:
    return len(ctx.facts.archs) + (1 if ctx.facts.ptx else 0)


def _cache_object(ctx: BuildContext, key: str) -> Path | None:
    if ctx.cache_dir is None:
        return None
    return ctx.cache_dir / "objects" / key[:2] / f"{key}.o"


def _restore_cached(ctx: BuildContext, modules: Sequence[PlannedModule]) -> int:
    """Copy cached objects into place; their compile edges are then left out of build.ninja."""
    hits = 0
    for m in modules:
        for pu in m.units:
            cached = _cache_object(ctx, pu.cache_key)
            if cached is None or not cached.is_file():
                continue
            pu.object_path.parent.mkdir(parents=True, exist_ok=True)
            if not (pu.object_path.is_file() and _same_file(cached, pu.object_path)):
                shutil.copyfile(cached, pu.object_path)
            pu.cached = True
            hits += 1
    return hits


def _same_file(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def _store_compiled(ctx: BuildContext, modules: Sequence[PlannedModule]) -> int:
    misses = 0
    for m in modules:
        for pu in m.units:
            if pu.cached:
                continue
            misses += 1
            dest = _cache_object(ctx, pu.cache_key)
            if dest is None or dest.is_file() or not pu.object_path.is_file():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
            shutil.copyfile(pu.object_path, tmp)
            os.replace(tmp, dest)
    return misses


def _children_usage() -> tuple[float, float] | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime, float(ru.ru_maxrss)


def _children_usage_delta(before: tuple[float, float] | None) -> tuple[float | None, float | None]:
    after = _children_usage()
    if before is None or after is None:
        return None, None
    # ru_maxrss is KiB on Linux (bytes on macOS); a maximum over all waited-for descendants, not a delta.
    scale = 1 / (1024 * 1024) if sys.platform == "darwin" else 1 / 1024
    return round(after[0] - before[0], 2), round(after[1] * scale, 1)
