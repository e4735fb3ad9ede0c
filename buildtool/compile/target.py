"""Facts about what a compile targets, asked once: the host C++ compiler, the target Python's EXT_SUFFIX and
headers, a compiler's identity (part of every cache key)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from buildtool import interp
from buildtool.errors import BuildError

if TYPE_CHECKING:
    from buildtool.compile.models import HostCompilerLike


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


def host_compiler(host: HostCompilerLike) -> HostCompiler:
    """The host C++ compiler the toolchain chose (``Toolchain.host``): MSVC when it says so or is a cl.exe;
    clang is driven like gcc."""
    kind: Literal["gcc", "msvc"] = "msvc" if host.kind == "msvc" else "gcc"
    if host.kind not in ("gcc", "msvc") and Path(str(host.path)).name.lower() in ("cl", "cl.exe"):
        kind = "msvc"
    return HostCompiler(str(host.path), kind)


def query_python(python: Path) -> PythonFacts:
    """EXT_SUFFIX and include dirs of the *target* interpreter (not necessarily the one running us)."""
    try:
        found = interp.facts(python)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"cannot query the target Python {python}: {exc}") from None
    return PythonFacts(found.version, found.ext_suffix, found.include_dirs, (found.lib_dir,))


@cache
def tool_identity(argv: tuple[str, ...]) -> str:
    """The version banner of a compiler: part of every cache key (a new nvcc or g++ invalidates objects)."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"cannot run {argv[0]}: {exc}") from None
    return (out.stdout + out.stderr).strip()
