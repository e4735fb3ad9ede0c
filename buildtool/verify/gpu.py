"""GPU checks, host side: probe the machine, group the wheels (a mamba-ssm wheel with its causal-conv1d),
install each group with `pip install --no-deps --no-index --target` into its own directory (next to the
current torch, which is never touched), and run the worker in a fresh interpreter per group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.tags import sys_tags
from packaging.version import Version

import buildtool
from buildtool import interp
from buildtool.verify.models import CheckResult, failed, skipped
from buildtool.verify.policy import VerifyPolicy, load_policy
from buildtool.verify.static import OpenedWheel
from buildtool.verify.worker import VIM_REFERENCE_CHECK
from buildtool.wheel.reader import open_wheel_file

# What a GPU run checks per package, listed so that a machine without a GPU can report each as skipped.
PLANNED = {
    "causal-conv1d": ["import extension", "numerics causal_conv1d fwd+bwd", "numerics causal_conv1d_update", "speed causal_conv1d"],
    "mamba-ssm": ["import extension", "numerics selective_scan fwd+bwd", "smoke Mamba", "smoke Mamba2", "speed selective_scan",
                  "import mamba_ssm (public API)"],
    "mamba-ssm-vim": ["import extension", "numerics selective_scan fwd+bwd", "smoke Vim bimamba-v2 block", VIM_REFERENCE_CHECK,
                      "speed selective_scan"],
    "selective-scan": ["import extension", "numerics selective_scan_cuda_core", "numerics selective_scan_cuda_oflex",
                       "smoke VMamba SS2D", "speed selective_scan_cuda_core/oflex"],
}


def kind_of(wc: OpenedWheel) -> str:
    if wc.name.project == "mamba-ssm":
        return "mamba-ssm-vim" if wc.name.label and wc.name.label.prefix == "vim" else "mamba-ssm"
    return wc.name.project


@dataclass
class Group:
    label: str
    wheels: dict[str, OpenedWheel] = field(default_factory=dict)  # key: causal_conv1d | mamba_ssm | selective_scan


def _matches(spec: str, wc: OpenedWheel) -> bool:
    prefix, _, rng = spec.rpartition(":")
    label_prefix = wc.name.label.prefix if wc.name.label else None
    return (prefix or None) == label_prefix and Version(wc.name.version) in SpecifierSet(rng)


def _stable(wc: OpenedWheel) -> bool:
    return bool(wc.name.label and wc.name.label.stable)


def group_wheels(wheels: list[OpenedWheel], policy: VerifyPolicy | None = None) -> tuple[list[Group], list[CheckResult]]:
    """mamba-ssm wheels get the newest causal-conv1d wheel their pairing rule allows; leftover causal-conv1d
    wheels and selective-scan wheels form groups of their own. Unknown packages are reported as skipped."""
    policy = policy or load_policy()
    convs = sorted((w for w in wheels if w.name.project == "causal-conv1d"), key=lambda w: Version(w.name.version), reverse=True)
    used: set[str] = set()
    groups: list[Group] = []
    notes: list[CheckResult] = []
    for w in wheels:
        if w.name.project != "mamba-ssm":
            continue
        g = Group(f"{w.name.dist} {w.name.full_version}")
        g.wheels["mamba_ssm"] = w
        rule = next((p for p in policy.pairing if _matches(p.mamba, w)), None)
        allowed = [c for c in convs if rule and Version(c.name.version) in SpecifierSet(rule.causal_conv1d)]
        # A stable-ABI mamba-ssm pairs with a stable-ABI causal-conv1d (and full with full) when both are given.
        partner = next((c for c in allowed if _stable(c) == _stable(w)), allowed[0] if allowed else None)
        if partner is not None:
            g.wheels["causal_conv1d"] = partner
            g.label += f" + causal_conv1d {partner.name.version}"
            used.add(partner.label)
        else:
            want = rule.causal_conv1d if rule else "(no pairing rule)"
            notes.append(skipped(w.label, "pairing", f"no causal-conv1d wheel {want} among the wheels given; Mamba's "
                                 "fused path needs it, so those checks will fail"))
        groups.append(g)
    for c in convs:
        if c.label not in used:
            groups.append(Group(f"causal_conv1d {c.name.version}", {"causal_conv1d": c}))
    for w in wheels:
        if w.name.project == "selective-scan":
            groups.append(Group(f"selective_scan {w.name.version}", {"selective_scan": w}))
        elif w.name.project not in ("mamba-ssm", "causal-conv1d"):
            notes.append(skipped(w.label, "gpu checks", f"no GPU checks are defined for package {w.name.project}"))
    return groups, notes


def no_gpu_results(wheels: list[OpenedWheel], reason: str) -> list[CheckResult]:
    return [skipped(w.label, check, f"no GPU: {reason}") for w in wheels for check in PLANNED.get(kind_of(w), ["gpu checks"])]


def probe(python: str = sys.executable) -> dict[str, Any]:
    proc = interp.run(python, "-m", "buildtool.verify.worker", "--probe", env=_env([]), timeout=300)
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"error": f"probe failed: {proc.stderr.strip()[-500:]}"}
    data: dict[str, Any] = interp.marked_json(proc.stdout)
    return data


def _env(paths: list[str]) -> dict[str, str]:
    """Group's install dirs first, then the directory holding this buildtool (so the worker imports it)."""
    env = dict(os.environ)
    here = str(Path(buildtool.__file__).resolve().parent.parent)
    parts = [*paths, here, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    return env


def compatible_with_interpreter(wc: OpenedWheel) -> bool:
    tags = {str(t) for t in sys_tags()}
    from packaging.tags import parse_tag
    return any(str(t) in tags for t in parse_tag(f"{wc.name.python_tag}-{wc.name.abi_tag}-{wc.name.platform_tag}"))


def install(group: Group, target: Path, python: str = sys.executable) -> str | None:
    """pip install --no-deps --no-index --target: the wheels only, never torch or anything else."""
    cmd = [python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile", "--disable-pip-version-check",
           "--target", str(target), *[str(w.path) for w in group.wheels.values()]]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 and "No module named pip" in proc.stderr:
        # an interpreter without pip: a wheel without .data is its own install tree
        for w in group.wheels.values():
            with open_wheel_file(w.path, check=False) as wheel:
                if any(".data/" in n.split("/", 1)[0] + "/" for n in wheel.names):
                    return f"{w.label} has a .data directory and there is no pip to install it"
                wheel.extract_all(target)
        return None
    if proc.returncode != 0:
        return f"pip install --target failed: {(proc.stderr or proc.stdout).strip()[-800:]}"
    return None


def run_group(group: Group, *, skip: list[str], bench: bool, timeout: int, python: str = sys.executable,
              keep: Path | None = None, job_overrides: dict[str, Any] | None = None) -> list[CheckResult]:
    """`job_overrides` (fixture tests only): e.g. device "cpu" with stand-in modules, merged into the job."""
    policy = load_policy()
    with tempfile.TemporaryDirectory(prefix="buildtool-verify-") as tmp:
        base = keep / group.label.replace(" ", "_").replace("+", "_") if keep else Path(tmp)
        target = base / "site"
        target.mkdir(parents=True, exist_ok=True)
        problem = install(group, target, python)
        if problem:
            return [failed(w.label, "install", problem) for w in group.wheels.values()]
        job: dict[str, Any] = {
            "label": group.label,
            "sys_path": [str(target)],
            "out": str(base / "results.json"),
            "skip": skip,
            "bench": bench,
            "scan_bench": [b.model_dump() for b in policy.scan_bench],
            "wheels": {
                key: {"wheel": w.label, "version": w.name.version, "vim": kind_of(w) == "mamba-ssm-vim",
                      "modules": w.extension_modules,
                      "cubin_archs": sorted({a for e in w.elves.values() for a in e.cubin_archs}),
                      "ptx_archs": sorted({a for e in w.elves.values() for a in e.ptx_archs})}
                for key, w in group.wheels.items()
            },
        }
        for key, value in (job_overrides or {}).items():
            if key == "wheels":
                for wkey, fields in value.items():
                    job["wheels"][wkey].update(fields)
            else:
                job[key] = value
        job_file = base / "job.json"
        job_file.write_text(json.dumps(job, indent=2))
        try:
            proc = interp.run(python, "-m", "buildtool.verify.worker", str(job_file), env=_env([str(target)]),
                              cwd=base, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [failed(group.label, "gpu checks", f"the worker ran longer than {timeout} s and was stopped")]
        out = base / "results.json"
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip()[-1500:]
            return [failed(group.label, "gpu checks", f"the worker crashed (exit {proc.returncode}): {tail}")]
        return [CheckResult.model_validate(r) for r in json.loads(out.read_text())]
