"""Pick the one wheel that runs in an environment, and say why every other candidate does not.

Pure rules over manifest candidates (failures.md): exact torch major.minor (F01), same C++ ABI (F02),
CUDA major of torch (F03), GPU arch embedded (F12), glibc not older than needed (F10), Python tag,
platform (F38). Each rule returns a reason or None; the first reason rejects the candidate.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from buildtool.errors import UserError, allowed_list, did_you_mean
from buildtool.model import Frozen
from buildtool.publish.index import Manifest, WheelRecord, load_manifest_text
from buildtool.spec.archcover import code_for
from buildtool.user.envinfo import Environment
from buildtool.versions import cuda_major, torch_minor
from buildtool.wheel import tags as wheeltags


class Target(Frozen):
    """The environment a wheel must run in (detected, or stated with overrides)."""

    python_tag: str
    platform: str
    glibc: str | None = None
    torch: str | None = None          # full version, e.g. 2.14.1+cu130
    torch_cuda: str | None = None     # torch.version.cuda, None for a CPU build
    cxx11_abi: bool | None = None
    gpu_archs: tuple[str, ...] = ()   # compute capabilities of the GPUs ('9.0')

    @property
    def torch_minor(self) -> str | None:
        if not self.torch:
            return None
        return torch_minor(self.torch)

    @classmethod
    def from_environment(cls, env: Environment, **overrides: Any) -> Target:
        p, t = env.python, env.python.torch
        gpus = tuple(g["cc"] for g in env.host.gpus if g.get("cc")) or tuple(d["cc"] for d in t.devices)
        data: dict[str, Any] = {
            "python_tag": p.python_tag, "platform": p.platform, "glibc": p.glibc,
            "torch": t.version, "torch_cuda": t.cuda, "cxx11_abi": t.cxx11_abi, "gpu_archs": gpus,
        }
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)


class Rejection(Frozen):
    filename: str
    rule: str
    failure: str | None   # the catalogue id this rule prevents
    reason: str


class Resolution(Frozen):
    requirement: str
    target: Target
    chosen: WheelRecord | None
    rejected: tuple[Rejection, ...]
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        return {
            "requirement": self.requirement, "target": self.target.model_dump(),
            "chosen": self.chosen.model_dump() if self.chosen else None,
            "rejected": [r.model_dump() for r in self.rejected], "notes": list(self.notes),
        }


# ---------------------------------------------------------------- rules
def arch_covered(gpu: str, archs: Sequence[str], ptx: str | None) -> bool:
    """Whether a GPU runs any of the code (``buildtool.archcover`` owns the compatibility rules)."""
    return code_for(gpu, archs, ptx) is not None


def _python(w: WheelRecord, t: Target) -> str | None:
    if wheeltags.python_fits(wheeltags.wheel_tags(w.filename), t.python_tag):
        return None
    kind = f"{w.python_tag}-{w.abi_tag} (CPython >= {wheeltags.python_of_tag(w.python_tag)})" if w.abi_tag == "abi3" \
        else w.python_tag
    return f"built for Python {kind}, this Python is {t.python_tag}"


def _platform(w: WheelRecord, t: Target) -> str | None:
    if wheeltags.platform_fits(wheeltags.wheel_tags(w.filename), t.platform):
        return None
    return f"built for {w.platform}, this machine is {t.platform} (wheel tag {w.platform_tag})"


def _glibc(w: WheelRecord, t: Target) -> str | None:
    if not w.min_glibc or not t.glibc or not t.platform.startswith("linux"):
        return None
    if Version(t.glibc) >= Version(w.min_glibc):
        return None
    return f"needs glibc {w.min_glibc}, this system has {t.glibc}"


def _torch_requirement(w: WheelRecord) -> SpecifierSet | None:
    for text in w.requires_dist:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) == "torch" and req.marker is None:
            return req.specifier
    return None


def _torch(w: WheelRecord, t: Target) -> str | None:
    if w.torch is None:
        # Stable-ABI wheels name no torch minor: their Requires-Dist (torch>=FLOOR) is the rule.
        spec = _torch_requirement(w)
        if spec is None or not str(spec):
            return None
        if t.torch is None:
            return f"needs torch{spec}, and torch is not installed (install torch first, or pass --torch)"
        if spec.contains(Version(t.torch).public, prereleases=True):
            return None
        return f"needs torch{spec} (stable ABI floor), installed torch is {t.torch}"
    if t.torch is None:
        return f"built for torch {w.torch}, and torch is not installed (install torch first, or pass --torch)"
    if w.torch != t.torch_minor:
        return f"built for torch {w.torch}, installed torch is {t.torch} (libtorch has no stable C++ ABI across minors)"
    return None


def _cuda(w: WheelRecord, t: Target) -> str | None:
    if w.cuda_major is None or t.torch is None:
        return None
    if t.torch_cuda is None:
        return f"built for CUDA {w.cuda}, installed torch {t.torch} is a CPU-only build (pass --cuda to target a CUDA torch)"
    if w.cuda_major != int(cuda_major(t.torch_cuda)):
        return f"built for CUDA {w.cuda_major}, torch uses CUDA {t.torch_cuda} (libcudart major differs)"
    return None


def _abi(w: WheelRecord, t: Target) -> str | None:
    if w.cxx11_abi is None or t.cxx11_abi is None or not t.platform.startswith("linux"):
        return None
    if w.cxx11_abi == t.cxx11_abi:
        return None
    flag = "TRUE" if t.cxx11_abi else "FALSE"
    return f"built with cxx11abi{'TRUE' if w.cxx11_abi else 'FALSE'}, torch._C._GLIBCXX_USE_CXX11_ABI is {flag}"


def _arch(w: WheelRecord, t: Target) -> str | None:
    if not t.gpu_archs or not w.archs:
        return None
    missing = [g for g in t.gpu_archs if not arch_covered(g, w.archs, w.ptx)]
    if not missing:
        return None
    have = " ".join("sm_" + a.replace(".", "") for a in w.archs) + (f" +PTX sm_{w.ptx.replace('.', '')}" if w.ptx else "")
    return f"no kernel for GPU sm_{', sm_'.join(m.replace('.', '') for m in missing)} (wheel has {have})"


Rule = Callable[[WheelRecord, Target], str | None]
RULES: tuple[tuple[str, str | None, Rule], ...] = (
    ("python", None, _python),
    ("platform", "F38", _platform),
    ("torch", "F01", _torch),
    ("cuda", "F03", _cuda),
    ("abi", "F02", _abi),
    ("glibc", "F10", _glibc),
    ("gpu-arch", "F12", _arch),
)


def parse_requirement(text: str) -> Requirement:
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise UserError(f'"{text}" is not a requirement like mamba-ssm or causal-conv1d==1.7.0: {exc}') from None
    return req


def resolve(requirement: str, candidates: Sequence[WheelRecord], target: Target) -> Resolution:
    req = parse_requirement(requirement)
    name = canonicalize_name(req.name)
    pool = [w for w in candidates if w.package == name]
    if not pool:
        known = sorted({w.package for w in candidates})
        raise UserError(f'no package "{req.name}" in the index{did_you_mean(name, known)}; it has: {allowed_list(known)}')
    rejected: list[Rejection] = []
    accepted: list[WheelRecord] = []
    for w in pool:
        if req.specifier and not req.specifier.contains(w.version, prereleases=True):
            rejected.append(Rejection(filename=w.filename, rule="version", failure=None,
                                      reason=f"version {w.version} does not match {req.specifier}"))
            continue
        for rule, failure, check in RULES:
            reason = check(w, target)
            if reason:
                rejected.append(Rejection(filename=w.filename, rule=rule, failure=failure, reason=reason))
                break
        else:
            accepted.append(w)
    # Newest public version first; among equals, the label whose CUDA equals torch's (12.8 over plain 12), then
    # the tag an installer prefers (cp311-cp311 over cp310-abi3, as packaging.tags orders them).
    def preference(w: WheelRecord) -> tuple[Version, bool, bool, int, str]:
        tag_rank = wheeltags.rank(wheeltags.wheel_tags(w.filename), target.python_tag, target.platform)
        return (Version(w.public_version), w.cuda == target.torch_cuda, "." in (w.cuda or ""),
                -(tag_rank if tag_rank is not None else 1 << 20), w.filename)

    accepted.sort(key=preference, reverse=True)
    notes: list[str] = []
    if not target.gpu_archs:
        notes.append("no GPU seen: the GPU-arch rule was not applied")
    chosen = accepted[0] if accepted else None
    for other in accepted[1:]:
        rejected.append(Rejection(filename=other.filename, rule="preference", failure=None,
                                  reason=f"also fits, but {chosen.filename if chosen else '?'} is preferred (newer, closer CUDA, or a more specific tag)"))
    return Resolution(requirement=requirement, target=target, chosen=chosen, rejected=tuple(rejected), notes=tuple(notes))


# ---------------------------------------------------------------- where candidates come from
def load_manifest(index: str | None = None, manifest: str | Path | None = None, timeout: float = 60) -> tuple[Manifest, str]:
    """(manifest, base) from --manifest FILE or --index URL (a site root, its /simple/, or manifest.json).
    ``base`` is what relative wheel URLs are resolved against."""
    if manifest is not None:
        path = Path(manifest)
        if not path.exists():
            raise UserError(f"manifest {path} does not exist")
        return load_manifest_text(path.read_text(encoding="utf-8"), str(path)), path.resolve().parent.as_uri() + "/"
    if not index:
        raise UserError("no index given", hint="pass --index URL (the site `buildtool index` wrote) or --manifest FILE, "
                        "or set BUILDTOOL_INDEX")
    url = index
    if url.rstrip("/").endswith("/simple"):
        url = url.rstrip("/")[: -len("/simple")]
    if not url.endswith("manifest.json"):
        url = url.rstrip("/") + "/manifest.json"
    if "://" not in url:
        path = Path(url)
        if not path.exists():
            raise UserError(f"index {index}: {path} does not exist")
        return load_manifest_text(path.read_text(encoding="utf-8"), str(path)), path.resolve().parent.as_uri() + "/"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode("utf-8")
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"cannot read {url}: {exc}") from None
    return load_manifest_text(text, url), url.rsplit("/", 1)[0] + "/"


def wheel_url(record: WheelRecord, base: str) -> str:
    return record.url if "://" in record.url else base + record.url


def channel_url(manifest: Manifest, base: str, record: WheelRecord) -> str | None:
    """The channel (sub-index) that serves ``record``: the index URL to give pip or uv for this environment.
    None for a manifest written before channels existed, or a wheel without a CUDA label."""
    channel = manifest.channel(record.channel)
    if channel is None:
        return None
    return channel.url if "://" in channel.url else base + channel.url


def dump(resolution: Resolution) -> str:
    return json.dumps(resolution.summary(), indent=2)
