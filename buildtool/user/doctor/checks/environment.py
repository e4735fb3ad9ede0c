"""Environment variables that change what a source build does (NVCC_PREPEND_FLAGS, CC/CXX, ...)."""

from __future__ import annotations

import functools
import re
from typing import Literal

from packaging.version import Version

from buildtool.model import Frozen
from buildtool.spec import yamlsrc
from buildtool.spec.compat import load_compat
from buildtool.user.doctor.checks.base import check, fail, info, ok, skip, warn
from buildtool.user.doctor.context import Context
from buildtool.user.doctor.model import Finding


# ---------------------------------------------------------------- environment variables of source builds
class _FlagRule(Frozen):
    pattern: str
    status: Literal["fail", "warn", "info"]
    why: str
    fix: str


class _EnvPolicy(Frozen):
    version: Literal[1]
    nvcc_flags: tuple[_FlagRule, ...]
    arch_names: dict[str, tuple[str, ...]]


@functools.cache
def env_policy() -> _EnvPolicy:
    return yamlsrc.load_packaged(_EnvPolicy, "doctor_env.yaml")


def _gcc_limit(nvcc_version: str) -> tuple[int, str] | None:
    cuda = load_compat().cuda
    nv = Version(nvcc_version)
    key = next((k for k in sorted((Version(k) for k in cuda), reverse=True) if k <= nv), None)
    return (cuda[f"{key.major}.{key.minor}"].max_gcc, f"{key.major}.{key.minor}") if key else None


@check
def host_compiler_env(ctx: Context) -> Finding:
    compilers = ctx.env.host.compilers
    if not compilers:
        return skip("CC and CXX are not set (torch and nvcc use the default g++)")
    nvcc = ctx.env.host.nvcc_version
    limit = _gcc_limit(nvcc) if nvcc else None
    seen = []
    for var, comp in sorted(compilers.items()):
        if comp.path is None:
            return fail(f"{var}={comp.named} is not on PATH: torch passes -ccbin ${var} to nvcc "
                        f"(CC) / builds C++ with it (CXX), so every source build stops at the first compile",
                        f"install it or unset {var}")
        if comp.kind == "gcc" and comp.version and limit is not None:
            major = int(comp.version.split(".")[0])
            if major > limit[0]:
                return fail(f"{var}={comp.named} is gcc {comp.version} ({comp.path}), newer than nvcc {nvcc} accepts "
                            f"(gcc <= {limit[0]}): torch passes -ccbin ${var} to nvcc, which stops with "
                            "'#error -- unsupported GNU version!'",
                            f"install g++-{limit[0]} and export CC=gcc-{limit[0]} CXX=g++-{limit[0]}")
        if comp.kind == "clang" and var == "CC":
            seen.append(f"{var}={comp.named} is clang {comp.version}: nvcc accepts only some clang versions as "
                        "host compiler on Linux")
            continue
        seen.append(f"{var}={comp.named} -> {comp.kind or 'compiler'} {comp.version or '?'} ({comp.path})")
    if any("clang" in s for s in seen):
        return warn("; ".join(seen), "export CC=gcc CXX=g++ for CUDA builds")
    return ok("; ".join(seen) + (f"; nvcc {nvcc} accepts gcc <= {limit[0]}" if limit else ""))


@check
def nvcc_env_flags(ctx: Context) -> Finding:
    env = ctx.py.env
    found = [(var, flag) for var in ("NVCC_PREPEND_FLAGS", "NVCC_APPEND_FLAGS") for flag in env.get(var, "").split()]
    if not found:
        return ok("NVCC_PREPEND_FLAGS and NVCC_APPEND_FLAGS are not set")
    worst: tuple[int, str, str] | None = None
    notes = []
    rank = {"info": 0, "warn": 1, "fail": 2}
    for var, flag in found:
        rule = next((r for r in env_policy().nvcc_flags if re.match(r.pattern, flag)), None)
        if rule is None:
            continue
        notes.append(f"{var} has {flag}: {rule.why}")
        if worst is None or rank[rule.status] > worst[0]:
            worst = (rank[rule.status], rule.status, rule.fix)
    if worst is None:
        return info(f"NVCC flags from the environment: {', '.join(f for _, f in found)}")
    status = {"fail": fail, "warn": warn}.get(worst[1])
    if status is None:
        return info("; ".join(notes))
    return status("; ".join(notes), worst[2])


def parse_arch_list(text: str) -> tuple[list[str], list[str]]:
    """TORCH_CUDA_ARCH_LIST ('8.0;9.0+PTX', spaces also separate, names like 'Hopper') -> (archs, bad)."""
    names = env_policy().arch_names
    archs: list[str] = []
    bad: list[str] = []
    for item in re.split(r"[;\s]+", text.strip()):
        if not item:
            continue
        base = item[:-4] if item.endswith("+PTX") else item
        if base in names:
            archs += names[base]
        elif re.fullmatch(r"\d+\.\d+[af]?", base):
            archs.append(base.rstrip("af"))
        else:
            bad.append(item)
    return archs, bad


@check
def torch_cuda_arch_list(ctx: Context) -> Finding:
    text = ctx.py.env.get("TORCH_CUDA_ARCH_LIST")
    if text is None:
        return skip("TORCH_CUDA_ARCH_LIST is not set (torch builds for the visible GPUs)")
    archs, bad = parse_arch_list(text)
    if bad or not archs:
        shown = ", ".join(repr(b) for b in bad) or repr(text)
        return fail(f"TORCH_CUDA_ARCH_LIST={text!r}: {shown} is not an arch like 8.0, 9.0+PTX or a name like Hopper; "
                    "torch stops with 'Unknown CUDA arch'")
    nvcc = ctx.env.host.nvcc_version
    if nvcc:
        cuda = load_compat().cuda
        nv = Version(nvcc)
        key = next((k for k in sorted((Version(k) for k in cuda), reverse=True) if k <= nv), None)
        info_ = cuda[f"{key.major}.{key.minor}"] if key else None
        if info_ is not None:
            unsupported = [a for a in archs if not info_.can_compile(a)]
            if unsupported:
                return fail(f"TORCH_CUDA_ARCH_LIST={text!r} has {', '.join(unsupported)}, which nvcc {nvcc} cannot "
                            f"compile ({info_.min_arch} to {info_.max_arch}): 'nvcc fatal: Unsupported gpu "
                            "architecture'")
    gpus = [g["cc"] for g in ctx.env.host.gpus if g.get("cc")]
    missing = [cc for cc in gpus if cc not in archs and not text.endswith("+PTX")]
    if missing:
        return warn(f"TORCH_CUDA_ARCH_LIST={text!r} leaves out this machine's GPU (sm_{missing[0].replace('.', '')}): "
                    "what you build here will not run here ('no kernel image is available')",
                    f"add {missing[0]} to TORCH_CUDA_ARCH_LIST")
    return ok(f"TORCH_CUDA_ARCH_LIST={text!r}: {', '.join(archs)}")
