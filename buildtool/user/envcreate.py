"""`buildtool env create`: a venv with the profile's torch, the matched triton and the matched kernel wheels,
finished by `doctor` and an import check.

The plan is pure (matrix profile -> torch, CUDA, ABI, triton, package versions); the side effects
(venv, installs, doctor) follow it step by step.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from packaging.version import Version

from buildtool.errors import BuildError, UserError, allowed_list
from buildtool.host import host_platform
from buildtool.model import Frozen
from buildtool.spec.compat import load_compat
from buildtool.spec.matrix import Cell, Matrix
from buildtool.user.doctor import run_doctor
from buildtool.user.envinfo import probe_python
from buildtool.user.install import InstallReport, install
from buildtool.user.resolve import Target, load_manifest

Log = Callable[[str], None]

# What each --with choice installs. mamba-ssm-vim and mamba-ssm share the import name mamba_ssm, so
# "all" means upstream mamba plus VMamba; Vim gets its own environment.
WITH = {
    "mamba": ("causal-conv1d", "mamba-ssm"),
    "vim": ("causal-conv1d", "mamba-ssm-vim"),
    "vmamba": ("selective-scan",),
    "all": ("causal-conv1d", "mamba-ssm", "selective-scan"),
    "none": (),
}
DEFAULT_PYPI = "https://pypi.org/simple"


class EnvPlan(Frozen):
    profile: str
    platform: str
    python: str
    torch: str
    cuda: str
    cxx11_abi: bool
    torch_index: str
    triton: str | None
    packages: tuple[str, ...]
    cells: tuple[str, ...]


def _conv_fits(mamba: str | None, conv: str) -> bool:
    """The causal_conv1d_fwd API pairing (failures.md F15)."""
    if mamba is None:
        return True
    if Version(mamba) <= Version("2.2.4"):
        return Version(conv) < Version("1.5.1")
    return Version(conv) >= Version("1.5.1")


def plan_env(matrix: Matrix, profile: str, *, python: str | None = None, platform: str | None = None,
             with_: str = "mamba", torch_index: str | None = None, skip_triton: bool = False) -> EnvPlan:
    if with_ not in WITH:
        raise UserError(f'--with {with_}: choose one of {", ".join(WITH)}')
    cells = matrix.select(matrix.expand(), profile)
    platform = platform or host_platform()
    here = [c for c in cells if c.platform == platform]
    if not here:
        raise UserError(f"profile {profile} has no cells for {platform}; it has: "
                        f"{allowed_list(sorted({c.platform for c in cells}))}")
    pythons = sorted({c.python for c in here}, key=Version)
    if python is None:
        mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
        python = mine if mine in pythons else pythons[-1]
    here = [c for c in here if c.python == python]
    if not here:
        raise UserError(f"profile {profile} has no {platform} cells for Python {python}; Pythons: {allowed_list(pythons)}")
    wanted = set(WITH[with_])
    if wanted:
        here = [c for c in here if c.package in wanted]
        if not here:
            raise UserError(f"profile {profile} builds none of {', '.join(sorted(wanted))} for {platform} Python {python}",
                            hint="pick another --with or --profile (`buildtool matrix --list-profiles`)")
    elif not here:
        raise UserError(f"profile {profile} has no cells for {platform} Python {python}")
    torch = max({c.torch for c in here}, key=Version)
    here = [c for c in here if c.torch == torch]
    cuda = max({c.cuda for c in here}, key=Version)
    here = [c for c in here if c.cuda == cuda]
    chosen: dict[str, Cell] = {}
    for pkg in sorted({c.package for c in here}, key=lambda p: p != "causal-conv1d"):
        versions = sorted((c for c in here if c.package == pkg), key=lambda c: Version(c.version), reverse=True)
        chosen[pkg] = versions[0]
    if "causal-conv1d" in chosen:
        mamba = next((chosen[m].version for m in ("mamba-ssm", "mamba-ssm-vim") if m in chosen), None)
        fitting = [c for c in here if c.package == "causal-conv1d" and _conv_fits(mamba, c.version)]
        if fitting:
            chosen["causal-conv1d"] = max(fitting, key=lambda c: Version(c.version))
    first = next(iter(chosen.values())) if chosen else here[0]
    triton = None
    if not skip_triton:
        req = load_compat().triton_requirement(torch, platform)
        triton = f"{req[0]}{req[1]}" if req else None
    return EnvPlan(
        profile=profile, platform=platform, python=python, torch=torch, cuda=cuda, cxx11_abi=first.cxx11_abi,
        torch_index=torch_index or f"https://download.pytorch.org/whl/cu{cuda.replace('.', '')}",
        triton=triton, packages=tuple(f"{c.package}=={c.version}" for c in chosen.values() if wanted),
        cells=tuple(c.id for c in chosen.values()),
    )


# ---------------------------------------------------------------- side effects
class EnvReport(Frozen):
    dir: str
    python: str
    plan: EnvPlan
    torch: str | None
    kernels: InstallReport | None
    doctor_worst: str
    doctor_counts: dict[str, int]
    doctor_problems: tuple[dict[str, Any], ...]
    import_ok: bool


def _run(cmd: Sequence[str], log: Log) -> None:
    log("$ " + " ".join(cmd))
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    for line in (proc.stdout + proc.stderr).splitlines():
        log("  " + line)
    if proc.returncode != 0:
        raise BuildError(f"`{' '.join(cmd[:3])} ...` failed (exit {proc.returncode}):\n{proc.stderr.strip()[-1500:]}")


def torch_index_args(torch_index: str, pypi_index: str | None, installer: str) -> list[str]:
    """Index options that take torch (and triton) from the torch index and everything else from PyPI.
    A local directory of wheels becomes --find-links. uv searches --extra-index-url before --index-url and
    stops at the first index that has a package, so the torch index goes there; pip merges indexes and
    picks the highest version, and 2.6.0+cu124 sorts above PyPI's 2.6.0."""
    pypi = pypi_index or DEFAULT_PYPI
    local = Path(torch_index[len("file://"):] if torch_index.startswith("file://") else torch_index)
    if "://" not in torch_index or torch_index.startswith("file://"):
        if local.is_dir() and not (local / "index.html").exists() and not any(local.glob("*/index.html")):
            return ["--find-links", str(local), "--index-url", pypi]
        torch_index = local.resolve().as_uri()
    if installer == "uv":
        return ["--index-url", pypi, "--extra-index-url", torch_index]
    return ["--index-url", torch_index, "--extra-index-url", pypi]


def create_venv(directory: Path, python: str, installer: str, log: Log) -> Path:
    if directory.exists() and any(directory.iterdir()):
        raise UserError(f"{directory} exists and is not empty", hint="choose a new directory")
    uv = shutil.which("uv") or (str(Path(sys.executable).parent / "uv") if (Path(sys.executable).parent / "uv").exists() else None)
    if installer == "uv":
        if uv is None:
            raise UserError("--installer uv: uv is not installed", hint="pip install uv, or use --installer pip")
        _run([uv, "venv", "-q", "--python", python, str(directory)], log)
    else:
        mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
        interp = sys.executable if mine == python else shutil.which(f"python{python}")
        if interp is None:
            raise UserError(f"no python{python} on PATH to create the venv with", hint="install it, or use --installer uv")
        _run([interp, "-m", "venv", str(directory)], log)
    exe = directory / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    return exe


def installer_command(installer: str, python: Path) -> list[str]:
    if installer == "uv":
        uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
        return [uv, "pip", "install", "--python", str(python)]
    return [str(python), "-m", "pip", "install"]


def default_installer() -> str:
    return "uv" if shutil.which("uv") or (Path(sys.executable).parent / "uv").exists() else "pip"


def create_env(directory: Path, plan: EnvPlan, *, index: str | None, pypi_index: str | None = None,
               installer: str | None = None, log: Log = lambda _: None) -> EnvReport:
    installer = installer or default_installer()
    if plan.packages and not index:
        raise UserError("no kernel index given", hint="pass --index URL (a site from `buildtool index`), set "
                        "BUILDTOOL_INDEX, or use --with none")
    manifest, base = load_manifest(index) if plan.packages else (None, "")
    log(f"1/5 venv {directory} (Python {plan.python}, {installer})")
    python = create_venv(directory, plan.python, installer, log)
    log(f"2/5 torch=={plan.torch} from {plan.torch_index}" + (f" with {plan.triton}" if plan.triton else ""))
    reqs = [f"torch=={plan.torch}", *([plan.triton] if plan.triton else [])]
    _run([*installer_command(installer, python), *torch_index_args(plan.torch_index, pypi_index, installer), *reqs], log)
    env = probe_python(str(python))
    if not env.torch.version:
        raise BuildError(f"torch did not install into {directory}: {env.torch.import_error or 'not importable'}")
    kernels = None
    if plan.packages and manifest is not None:
        log(f"3/5 kernels {', '.join(plan.packages)} from {index}")
        cuda = env.torch.cuda
        if cuda is None:
            log(f"warning: torch {env.torch.version} is a CPU build; resolving kernels for the profile's CUDA {plan.cuda}")
        target = Target(python_tag=env.python_tag, platform=env.platform, glibc=env.glibc, torch=env.torch.version,
                        torch_cuda=cuda or plan.cuda, cxx11_abi=env.torch.cxx11_abi)
        pip_args = ["--index-url", pypi_index] if pypi_index else []
        kernels = install(plan.packages, python=str(python), manifest=manifest, base=base, target=target,
                          index_url=base + "simple/" if base.startswith("http") else None, pip_args=pip_args, log=log)
    log("4/5 doctor")
    report = run_doctor(str(python), cwd=directory)
    log("5/5 import check")
    mods = ["torch", *(m for i in (kernels.installed if kernels else ()) for m in i.modules)]
    proc = subprocess.run([str(python), "-c", "".join(f"import {m}\n" for m in mods)], capture_output=True, text=True)
    problems = tuple(r.model_dump(mode="json") for r in report.results if r.status.value in ("warn", "fail"))
    return EnvReport(
        dir=str(directory), python=str(python), plan=plan, torch=env.torch.version, kernels=kernels,
        doctor_worst=report.worst.value, doctor_counts=report.counts(), doctor_problems=problems,
        import_ok=proc.returncode == 0 and (kernels is None or kernels.import_ok),
    )
