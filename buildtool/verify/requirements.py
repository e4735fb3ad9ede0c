"""Declared requirements, verified (DESIGN decision 9): what a wheel declares must install and import.

In a fresh venv that sees the verifying interpreter's torch (the cell's torch: linked in by a .pth, its
dist-info copied, so pip treats it as installed and a constraint keeps it), pip installs the wheel with its
requirements resolved from the index as pip resolves them *today*, then every public module of the wheel is
imported in a subprocess (`import torch` first; a CUDA extension loads without a GPU). A requirement that
drifted into a broken version (tilelang 0.1.8 + apache-tvm-ffi 0.1.15: ValueError at import) fails here,
with the module, the error and the versions pip chose. Without a reachable index the check is skipped with
the reason; it needs no GPU.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from buildtool import interp
from buildtool.verify.models import CheckResult, failed, passed, skipped
from buildtool.verify.static import OpenedWheel
from buildtool.wheel import tags as wheeltags

CHECK = "declared requirements"
KERNEL_PROJECTS = ("causal-conv1d", "mamba-ssm", "mamba-ssm-vim", "selective-scan")
PYPI = "https://pypi.org/simple/"
_SKIP_PARTS = {"tests", "test", "benchmarks", "examples"}

_IMPORT_ALL = r"""
import importlib, json, sys, traceback
mods = json.loads(sys.argv[1])
out = {}
try:
    import torch  # kernel extensions need libtorch loaded first
except Exception as e:
    out["torch"] = type(e).__name__ + ": " + str(e)
for m in mods:
    try:
        importlib.import_module(m)
    except BaseException as e:
        out[m] = (type(e).__name__ + ": " + str(e)).splitlines()[0][:400]
print("BUILDTOOL-IMPORTS" + json.dumps(out))
"""


def index_unreachable(index: str, timeout: float = 10) -> str | None:
    """None when the index answers, else why not (the check is then skipped, not failed)."""
    try:
        with urllib.request.urlopen(index.rstrip("/") + "/pip/", timeout=timeout) as resp:
            resp.read(1)
    except (urllib.error.URLError, OSError) as exc:
        return f"{index} is not reachable ({exc}); the declared requirements cannot be resolved offline"
    return None


def public_modules(names: Sequence[str]) -> list[str]:
    """Every importable module of a wheel except private ones (`_x`) and test/benchmark trees: packages,
    `.py` modules and extension modules, by dotted name."""
    found: set[str] = set()
    for name in names:
        top = name.split("/", 1)[0]
        if top.endswith((".dist-info", ".data")):
            continue
        parts = name.split("/")
        stem = parts[-1]
        if stem.endswith(".py"):
            leaf = stem[:-3]
        elif stem.endswith((".so", ".pyd")):
            leaf = stem.split(".", 1)[0]
        else:
            continue
        mod = [*parts[:-1]] if leaf == "__init__" else [*parts[:-1], leaf]
        if not mod or any(p.startswith("_") for p in mod) or _SKIP_PARTS & set(mod) or "-" in "".join(mod):
            continue
        if len(parts) > 1 and f"{'/'.join(parts[:-1])}/__init__.py" not in names:
            continue   # a directory that is not a package (data files, namespace-less trees)
        found.add(".".join(mod))
    return sorted(found, key=lambda m: (m.count("."), m))


def torch_site(python: str) -> tuple[Path, str] | None:
    """(site-packages holding torch, torch version) of the verifying interpreter, or None without torch."""
    # the distribution's version (PyPI's CUDA torch: 2.14.1, while torch.__version__ is 2.14.1+cu130)
    code = ("import os, torch, importlib.metadata as m; print(os.path.dirname(os.path.dirname(torch.__file__))); "
            "print(m.version('torch'))")
    proc = interp.run_code(python, code)
    if proc.returncode != 0:
        return None
    site, version = proc.stdout.strip().splitlines()[-2:]
    return Path(site), version


def _venv_with_torch(root: Path, python: str, site: Path) -> Path:
    subprocess.run([python, "-m", "venv", "--without-pip", str(root)], check=True, capture_output=True)
    venv_python = root / "bin" / "python"
    purelib = Path(interp.facts(venv_python).purelib)
    (purelib / "zz_buildtool_torch.pth").write_text(f"{site}\n", encoding="utf-8")
    for info in site.glob("*.dist-info"):
        if info.name.split("-")[0].lower() not in ("pip", "setuptools"):
            shutil.copytree(info, purelib / info.name)
    return venv_python


def check_declared_requirements(wc: OpenedWheel, *, python: str = sys.executable, index: str = PYPI,
                                keep: Path | None = None) -> CheckResult:
    label = wc.path.name
    reason = index_unreachable(index)
    if reason:
        return skipped(label, CHECK, reason)
    found = torch_site(python)
    if found is None:
        return skipped(label, CHECK, f"{python} has no importable torch to install next to")
    site, torch_version = found
    # the verifying interpreter's CPython (`buildtool verify --python` may name another one than buildtool's)
    version = interp.version_of(python)
    py_tag = "cp" + version.replace(".", "") if version else None
    if py_tag and not wheeltags.python_fits(wheeltags.wheel_tags(wc.path.name), py_tag):
        return skipped(label, CHECK, f"tags {wc.name.python_tag}-{wc.name.abi_tag} do not fit {py_tag}")
    work = Path(tempfile.mkdtemp(prefix="buildtool-reqs-", dir=keep))
    try:
        venv_python = _venv_with_torch(work / "venv", python, site)
        before = interp.distributions(venv_python)
        constraints = work / "constraints.txt"
        constraints.write_text(f"torch=={torch_version}\n", encoding="utf-8")
        # Sibling wheels of the wheelhouse satisfy kernel requirements (Vim's fork needs causal-conv1d 1.1.x);
        # a kernel's sdist is never built here (an hour of nvcc, and not what a user of the wheel gets).
        cmd = [sys.executable, "-m", "pip", "--python", str(venv_python), "install", "--disable-pip-version-check",
               "--no-input", "--index-url", index, "--find-links", str(wc.path.parent),
               "--only-binary", ",".join(KERNEL_PROJECTS), "-c", str(constraints), str(wc.path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_pip_env())
        if proc.returncode != 0:
            return failed(label, CHECK, "pip cannot install it with its requirements next to torch "
                          f"{torch_version}: {(proc.stderr or proc.stdout).strip()[-700:]}")
        after = interp.distributions(venv_python)
        chosen = sorted(f"{k} {v}" for k, v in after.items() if before.get(k) != v and k.lower() != wc.name.project)
        modules = public_modules(wc.names)
        imp = interp.run_code(venv_python, _IMPORT_ALL, json.dumps(modules))
        errors: dict[str, str] | None = interp.marked_json(imp.stdout, "BUILDTOOL-IMPORTS")
        if errors is None:
            return failed(label, CHECK, f"the import run crashed (exit {imp.returncode}): {imp.stderr.strip()[-500:]}",
                          modules=len(modules))
        resolved = ", ".join(chosen) or "nothing beyond what torch brought"
        if errors:
            first = next(iter(errors.items()))
            return failed(label, CHECK, f"{len(errors)} of {len(modules)} public modules fail to import after pip "
                          f"resolved its requirements ({resolved}); {first[0]}: {first[1]}",
                          modules=len(modules), failing=len(errors))
        return passed(label, CHECK, f"{len(modules)} public modules import next to torch {torch_version}; pip "
                      f"resolved: {resolved}", modules=len(modules))
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _pip_env() -> dict[str, str]:
    """This machine's pip configuration (find-links, constraints) must not change what is resolved."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "VIRTUAL_ENV"}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env
