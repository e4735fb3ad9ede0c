"""Compiler and linker command lines, one driver per platform behind one interface (``CompilerDriver``):
nvcc for CUDA TUs, gcc/clang (Linux) or MSVC cl.exe and link.exe (Windows) for C++ TUs and the link,
full-ABI and stable-ABI. tests/test_compile_drivers.py holds every command byte for byte."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from buildtool.compile.plan import BuildContext, PlannedModule, PlannedUnit, torch_include_dir
from buildtool.compile.units import CompileUnit

#: Stable names recorded instead of a build's absolute prefixes (``__FILE__`` in torch's inline headers and
#: the sources, STD_TORCH_CHECK / TORCH_INTERNAL_ASSERT messages): the same object bytes from any tree, build
#: dir or torch env, so an isolated ``python -m build`` gives ``buildtool build``'s bytes (the toolkit and
#: the host compiler are the same on both sides and stay as they are).
PREFIX_PLACEHOLDERS = {"torch_site": "/buildtool/site-packages", "tree": "/buildtool/tree",
                       "build_dir": "/buildtool/build"}
#: One map per compiler: gcc/clang rewrite the prefix (-ffile-prefix-map, GCC >= 8, clang >= 10); MSVC can
#: only strip it (/d1trimfile, cl 19.2x: paths become relative to the removed prefix).
_PREFIX_MAP_FLAG = {"gcc": "-ffile-prefix-map={old}={new}", "msvc": "/d1trimfile:{old}"}


def _abs_includes(ctx: BuildContext, unit: CompileUnit, source_dir: Path) -> list[str]:
    """Spec dirs, the source's own dir, the toolkit's (host TUs; nvcc knows its own), torch's, Python's
    (binding TUs only), then the CUDA library wheels' headers last so the toolkit's own headers win."""
    dirs = [str(ctx.tree / d) if not Path(d).is_absolute() else d for d in unit.include_dirs]
    dirs.append(str(source_dir))  # split parts live elsewhere; their quoted includes resolve here
    if unit.language == "cxx":
        dirs += [str(d) for d in ctx.toolchain.include_dirs]
    else:
        # nvcc searches its own include dir only after every -I: name it before the CUDA library wheels'
        # headers (nvidia/cu13/include holds a cuda_runtime.h too) so the toolkit's headers win.
        dirs.append(str(Path(ctx.toolchain.cuda_home) / "include"))
    dirs += ctx.torch_includes
    if unit.uses_python:
        dirs += list(ctx.python.include_dirs)
    dirs += [str(d) for d in ctx.env.cuda_library_include_dirs]
    return list(dict.fromkeys(dirs))


def prefix_maps(ctx: BuildContext) -> list[tuple[str, str]]:
    """(absolute prefix, placeholder) pairs, shortest prefix first: gcc applies the last matching map, so a
    build dir inside the tree is recorded as the build dir. The torch env's site-packages covers torch's
    headers and the CUDA library wheels' (nvidia/*/include)."""
    inc = torch_include_dir(ctx.env)
    found = {"torch_site": str(inc.parent.parent) if inc else "", "tree": str(ctx.tree),
             "build_dir": str(ctx.build_dir)}
    pairs = {old: PREFIX_PLACEHOLDERS[name] for name, old in found.items() if old}
    return sorted(pairs.items(), key=lambda pair: (len(pair[0]), pair[0]))


def prefix_map_flags(ctx: BuildContext, *, nvcc: bool) -> list[str]:
    """The host compiler's prefix-map flags (through -Xcompiler for nvcc, which hands them to every host
    pass, device-side preprocessing included). A prefix with "=" (or "," for nvcc, which splits
    -Xcompiler values at commas) cannot be written as a map and is left absolute."""
    unsafe = "=," if nvcc else "="
    flags = [_PREFIX_MAP_FLAG[ctx.cxx.kind].format(old=old, new=new) for old, new in prefix_maps(ctx)
             if not any(c in old for c in unsafe)]
    return [f"-Xcompiler={f}" for f in flags] if nvcc else flags


class CompilerDriver(ABC):
    """One platform's compiler and linker command lines: nvcc for CUDA TUs (driving this platform's host
    compiler), the host compiler for C++ TUs and the host linker for the module. ``driver_for`` picks the
    one implementation per platform; nothing else in buildtool writes a compiler command."""

    name: ClassVar[str]

    def __init__(self, ctx: BuildContext) -> None:
        self.ctx = ctx

    def compile_argv(self, planned: PlannedUnit) -> list[str]:
        """The full compiler command for one TU (without depfile options, which the ninja rule adds)."""
        unit = planned.unit
        includes = _abs_includes(self.ctx, unit, (self.ctx.tree / unit.source).parent)
        if unit.language == "cuda":
            return self.nvcc_argv(planned, includes)
        return self.host_compile_argv(planned, includes)

    def nvcc_argv(self, planned: PlannedUnit, includes: Sequence[str]) -> list[str]:
        ctx, unit = self.ctx, planned.unit
        argv = [str(ctx.toolchain.nvcc), *self.nvcc_host_compiler_args()]
        argv += [f"-I{d}" for d in includes] + list(unit.flags) + prefix_map_flags(ctx, nvcc=True)
        if ctx.split_compile > 1:
            argv.append(f"-split-compile={ctx.split_compile}")
        if ctx.jobserver:
            argv.append("--jobserver")
        return [*argv, "-c", str(planned.source_path), "-o", str(planned.object_path)]

    def link_argv(self, module: PlannedModule) -> list[str]:
        """Host link into ``<module><EXT_SUFFIX>``: torch's libraries and cudart, no rpath (torch is imported
        first at runtime and has loaded them), no host debug info. A stable-ABI module links the spec's
        libraries only (torch_cpu, torch_cuda, c10, cudart): no Python library, no libtorch_python, no
        PyInit export (it is loaded with torch.ops.load_library)."""
        ctx = self.ctx
        objects = [str(u.object_path) for u in module.units]
        lib_dirs = [str(d) for d in ctx.env.library_dirs]
        torch_lib = _torch_lib_dir(ctx)
        if torch_lib and torch_lib not in lib_dirs:
            lib_dirs.insert(0, torch_lib)
        lib_dirs += [str(d) for d in ctx.toolchain.library_dirs]
        cuda_home = Path(ctx.toolchain.cuda_home)
        stable = module.resolved.libraries
        if stable is not None:
            return self.link_stable_argv(module, objects, lib_dirs, stable, cuda_home)
        libraries = list(dict.fromkeys([*ctx.env.libraries, "c10", "torch", "torch_cpu", "torch_python",
                                        "c10_cuda", "torch_cuda"]))
        return self.link_full_argv(module, objects, lib_dirs, libraries, cuda_home)

    @abstractmethod
    def nvcc_host_compiler_args(self) -> list[str]:
        """What tells nvcc which host compiler to drive."""

    @abstractmethod
    def host_compile_argv(self, planned: PlannedUnit, includes: Sequence[str]) -> list[str]:
        """The host compiler's command for a C++ TU."""

    @abstractmethod
    def link_full_argv(self, module: PlannedModule, objects: list[str], lib_dirs: list[str],
                       libraries: list[str], cuda_home: Path) -> list[str]:
        """The full-ABI link: a Python extension module against libtorch, libtorch_python and cudart."""

    @abstractmethod
    def link_stable_argv(self, module: PlannedModule, objects: list[str], lib_dirs: list[str],
                         libraries: Sequence[str], cuda_home: Path) -> list[str]:
        """The stable-ABI link: a library of the spec's libraries only."""


class GccDriver(CompilerDriver):
    """Linux: g++ (or clang++, driven the same way) as nvcc's -ccbin, for C++ TUs and the shared-object link."""

    name = "gcc"

    def nvcc_host_compiler_args(self) -> list[str]:
        return ["-ccbin", self.ctx.cxx.path] if self.ctx.cxx.kind == "gcc" else []

    def host_compile_argv(self, planned: PlannedUnit, includes: Sequence[str]) -> list[str]:
        return [self.ctx.cxx.path, *(f"-I{d}" for d in includes), *planned.unit.flags,
                *prefix_map_flags(self.ctx, nvcc=False), "-c", str(planned.source_path), "-o", str(planned.object_path)]

    def link_full_argv(self, module: PlannedModule, objects: list[str], lib_dirs: list[str],
                       libraries: list[str], cuda_home: Path) -> list[str]:
        lib_dirs = list(dict.fromkeys([*lib_dirs, str(_cuda_lib(cuda_home))]))
        return [
            self.ctx.cxx.path, "-shared", "-s", "-o", str(module.output), *objects,
            *(f"-L{d}" for d in lib_dirs), *(f"-l{lib}" for lib in libraries), "-lcudart",
            *module.resolved.link_flags,
        ]

    def link_stable_argv(self, module: PlannedModule, objects: list[str], lib_dirs: list[str],
                         libraries: Sequence[str], cuda_home: Path) -> list[str]:
        lib_dirs = list(dict.fromkeys([*lib_dirs, str(_cuda_lib(cuda_home))]))
        return [self.ctx.cxx.path, "-shared", "-s", "-o", str(module.output), *objects,
                *(f"-L{d}" for d in lib_dirs), *(f"-l{lib}" for lib in libraries), *module.resolved.link_flags]


class MsvcDriver(CompilerDriver):
    """Windows: MSVC's cl.exe (nvcc finds it on the vcvars PATH) and link.exe for the .pyd."""

    name = "msvc"

    def nvcc_host_compiler_args(self) -> list[str]:
        return []  # vcvars' cl.exe on PATH is nvcc's host compiler

    def host_compile_argv(self, planned: PlannedUnit, includes: Sequence[str]) -> list[str]:
        return [self.ctx.cxx.path, "/nologo", *(f"/I{d}" for d in includes), *planned.unit.flags,
                *prefix_map_flags(self.ctx, nvcc=False), "/c", str(planned.source_path), f"/Fo{planned.object_path}"]

    def link_full_argv(self, module: PlannedModule, objects: list[str], lib_dirs: list[str],
                       libraries: list[str], cuda_home: Path) -> list[str]:
        lib_dirs = [*lib_dirs, str(cuda_home / "lib" / "x64"), *self.ctx.python.lib_dirs]
        return [
            "link.exe", "/nologo", "/DLL", "/INCREMENTAL:NO", "/DEBUG:NONE", f"/OUT:{module.output}",
            f"/EXPORT:PyInit_{module.spec.module}", *objects, *(f"/LIBPATH:{d}" for d in lib_dirs),
            *(f"{lib}.lib" for lib in libraries), "cudart.lib",
            # keep torch_cuda linked although nothing names it directly (pytorch/pytorch#31611)
            "-INCLUDE:?warp_size@cuda@at@@YAHXZ", *module.resolved.link_flags,
        ]

    def link_stable_argv(self, module: PlannedModule, objects: list[str], lib_dirs: list[str],
                         libraries: Sequence[str], cuda_home: Path) -> list[str]:
        lib_dirs = [*lib_dirs, str(cuda_home / "lib" / "x64")]
        return ["link.exe", "/nologo", "/DLL", "/INCREMENTAL:NO", "/DEBUG:NONE", f"/OUT:{module.output}", *objects,
                *(f"/LIBPATH:{d}" for d in lib_dirs), *(f"{lib}.lib" for lib in libraries), *module.resolved.link_flags]


def driver_for(ctx: BuildContext) -> CompilerDriver:
    """The platform's driver: MSVC on Windows, gcc (or clang) everywhere else."""
    return MsvcDriver(ctx) if ctx.windows else GccDriver(ctx)


def compile_argv(ctx: BuildContext, planned: PlannedUnit) -> list[str]:
    """The full compiler command for one TU (without depfile options, which the ninja rule adds)."""
    return driver_for(ctx).compile_argv(planned)


def link_argv(ctx: BuildContext, module: PlannedModule) -> list[str]:
    """The link command of one module."""
    return driver_for(ctx).link_argv(module)


def _cuda_lib(cuda_home: Path) -> Path:
    return cuda_home / "lib64" if (cuda_home / "lib64").is_dir() else cuda_home / "lib"


def _torch_lib_dir(ctx: BuildContext) -> str | None:
    inc = torch_include_dir(ctx.env)
    if inc and (inc.parent / "lib").is_dir():
        return str(inc.parent / "lib")
    return None
