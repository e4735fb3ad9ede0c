"""The compile plan: every translation unit of every module (split parts written out), its object path and
the content hash that keys the object cache. Pure apart from writing generated TUs under the build dir."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildtool.compile.models import BuildEnvLike, ToolchainLike
from buildtool.compile.split import split_source
from buildtool.compile.target import HostCompiler, PythonFacts
from buildtool.compile.units import CompileUnit, ResolvedKernel, resolve
from buildtool.errors import UserError
from buildtool.spec.kernelspec import KernelSpec, TargetFacts

# 2: objects record placeholders for the tree, build dir and torch env (drivers.prefix_maps), not their paths
CACHE_FORMAT = 2


# Headers only: a TU's own text is hashed separately (none of the packages #includes a .cu/.cpp file).
HEADER_SUFFIXES = {".h", ".hh", ".hpp", ".hxx", ".cuh", ".inl", ".inc", ".tcc", ".def"}


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
    split_compile: int = 1  # nvcc -split-compile threads (1: off); not part of cache keys (same SASS below sm_100, off from it)
    jobserver: bool = False  # nvcc --jobserver (compile/jobserver.py); not part of cache keys (same objects)

    @property
    def windows(self) -> bool:
        return self.facts.os == "windows"


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
