"""Windows host compiler: MSVC found with vswhere, its environment taken from vcvars64.bat.

Steps (parsing is pure and tested with recorded fixtures; only `run_vswhere`/`run_vcvars` touch Windows):
1. `vswhere.exe -products * -requires Microsoft.VisualStudio.Component.VC.Tools.x86.x64 -format json -utf8`
   -> `parse_vswhere()` -> installations; `choose_install()` keeps the newest whose Visual Studio product
   line (catalog.productLineVersion, "2022") is not newer than compat.yaml's `cuda.<X.Y>.max_msvc`
   (nvcc's host_config.h rejects unknown MSVC majors).
2. `cmd /d /s /c ""<install>\\VC\\Auxiliary\\Build\\vcvars64.bat" >nul && set"` -> `parse_set_output()`
   -> `env_delta()` against the environment before: PATH, INCLUDE, LIB, LIBPATH, VCToolsVersion, ...
3. The toolchain env = that delta + CUDA's bin first on PATH + DISTUTILS_USE_SDK=1 (tells setuptools and
   torch.utils.cpp_extension to use the activated compiler instead of searching for one).
The MSVC version exposed is VCToolsVersion ("14.44.35207"); CUDA >= 13.2 needs `/Zc:preprocessor`, which
the kernel specs add (compat.yaml `msvc_needs_zc_preprocessor`), not this module.
"""

from __future__ import annotations

import json
import ntpath
import subprocess
from collections.abc import Mapping
from pathlib import Path, PureWindowsPath

from buildtool.model import Frozen
from buildtool.toolchain.models import HostCompiler, ProviderFacts, ToolchainNotFound
from buildtool.versions import split_cuda


class VsInstall(Frozen):
    path: str  # installationPath, a Windows path
    version: str  # installationVersion "17.14.36301.6"
    product_line: str  # catalog.productLineVersion "2022"
    display_name: str
    complete: bool = True

    @property
    def vcvars64(self) -> str:
        return ntpath.join(self.path, "VC", "Auxiliary", "Build", "vcvars64.bat")


def parse_vswhere(text: str) -> list[VsInstall]:
    """vswhere's `-format json` output (a JSON array of instances) -> installations."""
    data = json.loads(text or "[]")
    installs: list[VsInstall] = []
    for item in data:
        catalog = item.get("catalog") or {}
        installs.append(
            VsInstall(
                path=item["installationPath"],
                version=item["installationVersion"],
                product_line=str(catalog.get("productLineVersion") or _year_from_major(item["installationVersion"])),
                display_name=item.get("displayName", item.get("installationName", "")),
                complete=bool(item.get("isComplete", True)),
            )
        )
    return installs


def _year_from_major(version: str) -> str:
    # Visual Studio's internal major -> product line, for entries without a catalog.
    return {"15": "2017", "16": "2019", "17": "2022", "18": "2026"}.get(version.split(".", 1)[0], "unknown")


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


def choose_install(installs: list[VsInstall], max_msvc: str) -> tuple[VsInstall | None, list[str]]:
    """Newest complete installation whose product line <= ``max_msvc`` (pure)."""
    notes: list[str] = []
    ok: list[VsInstall] = []
    for inst in installs:
        if not inst.complete:
            notes.append(f"{inst.display_name} {inst.version}: installation incomplete")
        elif inst.product_line.isdigit() and max_msvc.isdigit() and int(inst.product_line) > int(max_msvc):
            notes.append(f"{inst.display_name} {inst.version}: Visual Studio {inst.product_line} is newer than {max_msvc}, the newest this CUDA accepts")
        else:
            ok.append(inst)
    if not ok:
        if not installs:
            notes.append("vswhere found no Visual Studio with the C++ x64 tools")
        return None, notes
    best = max(ok, key=lambda i: _version_key(i.version))
    notes.append(f"{best.display_name} {best.version} at {best.path}")
    return best, notes


def parse_set_output(text: str) -> dict[str, str]:
    """`set` output (NAME=VALUE per line; values may contain '=') -> dict. Lines without '=' (the banner
    vcvars prints when not redirected) are ignored."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.rstrip("\r")
        if "=" not in line or line.startswith("="):  # cmd's hidden "=C:=C:\\..." entries start with '='
            continue
        name, value = line.split("=", 1)
        if name and " " not in name:
            env[name] = value
    return env


def env_delta(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, str]:
    """Variables vcvars added or changed (Windows names are case-insensitive)."""
    lowered = {k.upper(): v for k, v in before.items()}
    return {k: v for k, v in after.items() if lowered.get(k.upper()) != v}


def cl_path(env: Mapping[str, str]) -> PureWindowsPath | None:
    """cl.exe of the activated x64 toolset: %VCToolsInstallDir%\\bin\\Hostx64\\x64\\cl.exe."""
    tools = _get(env, "VCToolsInstallDir")
    return PureWindowsPath(tools, "bin", "Hostx64", "x64", "cl.exe") if tools else None


def _get(env: Mapping[str, str], name: str) -> str | None:
    for k, v in env.items():
        if k.upper() == name.upper():
            return v
    return None


def host_from_env(env: Mapping[str, str], install: VsInstall) -> HostCompiler:
    """HostCompiler from the activated environment (pure); ValueError if vcvars did not activate x64."""
    version = _get(env, "VCToolsVersion")
    cl = cl_path(env)
    if not version or cl is None:
        raise ValueError(f"{install.vcvars64} did not set VCToolsVersion/VCToolsInstallDir")
    return HostCompiler(kind="msvc", path=Path(str(cl)), version=version, product=install.product_line)


def toolchain_env(vcvars: Mapping[str, str], cuda_home: str, cuda_version_minor: str) -> dict[str, str]:
    """The compile environment on Windows (pure): vcvars delta, CUDA first on PATH, DISTUTILS_USE_SDK=1."""
    env = dict(vcvars)
    path_key = next((k for k in env if k.upper() == "PATH"), "Path")
    cuda_bin = ntpath.join(cuda_home, "bin")
    env[path_key] = cuda_bin + ";" + env.get(path_key, "")
    env["CUDA_HOME"] = cuda_home
    env["CUDA_PATH"] = cuda_home
    major, minor = split_cuda(cuda_version_minor)
    env[f"CUDA_PATH_V{major}_{minor}"] = cuda_home
    env["DISTUTILS_USE_SDK"] = "1"
    return env


# --- edge: run the Windows tools ------------------------------------------------------------------------


def run_vswhere(facts: ProviderFacts) -> str:
    exe = facts.host_compiler.msvc.vswhere
    if not Path(exe).is_file():
        raise FileNotFoundError(f"vswhere not found at {exe} (it ships with the Visual Studio Installer)")
    return subprocess.run([exe, *facts.host_compiler.msvc.vswhere_args], capture_output=True, text=True,
                          encoding="utf-8", timeout=60, check=True).stdout


def run_vcvars(install: VsInstall, base: Mapping[str, str]) -> dict[str, str]:
    """The environment after `vcvars64.bat`, as `set` prints it."""
    cmd = f'cmd /d /s /c ""{install.vcvars64}" >nul && set"'
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(base), shell=False)
    if proc.returncode != 0:
        raise OSError(f"{install.vcvars64} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return parse_set_output(proc.stdout)


def select_host_compiler(cuda: str, max_msvc: str, env: Mapping[str, str], facts: ProviderFacts) -> tuple[HostCompiler, dict[str, str], list[str]]:
    """(cl.exe, vcvars environment delta, notes); ToolchainNotFound with the fix when there is none."""
    fix = facts.host_compiler.msvc.fix.format(max_msvc=max_msvc)
    try:
        installs = parse_vswhere(run_vswhere(facts))
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        raise ToolchainNotFound(f"no MSVC for CUDA {cuda}: {exc}", hint=fix) from None
    install, notes = choose_install(installs, max_msvc)
    if install is None:
        raise ToolchainNotFound(f"no MSVC for CUDA {cuda}:\n  - " + "\n  - ".join(notes), hint=fix)
    try:
        after = run_vcvars(install, env)
        host = host_from_env(after, install)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise ToolchainNotFound(f"no MSVC for CUDA {cuda}: {exc}", hint=fix) from None
    return host, env_delta(env, after), notes
