"""The check registry and the helpers every check uses to report what it saw."""

from __future__ import annotations

from collections.abc import Callable

from packaging.requirements import InvalidRequirement, Requirement

from buildtool.spec.compat import load_compat
from buildtool.user.doctor.context import Context
from buildtool.user.doctor.model import Finding, Status

Check = Callable[[Context], Finding]


CHECKS: dict[str, Check] = {}


def check(fn: Check) -> Check:
    CHECKS[fn.__name__] = fn
    return fn


def ok(evidence: str) -> Finding:
    return Finding(status=Status.ok, evidence=evidence)


def skip(evidence: str) -> Finding:
    return Finding(status=Status.skip, evidence=evidence)


def info(evidence: str) -> Finding:
    return Finding(status=Status.info, evidence=evidence)


def warn(evidence: str, fix: str | None = None) -> Finding:
    return Finding(status=Status.warn, evidence=evidence, fix=fix)


def fail(evidence: str, fix: str | None = None) -> Finding:
    return Finding(status=Status.fail, evidence=evidence, fix=fix)


def no_torch(ctx: Context) -> Finding | None:
    if ctx.torch.import_error:
        return fail(f"import torch fails: {ctx.torch.import_error}")
    if not ctx.torch.installed:
        return skip("torch is not installed")
    return None


def no_extensions(ctx: Context) -> Finding | None:
    return None if ctx.extensions else skip("no kernel extension (.so/.pyd) installed")


def torch_requires_triton(ctx: Context) -> str | None:
    """The triton requirement of the installed torch's METADATA that applies to this environment, if any."""
    dist = ctx.dist("torch")
    if dist is None:
        return None
    system = {"linux": "Linux", "win32": "Windows", "darwin": "Darwin"}.get(ctx.py.sys_platform, ctx.py.sys_platform)
    environment = {"sys_platform": ctx.py.sys_platform, "platform_system": system,
                   "platform_machine": ctx.py.machine, "python_version": ctx.py.python_minor,
                   "python_full_version": ctx.py.python_version, "implementation_name": ctx.py.implementation,
                   "extra": ""}
    for text in dist.requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.name.lower() in ("triton", "triton-windows", "pytorch-triton") and (
                req.marker is None or req.marker.evaluate(environment)):
            return text
    return None


def triton_spec(ctx: Context) -> str | None:
    if not ctx.torch.version:
        return None
    req = load_compat().triton_requirement(ctx.torch.version, "windows-x86_64" if ctx.is_windows else "linux-x86_64")
    return req[1] if req else None
