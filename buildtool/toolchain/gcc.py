"""Linux host compiler: a g++ that the cell's nvcc accepts (compat.yaml `cuda.<X.Y>.max_gcc`).

nvcc refuses gcc newer than its host_config.h allows (`#error -- unsupported GNU version!`,
failures.md F09). Selection, as pure functions over discovered candidates:
1. $CXX (or $CUDAHOSTCXX) when set: the user's choice is used if it fits, and is an error if it does not
   (never silently replaced);
2. the default `g++` if it fits;
3. otherwise the newest installed `g++-N` on PATH with N <= max_gcc;
4. otherwise ToolchainNotFound with the fixes from toolchain.yaml (apt install g++-N, conda gxx, ...).
Only the subprocess calls (`g++ -dumpfullversion`, `--version`) touch the machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from buildtool.model import Frozen
from buildtool.toolchain.models import HostCompiler, ProviderFacts, ToolchainNotFound

_VERSIONED_GXX = re.compile(r"^g\+\+-(\d+)$")
_EXPLICIT_VARS = ("CUDAHOSTCXX", "CXX")


class GccCandidate(Frozen):
    path: Path
    version: str
    kind: str = "gcc"  # "gcc" or "clang"
    origin: str  # "$CXX", "g++ on PATH", "g++-12 on PATH"

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])


def parse_version(text: str) -> str | None:
    """`g++ -dumpfullversion -dumpversion` prints "12.2.0" (or "12" on old gcc); clang prints "18.1.8"."""
    m = re.search(r"\d+(?:\.\d+)*", text.strip())
    return m.group(0) if m else None


def kind_from_banner(banner: str) -> str:
    """First line of `--version`: clang says "clang version ..."; everything else is treated as gcc."""
    return "clang" if "clang" in banner.lower() else "gcc"


def choose(candidates: Iterable[GccCandidate], max_gcc: int) -> tuple[GccCandidate | None, list[str]]:
    """The compiler to use and why each candidate was or was not taken (pure).

    An explicit $CXX/$CUDAHOSTCXX candidate decides alone: it is used or the result is None."""
    notes: list[str] = []
    items = list(candidates)
    explicit = [c for c in items if c.origin.startswith("$")]
    if explicit:
        c = explicit[0]
        if c.kind == "clang":
            notes.append(f"{c.origin}={c.path}: clang {c.version} (no max-version table for clang; nvcc checks it)")
            return c, notes
        if c.major <= max_gcc:
            notes.append(f"{c.origin}={c.path}: gcc {c.version} <= {max_gcc}")
            return c, notes
        notes.append(f"{c.origin}={c.path}: gcc {c.version} is newer than {max_gcc}, the newest this CUDA accepts")
        return None, notes
    default = [c for c in items if c.origin == "g++ on PATH"]
    for c in default:
        if c.major <= max_gcc:
            notes.append(f"{c.origin}: gcc {c.version} <= {max_gcc}")
            return c, notes
        notes.append(f"{c.origin}: gcc {c.version} is newer than {max_gcc}, the newest this CUDA accepts")
    versioned = sorted((c for c in items if c not in default), key=lambda c: c.major, reverse=True)
    for c in versioned:
        if c.major <= max_gcc:
            notes.append(f"{c.origin}: gcc {c.version} <= {max_gcc}")
            return c, notes
        notes.append(f"{c.origin}: gcc {c.version} > {max_gcc}")
    if not items:
        notes.append("no g++ on PATH")
    return None, notes


def matching_cc(cxx: Path) -> Path | None:
    """g++-12 -> gcc-12, g++ -> gcc, clang++ -> clang, beside it."""
    name = cxx.name
    cc_name = name.replace("g++", "gcc", 1) if "g++" in name else name.replace("clang++", "clang", 1)
    cc = cxx.with_name(cc_name)
    return cc if cc_name != name and cc.exists() else None


# --- edge: look at the machine -------------------------------------------------------------------------


def _probe(path: Path, origin: str) -> GccCandidate | None:
    try:
        full = subprocess.run([str(path), "-dumpfullversion", "-dumpversion"], capture_output=True, text=True, timeout=30)
        banner = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    kind = kind_from_banner(banner.stdout.splitlines()[0] if banner.stdout else "")
    version = parse_version(full.stdout) if full.returncode == 0 else None
    if version is None:
        version = parse_version(banner.stdout)
    return GccCandidate(path=path, version=version, kind=kind, origin=origin) if version else None


def discover(env: Mapping[str, str]) -> list[GccCandidate]:
    """$CUDAHOSTCXX/$CXX if set (then nothing else), else `g++` and every `g++-N` on PATH."""
    path = env.get("PATH", "")
    for var in _EXPLICIT_VARS:
        value = env.get(var)
        if value:
            # CXX may carry flags ("g++-12 -fPIC"); the first word is the compiler.
            exe = shutil.which(value.split()[0], path=path) or value.split()[0]
            found = _probe(Path(exe), f"${var}")
            return [found] if found else []
    result: list[GccCandidate] = []
    default = shutil.which("g++", path=path)
    if default:
        c = _probe(Path(default), "g++ on PATH")
        if c:
            result.append(c)
    seen: set[str] = set()
    for d in path.split(os.pathsep):
        try:
            names = sorted(os.listdir(d)) if d else []
        except OSError:
            continue
        for name in names:
            if _VERSIONED_GXX.match(name) and name not in seen:
                seen.add(name)
                c = _probe(Path(d) / name, f"{name} on PATH")
                if c:
                    result.append(c)
    return result


def fix_text(max_gcc: int, facts: ProviderFacts) -> str:
    return "; ".join(f.format(max_gcc=max_gcc) for f in facts.host_compiler.gcc_fix)


def select_host_compiler(cuda: str, max_gcc: int, env: Mapping[str, str], facts: ProviderFacts) -> tuple[HostCompiler, list[str]]:
    """The g++ to use for ``cuda``; ToolchainNotFound with the fix when none fits."""
    chosen, notes = choose(discover(env), max_gcc)
    if chosen is None:
        raise ToolchainNotFound(
            f"no host C++ compiler for CUDA {cuda} (nvcc {cuda} accepts gcc <= {max_gcc}):\n  - " + "\n  - ".join(notes),
            hint=fix_text(max_gcc, facts),
        )
    kind = "clang" if chosen.kind == "clang" else "gcc"
    host = HostCompiler(kind=kind, path=chosen.path, version=chosen.version, cc=matching_cc(chosen.path))
    return host, notes


def env_for(host: HostCompiler) -> dict[str, str]:
    """CC/CXX for the .cpp sources and NVCC_CCBIN so nvcc's -ccbin default is the same compiler."""
    env = {"CXX": str(host.path), "NVCC_CCBIN": str(host.path)}
    if host.cc is not None:
        env["CC"] = str(host.cc)
    return env
