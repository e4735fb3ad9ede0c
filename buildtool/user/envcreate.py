"""`buildtool env create`: a venv with the profile's torch, the matched triton and the matched kernel wheels,
finished by `doctor` and an import check.

The plan is pure (matrix profile -> torch, CUDA, ABI, triton, package versions); the side effects
(venv, installs, doctor) follow it step by step.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from packaging.version import Version

from buildtool import interp
from buildtool.errors import BuildError, BuildtoolError, UserError, allowed_list
from buildtool.host import host_platform
from buildtool.model import Frozen
from buildtool.publish.index import Manifest
from buildtool.spec.compat import load_compat
from buildtool.spec.matrix import Cell, Matrix
from buildtool.user.doctor import run_doctor
from buildtool.user.envinfo import probe_python
from buildtool.user.install import InstallReport, install, uv_binary
from buildtool.user.resolve import Target, load_manifest, resolve

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
    # Requested with --with but not built by the profile for this platform/Python/torch: planned by name, so the
    # pre-check takes the newest wheel of the index that fits (a stable-ABI wheel, say) or names it as missing.
    not_in_profile: tuple[str, ...] = ()


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
        mine = interp.running_version()
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
    not_in_profile = tuple(p for p in WITH[with_] if p not in chosen)
    return EnvPlan(
        profile=profile, platform=platform, python=python, torch=torch, cuda=cuda, cxx11_abi=first.cxx11_abi,
        torch_index=torch_index or f"https://download.pytorch.org/whl/cu{cuda.replace('.', '')}",
        triton=triton, packages=tuple(f"{c.package}=={c.version}" for c in chosen.values() if wanted) + not_in_profile,
        cells=tuple(c.id for c in chosen.values()), not_in_profile=not_in_profile,
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
    dropped: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """0: created and doctor clean; 1: created, but doctor warns/fails, a package was dropped or an import
        failed (the final line says which). 2 (a UserError) means nothing was created."""
        return 0 if self.import_ok and self.doctor_worst not in ("warn", "fail") and not self.dropped else 1


def _run(cmd: Sequence[str], log: Log) -> None:
    log("$ " + shlex.join(cmd))
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    for line in (proc.stdout + proc.stderr).splitlines():
        log("  " + line)
    if proc.returncode != 0:
        raise BuildError(f"`{shlex.join(cmd[:3])} ...` failed (exit {proc.returncode}):\n{proc.stderr.strip()[-1500:]}")


def _run_live(cmd: Sequence[str], log: Log, *, passthrough: bool) -> None:
    """A long step (torch: gigabytes) with the installer's own progress visible while it runs: on a terminal
    its output goes straight through (pip's and uv's progress bars); otherwise each line is logged as it comes."""
    log("$ " + shlex.join(cmd))
    if passthrough:
        code = subprocess.run(list(cmd)).returncode
        if code != 0:
            raise BuildError(f"`{shlex.join(cmd[:3])} ...` failed (exit {code}); its output is above")
        return
    tail: list[str] = []
    with subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log("  | " + line.rstrip())
            tail = [*tail[-40:], line.rstrip()]
    if proc.returncode != 0:
        raise BuildError(f"`{shlex.join(cmd[:3])} ...` failed (exit {proc.returncode}):\n" + "\n".join(tail[-15:]))


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


def check_target_dir(directory: Path) -> None:
    """DIR must be new or an empty directory; say plainly what it is otherwise."""
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} exists and is not a directory (a {'symlink' if directory.is_symlink() else 'file'})",
                        hint="choose a new DIR; env create makes the directory itself")
    if directory.is_dir() and any(directory.iterdir()):
        raise UserError(f"{directory} exists and is not empty",
                        hint="choose a new DIR, or delete it (a failed or interrupted env create removes what it made, "
                             "so this is not a leftover of one)")


def _uv() -> str | None:
    return uv_binary()


def venv_interpreter(python: str, installer: str) -> str:
    """The interpreter the venv is made from, found before anything is created."""
    if installer == "uv":
        uv = _uv()
        if uv is None:
            raise UserError("--installer uv: uv is not installed", hint="pip install uv, or use --installer pip")
        return python   # uv finds (or fetches) the interpreter itself
    found = sys.executable if interp.running_version() == python else shutil.which(f"python{python}")
    if found is None:
        raise UserError(f"no python{python} on PATH to create the venv with", hint="install it, or use --installer uv")
    return found


def create_venv(directory: Path, python: str, installer: str, log: Log) -> Path:
    check_target_dir(directory)
    interp = venv_interpreter(python, installer)
    if installer == "uv":
        _run([_uv() or "uv", "venv", "-q", "--python", python, str(directory)], log)
    else:
        _run([interp, "-m", "venv", str(directory)], log)
    exe = directory / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    return exe


def installer_command(installer: str, python: Path) -> list[str]:
    if installer == "uv":
        return [_uv() or "uv", "pip", "install", "--python", str(python)]
    # pip: give up on an unreachable index in seconds, as uv does, instead of retrying for minutes
    return [str(python), "-m", "pip", "install", "--retries", "1", "--timeout", "30"]


def default_installer() -> str:
    return "uv" if _uv() else "pip"


# ---------------------------------------------------------------- the plan, checked before anything is made
class Preflight(Frozen):
    """What env create will do, every fact checked before a byte is downloaded."""

    installer: str
    interpreter: str
    kernels: tuple[str, ...]          # wheel file names that will be installed
    dropped: tuple[str, ...]          # requested packages without a wheel, dropped with --allow-missing
    torch_from: str
    steps: tuple[str, ...]


def _reachable(url: str, timeout: float = 15) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read(1)
    except (urllib.error.URLError, OSError) as exc:
        return str(exc)
    return None


def _host_glibc() -> str | None:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").split()[-1] if sys.platform.startswith("linux") else None  # type: ignore[union-attr]
    except (ValueError, OSError, AttributeError):
        return None


def preflight(directory: Path, plan: EnvPlan, *, manifest: Manifest | None, installer: str,
              pypi_index: str | None = None, allow_missing: bool = False) -> Preflight:
    """Every fact the manifest, the indexes and this machine can tell, checked up front: DIR, the installer
    and interpreter, a wheel for every requested package (for this Python, torch, CUDA, ABI, glibc), the torch
    source. Raises UserError naming each problem; nothing has been created or downloaded."""
    check_target_dir(directory)
    interpreter = venv_interpreter(plan.python, installer)
    kernels: list[str] = []
    dropped: list[str] = []
    if plan.packages and manifest is not None:
        target = Target(python_tag="cp" + plan.python.replace(".", ""), platform=plan.platform, glibc=_host_glibc(),
                        torch=plan.torch, torch_cuda=plan.cuda, cxx11_abi=plan.cxx11_abi)
        problems = []
        versions: dict[str, str] = {}
        for req in plan.packages:
            where = f" (profile {plan.profile} does not build it here; looked for any wheel in the index)" \
                if req in plan.not_in_profile else ""
            try:
                res = resolve(req, manifest.wheels, target)
            except BuildtoolError as exc:
                problems.append(f"{req}: {exc.message}{where}")
                continue
            if res.chosen is None:
                why = "; ".join(sorted({r.reason for r in res.rejected if r.rule != "preference"})) or "no candidates"
                problems.append(f"{req}: no wheel for Python {plan.python}, torch {plan.torch}, CUDA {plan.cuda} "
                                f"on {plan.platform} ({why}){where}")
            else:
                kernels.append(res.chosen.filename)
                versions[res.chosen.package] = res.chosen.public_version
        mamba = versions.get("mamba-ssm") or versions.get("mamba-ssm-vim")
        if mamba and "causal-conv1d" in versions and not _conv_fits(mamba, versions["causal-conv1d"]):
            conv = next(r for r in plan.packages if r.split("==", 1)[0] == "causal-conv1d")
            problems.append(f"{conv}: {versions['causal-conv1d']} does not fit mamba-ssm {mamba}'s "
                            "causal_conv1d_fwd API (failures.md F15)")
        if problems and not allow_missing:
            raise UserError("the index cannot serve this environment:\n  " + "\n  ".join(problems),
                            hint="build the missing cells, pick another --python/--profile, or pass --allow-missing "
                                 "to create the environment without them")
        dropped = [p.split(":", 1)[0] for p in problems]
    local = Path(plan.torch_index[7:] if plan.torch_index.startswith("file://") else plan.torch_index)
    if "://" not in plan.torch_index or plan.torch_index.startswith("file://"):
        if not local.exists():
            raise UserError(f"--torch-index {plan.torch_index} does not exist")
        if local.is_dir() and not any(local.glob(f"torch-{plan.torch}*.whl")) and not (local / "torch").exists() \
                and not (local / "index.html").exists():
            raise UserError(f"--torch-index {local} has no torch-{plan.torch} wheel")
        torch_from = str(local)
    else:
        unreachable = _reachable(plan.torch_index.rstrip("/") + "/torch/")
        if unreachable:
            raise UserError(f"the torch index {plan.torch_index} is not reachable ({unreachable})",
                            hint="pass --torch-index with a reachable index or a directory of torch wheels")
        torch_from = plan.torch_index
    pypi = pypi_index or DEFAULT_PYPI
    if "://" in pypi and not pypi.startswith("file://"):
        unreachable = _reachable(pypi.rstrip("/") + "/pip/")
        if unreachable:
            raise UserError(f"the package index {pypi} is not reachable ({unreachable})", hint="pass --pypi-index")
    steps = (
        f"venv {directory} (Python {plan.python}, {installer})",
        f"torch=={plan.torch} from {torch_from}" + (f" with {plan.triton}" if plan.triton else ""),
        f"kernels: {', '.join(kernels) or 'none'}" + (f" (dropped: {', '.join(dropped)})" if dropped else ""),
        "doctor", "import check",
    )
    return Preflight(installer=installer, interpreter=interpreter, kernels=tuple(kernels), dropped=tuple(dropped),
                     torch_from=torch_from, steps=steps)


def create_env(directory: Path, plan: EnvPlan, *, index: str | None, pypi_index: str | None = None,
               installer: str | None = None, log: Log = lambda _: None, allow_missing: bool = False,
               passthrough: bool = False) -> EnvReport:
    """Plan checked first (`preflight`), then venv -> torch -> kernels -> doctor -> import. A failure or Ctrl-C
    removes DIR again (the installers' caches keep what was downloaded, so a re-run does not start over)."""
    installer = installer or default_installer()
    if plan.packages and not index:
        raise UserError("no kernel index given", hint="pass --index URL (a site from `buildtool index`), set "
                        "BUILDTOOL_INDEX, or use --with none")
    manifest, base = load_manifest(index) if plan.packages else (None, "")
    pre = preflight(directory, plan, manifest=manifest, installer=installer, pypi_index=pypi_index,
                    allow_missing=allow_missing)
    log(f"installer: {installer}" + (" (uv found)" if installer == "uv" else ""))
    for i, step in enumerate(pre.steps, 1):
        log(f"plan {i}/5: {step}")
    packages = tuple(p for p in plan.packages if p.split(":", 1)[0] not in pre.dropped)
    made = not directory.exists()
    try:
        return _create(directory, plan, packages, manifest, base, pypi_index, installer, log, passthrough, pre)
    except BaseException as exc:
        if made and directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
            log(f"removed {directory} ({'interrupted' if isinstance(exc, KeyboardInterrupt) else 'failed'}); "
                "downloads stay in the pip/uv cache, a re-run reuses them")
        raise


def _create(directory: Path, plan: EnvPlan, packages: tuple[str, ...], manifest: Manifest | None, base: str,
            pypi_index: str | None, installer: str, log: Log, passthrough: bool, pre: Preflight) -> EnvReport:
    log(f"1/5 venv {directory} (Python {plan.python}, {installer})")
    python = create_venv(directory, plan.python, installer, log)
    log(f"2/5 torch=={plan.torch} from {plan.torch_index}" + (f" with {plan.triton}" if plan.triton else ""))
    reqs = [f"torch=={plan.torch}", *([plan.triton] if plan.triton else [])]
    _run_live([*installer_command(installer, python), *torch_index_args(plan.torch_index, pypi_index, installer), *reqs],
              log, passthrough=passthrough)
    env = probe_python(str(python))
    if not env.torch.version:
        raise BuildError(f"torch did not install into {directory}: {env.torch.import_error or 'not importable'}")
    kernels = None
    if packages and manifest is not None:
        log(f"3/5 kernels {', '.join(packages)}")
        cuda = env.torch.cuda
        if cuda is None:
            log(f"warning: torch {env.torch.version} is a CPU build; resolving kernels for the profile's CUDA {plan.cuda}")
        target = Target(python_tag=env.python_tag, platform=env.platform, glibc=env.glibc, torch=env.torch.version,
                        torch_cuda=cuda or plan.cuda, cxx11_abi=env.torch.cxx11_abi)
        pip_args = ["--index-url", pypi_index] if pypi_index else []
        kernels = install(packages, python=str(python), manifest=manifest, base=base, target=target,
                          index_url=base + "simple/" if base.startswith("http") else None, pip_args=pip_args, log=log,
                          installer="uv" if installer == "uv" else "pip",   # one installer per run
                          passthrough=passthrough, check_import=False)   # step 5 imports the same modules
    log("4/5 doctor")
    report = run_doctor(str(python), cwd=directory)
    log("5/5 import check")
    mods = ["torch", *(m for i in (kernels.installed if kernels else ()) for m in i.modules)]
    proc = interp.imports(python, mods, torch_first=False)
    problems = tuple(r.model_dump(mode="json") for r in report.results if r.status.value in ("warn", "fail"))
    return EnvReport(
        dir=str(directory), python=str(python), plan=plan, torch=env.torch.version, kernels=kernels,
        doctor_worst=report.worst.value, doctor_counts=report.counts(), doctor_problems=problems,
        import_ok=proc.returncode == 0 and (kernels is None or kernels.import_ok), dropped=pre.dropped,
    )
