"""`buildtool install`: resolve -> download with sha256 check -> pip (or uv) install without touching torch -> import.

The kernel wheel goes in with `pip install --no-deps`; its other requirements go in with a constraint
that pins the installed torch, so neither step can replace or upgrade torch (anchors.md pain #8).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from buildtool import interp
from buildtool.errors import BuildError, UserError
from buildtool.model import Frozen
from buildtool.publish.index import Manifest, WheelRecord
from buildtool.user.envinfo import python_of
from buildtool.user.resolve import Resolution, Target, resolve, wheel_url
from buildtool.wheel import tags as wheeltags
from buildtool.wheel.archive import check_wheel_archive
from buildtool.wheel.reader import open_wheel_file

Log = Callable[[str], None]


class HashMismatch(BuildError):
    """A downloaded wheel is not the one the index describes: never installed."""


class Installed(Frozen):
    package: str
    filename: str
    sha256: str
    modules: tuple[str, ...]


class InstallReport(Frozen):
    python: str
    installed: tuple[Installed, ...]
    requirements: tuple[str, ...]
    torch_before: str | None
    torch_after: str | None
    import_ok: bool
    import_output: str


# ---------------------------------------------------------------- download
def download(url: str, dest: Path, expected_sha256: str, timeout: float = 600) -> Path:
    """Stream ``url`` to ``dest`` and verify its sha256; a mismatch deletes the file and raises."""
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as fh:
            for block in iter(lambda: resp.read(1 << 20), b""):
                h.update(block)
                fh.write(block)
    except (urllib.error.URLError, OSError) as exc:
        dest.unlink(missing_ok=True)
        raise BuildError(f"download of {url} failed: {exc}") from None
    got = h.hexdigest()
    if got != expected_sha256:
        dest.unlink(missing_ok=True)
        raise HashMismatch(
            f"sha256 mismatch for {dest.name}: the index says {expected_sha256}, the download is {got}; "
            "refusing to install it",
            hint="the file on the server was changed or corrupted; rebuild the index or report it",
        )
    return dest


def wheel_modules(path: Path) -> tuple[str, ...]:
    """Top-level importable names a wheel installs (packages and extension modules)."""
    names: set[str] = set()
    with open_wheel_file(path, check=False) as wheel:
        for entry in wheel.names:
            top = entry.split("/", 1)[0]
            if top.endswith((".dist-info", ".data")):
                continue
            if "/" in entry:
                if entry == f"{top}/__init__.py":
                    names.add(top)
            elif top.endswith((".py", ".so", ".pyd")):
                names.add(top.split(".", 1)[0])
    return tuple(sorted(names))


# ---------------------------------------------------------------- requirements
def marker_env(target: Target) -> dict[str, str]:
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    py = wheeltags.python_of_tag(target.python_tag)
    env.update(python_version=py, python_full_version=py + ".0")
    if target.platform.startswith("windows"):
        env.update(sys_platform="win32", platform_system="Windows", os_name="nt", platform_machine="AMD64")
    else:
        env.update(sys_platform="linux", platform_system="Linux", os_name="posix",
                   platform_machine=target.platform.split("-", 1)[1])
    return env


def runtime_requirements(record: WheelRecord, target: Target) -> list[Requirement]:
    env = marker_env(target)
    out = []
    for text in record.requires_dist:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        out.append(req)
    return out


def plan(requirements: Sequence[str], manifest: Manifest, target: Target) -> list[Resolution]:
    """Resolve the requested packages and every kernel package they require that the index holds."""
    resolutions: dict[str, Resolution] = {}
    queue = list(requirements)
    in_index = {w.package for w in manifest.wheels}
    while queue:
        text = queue.pop(0)
        name = canonicalize_name(Requirement(text).name)
        if name in resolutions:
            continue
        res = resolve(text, manifest.wheels, target)
        if res.chosen is None:
            lines = "\n".join(f"  {r.filename}: {r.reason}" for r in res.rejected)
            raise UserError(f"no wheel of {text} fits this environment:\n{lines}",
                            hint="`buildtool resolve --explain` shows the environment; build the missing cell with "
                                 "`buildtool matrix --filter ...`")
        resolutions[name] = res
        for req in runtime_requirements(res.chosen, target):
            if canonicalize_name(req.name) in in_index and canonicalize_name(req.name) != "torch":
                queue.append(str(req))
    return list(resolutions.values())


# ---------------------------------------------------------------- the installer (pip or uv)
Installer = Literal["pip", "uv"]


def uv_binary() -> str | None:
    """uv on PATH, else the one installed next to this interpreter."""
    here = Path(sys.executable).parent / "uv"
    return shutil.which("uv") or (str(here) if here.exists() else None)


def pip_command(python: str) -> list[str]:
    """The target's own pip, else this interpreter's pip driving it (`pip --python`, pip >= 22.3)."""
    if interp.run_code(python, "import pip").returncode == 0:
        return [python, "-m", "pip"]
    return [sys.executable, "-m", "pip", "--python", python]


class InstallerCommands(Frozen):
    """The argv prefixes of one installer acting on one environment."""

    name: Installer
    install: tuple[str, ...]
    uninstall: tuple[str, ...]
    reinstall: str            # pip: --force-reinstall, uv: --reinstall


def installer_commands(installer: Installer, python: str) -> InstallerCommands:
    if installer == "uv":
        uv = uv_binary()
        if uv is None:
            raise UserError("--installer uv: uv is not installed", hint="pip install uv, or use --installer pip")
        return InstallerCommands(name="uv", install=(uv, "pip", "install", "--python", python),
                                 uninstall=(uv, "pip", "uninstall", "--python", python), reinstall="--reinstall")
    pip = pip_command(python)
    return InstallerCommands(name="pip", install=(*pip, "install"), uninstall=(*pip, "uninstall", "-y"),
                             reinstall="--force-reinstall")


def installed_version(python: str, dist: str) -> str | None:
    code = (f"import importlib.metadata as m\ntry: print(m.version({dist!r}))\n"
            "except m.PackageNotFoundError: print('')")
    return interp.run_code(python, code).stdout.strip() or None


def _run(cmd: list[str], log: Log, *, passthrough: bool = False) -> None:
    log("$ " + " ".join(cmd))
    if passthrough:   # on a terminal: the installer's own progress shows while it downloads
        code = subprocess.run(cmd).returncode
        if code != 0:
            raise BuildError(f"{' '.join(cmd[:4])} ... failed (exit {code}); its output is above")
        return
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in (proc.stdout + proc.stderr).splitlines():
        log("  " + line)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}):\n{proc.stderr.strip()[-1500:]}")


def installed_dists(python: str) -> dict[str, str]:
    """Every distribution in the environment: canonical name -> version."""
    return {canonicalize_name(k): v for k, v in interp.distributions(python).items()}


def rollback(cmds: InstallerCommands, python: str, before: dict[str, str], log: Log) -> None:
    """After a failed install: remove what it added, put back what it changed (from the installer's cache or the
    index), and say plainly what could not be restored."""
    after = installed_dists(python)
    added = sorted(set(after) - set(before))
    changed = sorted(n for n in after if n in before and after[n] != before[n])
    removed = sorted(set(before) - set(after))
    if added:
        log("rollback: removing " + ", ".join(f"{n} {after[n]}" for n in added))
        subprocess.run([*cmds.uninstall, *added], capture_output=True, text=True)
    if changed or removed:
        log("rollback: restoring " + ", ".join(f"{n}=={before[n]}" for n in changed + removed))
        subprocess.run([*cmds.install, "--no-deps", *(f"{n}=={before[n]}" for n in changed + removed)],
                       capture_output=True, text=True)
    still = installed_dists(python)
    differ = sorted(n for n in set(still) | set(before) if still.get(n) != before.get(n))
    if differ:
        log("rollback incomplete: " + ", ".join(f"{n} {before.get(n, 'absent')} -> {still.get(n, 'absent')}"
                                                for n in differ))
    else:
        log("rollback: the environment is as it was")


def import_check(python: str, modules: Sequence[str], with_torch: bool) -> tuple[bool, str]:
    proc = interp.imports(python, modules, torch_first=with_torch)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def install(
    requirements: Sequence[str], *, python: str, manifest: Manifest, base: str, target: Target,
    index_url: str | None = None, pip_args: Sequence[str] = (), log: Log = lambda _: None,
    check_import: bool = True, installer: Installer = "pip", passthrough: bool = False,
) -> InstallReport:
    """``passthrough``: the requirements step (it can be hundreds of MB from PyPI) shows the installer's own
    output and progress on the terminal instead of capturing it."""
    python = python_of(python)
    resolutions = plan(requirements, manifest, target)
    torch_before = installed_version(python, "torch")
    kernel_names = {r.chosen.package for r in resolutions if r.chosen}
    cmds = installer_commands(installer, python)
    log(f"installer: {cmds.name}")
    with tempfile.TemporaryDirectory(prefix="buildtool-install-") as tmp:
        wheels: list[tuple[WheelRecord, Path]] = []
        modules_of: dict[str, tuple[str, ...]] = {}
        for res in resolutions:
            assert res.chosen is not None
            rec = res.chosen
            url = wheel_url(rec, base)
            log(f"download {url}")
            path = download(url, Path(tmp) / rec.filename, rec.sha256)
            log(f"  sha256 {rec.sha256} ok")
            check_wheel_archive(path)   # a damaged zip never reaches pip (pip can die half way through it)
            wheels.append((rec, path))
            modules_of[rec.filename] = wheel_modules(path)
        others: dict[str, Requirement] = {}
        for rec, _ in wheels:
            for req in runtime_requirements(rec, target):
                name = canonicalize_name(req.name)
                if name != "torch" and name not in kernel_names:
                    others.setdefault(name, req)
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(f"torch=={torch_before}\n" if torch_before else "", encoding="utf-8")
        if not torch_before:
            log("warning: torch is not installed in this environment; the kernels need "
                + ", ".join(sorted({str(r) for rec, _ in wheels for r in runtime_requirements(rec, target)
                                    if canonicalize_name(r.name) == "torch"})))
        extra = ["--extra-index-url", index_url] if index_url else []
        before = installed_dists(python)
        try:
            if others:
                # uv searches --extra-index-url first and stops at the first index that has a package: the
                # kernel site lists only kernel projects, so everything here still comes from PyPI.
                _run([*cmds.install, "-c", str(constraints), *extra, *pip_args,
                      *(str(r) for r in others.values())], log, passthrough=passthrough)
            # By name from a find-links directory holding only the verified wheels: the installer records an
            # index install (no direct_url.json pointing at this temporary directory), so `pip freeze` prints
            # `causal-conv1d==1.7.0+cu130torch2.14cxx11abiTRUE`, which the channel can install again.
            _run([*cmds.install, "--no-deps", cmds.reinstall, "--no-index", "--find-links", tmp,
                  *(f"{rec.package}=={rec.version}" for rec, _ in wheels)], log)
        except BuildError:
            rollback(cmds, python, before, log)
            raise
    torch_after = installed_version(python, "torch")
    if torch_before != torch_after:
        raise BuildError(f"torch changed from {torch_before} to {torch_after}: this must never happen, please report it")
    modules = tuple(m for mods in modules_of.values() for m in mods)
    ok, output = (True, "skipped")
    if check_import:
        ok, output = import_check(python, modules, with_torch=bool(torch_before))
    return InstallReport(
        python=python,
        installed=tuple(Installed(package=rec.package, filename=rec.filename, sha256=rec.sha256,
                                  modules=modules_of[rec.filename]) for rec, _ in wheels),
        requirements=tuple(str(r) for r in others.values()), torch_before=torch_before, torch_after=torch_after,
        import_ok=ok, import_output=output,
    )
