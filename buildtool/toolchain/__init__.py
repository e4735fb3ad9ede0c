"""Toolchain provisioning: the CUDA toolkit and host compiler that compile one cell.

    from buildtool.toolchain import resolve
    tc = resolve("13.0", "linux-x86_64", provider="auto")   # -> Toolchain (frozen)
    subprocess.run([... str(tc.nvcc) ...], env=tc.apply())

`resolve(cuda, platform, provider="auto", *, cache_dir=None, env=None)`:
- `cuda`: the cell's CUDA "X.Y" (an "X.Y.Z" is accepted; major.minor is what must match).
- `platform`: the cell's platform (compat.yaml names); it must be the machine's own platform.
- `provider`: "system" | "pypi" | "debian" | "conda", or "auto" = try them in that order and take the first that
  works.
  system: $CUDA_HOME/$CUDA_PATH, nvcc on PATH, /usr/local/cuda-X.Y (exact major.minor, see system.py);
  pypi: `cuda-toolkit[nvcc,cccl]==X.Y.*` into a cached CUDA_HOME (CUDA 13.x only, see pypi.py);
  debian: Debian's nvidia-cuda-toolkit (12.4 from trixie, 11.8 from bookworm) unpacked without root into a cached
  CUDA_HOME, on Debian/Ubuntu hosts (see debian.py);
  conda: cuda-nvcc + cuda-cccl from `nvidia/label/cuda-X.Y.Z` via micromamba/mamba/conda (see conda.py).
- `cache_dir`: where provisioned toolkits live (default: `default_cache_dir()`, $BUILDTOOL_CACHE_DIR).
- `env`: the environment to search and to extend (default os.environ); never modified.
Returns a `Toolchain` whose `attempts` records every provider tried and why it did or did not supply the
toolkit; the host compiler (gcc.py on Linux, msvc.py on Windows) is checked against compat.yaml.
Raises `ToolchainNotFound` (an EnvironmentProblem, exit 3) listing every attempt and how to get a toolkit — without
network or installs when no provider can possibly supply the version (e.g. CUDA 12.x from PyPI).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from buildtool.errors import BuildError, UserError, allowed_list
from buildtool.host import default_cache_dir, host_platform
from buildtool.spec.compat import load_compat
from buildtool.toolchain import conda, debian, gcc, msvc, pypi, system
from buildtool.toolchain.models import (
    PROVIDERS,
    HostCompiler,
    ProviderAttempt,
    ProviderChoice,
    ProviderFacts,
    ProviderName,
    Toolchain,
    ToolchainNotFound,
    load_facts,
    os_of,
)
from buildtool.versions import split_cuda

__all__ = [
    "HostCompiler",
    "ProviderAttempt",
    "Toolchain",
    "ToolchainNotFound",
    "resolve",
]


def _cell_cuda(cuda: str) -> str:
    major, minor = split_cuda(cuda)
    return f"{major}.{minor}"


def _try_provider(
    name: ProviderName, cuda: str, platform: str, env: Mapping[str, str], cache_dir: Path, facts: ProviderFacts,
    host_cxx: Path | None, requested: str,
) -> tuple[Path | None, str, str]:
    """(CUDA_HOME or None, full version, detail) for one provider; never raises for "not available".
    ``requested`` is the CUDA as given ("12.4.0" pins conda's label; "12.4" takes the table's)."""
    if name == "system":
        home, version, notes = system.find_system_toolkit(cuda, platform, env, facts)
        return home, version, "; ".join(notes)
    if name == "pypi":
        reason = pypi.unsupported_reason(cuda, facts)
        if reason:
            return None, "", reason
        try:
            return pypi.provision(cuda, platform, cache_dir, facts, env=env, host_cxx=host_cxx)
        except (BuildError, OSError, ValueError) as exc:
            return None, "", str(exc)
    if name == "debian":
        reason = debian.unsupported_reason(cuda, platform, debian.read_os_release(), env, facts.debian)
        if reason:
            return None, "", reason
        try:
            return debian.provision(cuda, platform, cache_dir, facts, env=env, host_cxx=host_cxx)
        except (BuildError, OSError, ValueError) as exc:
            return None, "", str(exc)
    tool = conda.find_tool(env, facts)
    if tool is None:
        return None, "", f"no {', '.join(facts.conda.tools[:-1])} or {facts.conda.tools[-1]} on PATH"
    try:
        return conda.provision(requested, platform, cache_dir, facts, tool, env=env)
    except (BuildError, OSError, ValueError) as exc:
        return None, "", str(exc)


def how_to_get(cuda: str, platform: str, facts: ProviderFacts, os_release: Mapping[str, str] | None = None) -> str:
    """Every way to get a toolkit for ``cuda`` on ``platform``, one per provider that can supply it on this host's
    distribution (``os_release``: /etc/os-release, read when None)."""
    major, minor = split_cuda(cuda)
    release = debian.read_os_release() if os_release is None else os_release
    ways = [f"system: {system.install_hint(cuda, platform, facts)}"]
    if os_of(platform) == "linux" and (apt := debian.system_package_hint(cuda, release, facts.debian)):
        ways.append(f"system: {apt}")
    if pypi.unsupported_reason(cuda, facts) is None:
        ways.append("pypi: " + " ".join(facts.pypi.install_hint.format(major=major, minor=minor).split()))
    if os_of(platform) == "linux" and (route := debian.install_hint(cuda, release, facts.debian)):
        ways.append(f"debian: {route}")
    ways.append("conda: " + " ".join(conda.install_hint(cuda, facts).split()))
    return "\n    - ".join(ways)


def not_found(cuda: str, platform: str, attempts: tuple[ProviderAttempt, ...], facts: ProviderFacts) -> ToolchainNotFound:
    lines = [f"no CUDA {cuda} toolkit for {platform}; tried:"]
    lines += [f"  - {a.provider}: {a.detail}" for a in attempts]
    return ToolchainNotFound("\n".join(lines), attempts=attempts, hint="get one with:\n    - " + how_to_get(cuda, platform, facts))


def _linux_env(home: Path, host: HostCompiler, env: Mapping[str, str]) -> dict[str, str]:
    bin_dir = home / "bin"
    path = env.get("PATH", "")
    out = {
        "PATH": f"{bin_dir}{os.pathsep}{path}" if path else str(bin_dir),
        "CUDA_HOME": str(home),
        "CUDA_PATH": str(home),
    }
    out.update(gcc.env_for(host))
    return out


def resolve(
    cuda: str,
    platform: str,
    provider: ProviderChoice = "auto",
    *,
    cache_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Toolchain:
    """The toolchain for a cell (see the module docstring)."""
    base = dict(os.environ if env is None else env)
    facts = load_facts()
    compat = load_compat()
    cell_cuda = _cell_cuda(cuda)
    info = compat.cuda.get(cell_cuda)
    if info is None:
        raise UserError(f"CUDA {cuda} is not in the compatibility table (known: {allowed_list(compat.cuda)})")
    if provider != "auto" and provider not in PROVIDERS:
        raise UserError(f'unknown toolchain provider "{provider}" (choose from auto, {", ".join(PROVIDERS)})')
    cache = cache_dir or default_cache_dir(base)
    here = host_platform()
    order: tuple[ProviderName, ...] = PROVIDERS if provider == "auto" else (provider,)
    if platform != here:
        elsewhere = tuple(
            ProviderAttempt(provider=p, ok=False, detail=f"{platform} cells build only on {platform}; this machine is {here}")
            for p in order
        )
        raise not_found(cell_cuda, platform, elsewhere, facts)

    # Host compiler first: the pypi provider's test compile uses it. Its failure is reported after the
    # toolkit's, so "no CUDA 12.4 anywhere" is not hidden behind a gcc complaint.
    host: HostCompiler | None = None
    host_error: ToolchainNotFound | None = None
    vcvars: dict[str, str] = {}
    try:
        if os_of(platform) == "windows":
            host, vcvars, _ = msvc.select_host_compiler(cell_cuda, info.max_msvc, base, facts)
        else:
            host, _ = gcc.select_host_compiler(cell_cuda, info.max_gcc, base, facts)
    except ToolchainNotFound as exc:
        host_error = exc

    attempts: list[ProviderAttempt] = []
    found: tuple[ProviderName, Path, str] | None = None
    for name in order:
        home, version, detail = _try_provider(name, cell_cuda, platform, base, cache, facts, host.path if host else None, cuda)
        attempts.append(ProviderAttempt(provider=name, ok=home is not None, detail=detail))
        if home is not None:
            found = (name, home, version)
            break
    if found is None:
        error = not_found(cell_cuda, platform, tuple(attempts), facts)
        if host_error is not None:
            error.message += f"\nand {host_error.message}"
        raise error
    if host is None:
        assert host_error is not None
        raise host_error
    name, home, version = found
    nvcc = home / "bin" / system.nvcc_name(platform)
    include = home / "include"
    include_dirs = [include] + ([include / "cccl"] if (include / "cccl").is_dir() else [])
    if os_of(platform) == "windows":
        tc_env = msvc.toolchain_env(vcvars, str(home), cell_cuda)
        library_dirs = (home / "lib" / "x64",)
    else:
        tc_env = _linux_env(home, host, base)
        library_dirs = (home / "lib64",)
    return Toolchain(
        provider=name,
        cuda_home=home,
        nvcc=nvcc,
        cuda_version=version,
        host=host,
        env=tc_env,
        path_prefix=(home / "bin",),
        include_dirs=tuple(include_dirs),
        library_dirs=library_dirs,
        attempts=tuple(attempts),
    )
