"""Build environment: the Python interpreter and torch a cell's extension is compiled against.

    env = current_env()                                   # --use-current-env: the running interpreter
    env = env_from_python(Path("/opt/venv/bin/python"))   # any interpreter with torch
    env = create_build_env(cell, root)                    # isolated venv with the cell's torch, cached
    check_matches(env, cell)                              # UserError when torch/CUDA/ABI differ from the cell

`BuildEnv` carries what the compile needs from torch: include dirs (torch's own plus Python.h's; the CUDA
toolkit's come from `Toolchain.include_dirs`), the headers of the CUDA library wheels torch depends on
(`cuda_library_include_dirs`: site-packages/nvidia/*/include — cublas, cusparse, cusolver, ... which a
nvcc-only toolkit such as the `pypi` one does not have), the torch library dir and libraries to link,
the C++11 ABI torch was built with, torch's CUDA and the extension-module suffix. Include order for the compile: toolchain includes,
then `include_dirs`, then `cuda_library_include_dirs` (so the toolkit's own cuda_runtime.h wins).

`create_build_env(cell, root, *, index_url=None, installer="pip")`:
- venv at `root/torch<T>-cu<XY>-py<X.Y>-<platform>/` (root is usually `<cache>/buildenvs`), reused when
  complete; built in a temporary sibling, path references in bin/ rewritten, then renamed into place, so
  an interrupted build never leaves a half env behind.
- torch from PyTorch's per-CUDA index (https://download.pytorch.org/whl/cuXY, `index_url` overrides; "{cuda_tag}"
  is substituted), or from PyPI (pip's configured indexes) when the cell's CUDA is the PyPI default build
  of that torch (compat.yaml `pypi_default_cuda`) — e.g. torch 2.14.1 + CUDA 13.0. ninja and numpy too.
- the interpreter: the running one if it is the cell's Python, else `pythonX.Y` on PATH, else
  `uv python find X.Y`; a UserError when none exists.
- torch is introspected in that interpreter (handles `include_paths(device_type="cuda")` and the older
  `include_paths(cuda=True)`), and its CUDA must equal the cell's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from buildtool import interp
from buildtool.errors import BuildError, UserError
from buildtool.model import Frozen
from buildtool.spec.compat import load_compat
from buildtool.spec.matrix import Cell
from buildtool.toolchain.models import load_facts
from buildtool.versions import major_minor, torch_minor

Installer = Literal["pip", "uv"]
MARKER = "buildtool-buildenv.json"
_SENTINEL_CUDA_HOME = "/nonexistent-buildtool-cuda-home"
_JSON_PREFIX = "BUILDTOOL_JSON="

# Runs inside the target interpreter (any Python >= 3.8 with torch): prints one JSON line.
_INTROSPECT = interp.FACTS_CODE + r"""
import glob, json, os, sys
import torch
from torch.utils import cpp_extension as ce
try:
    inc = ce.include_paths(device_type="cuda")
except TypeError:  # torch < 2.6: include_paths(cuda=True)
    inc = ce.include_paths(cuda=True)
sentinel = os.environ["CUDA_HOME"]
inc = [p for p in inc if not p.startswith(sentinel)]
facts = _buildtool_facts()
inc.append(facts["include"])  # Python.h (torch/extension.h includes it)
site = facts["purelib"]
libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
abi = bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", False)) and sys.platform != "win32"
nv = sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
names = ["c10", "torch", "torch_cpu", "torch_python", "c10_cuda", "torch_cuda"]
present = set(os.listdir(libdir)) if os.path.isdir(libdir) else set()
libs = [n for n in names if ("lib%s.so" % n) in present or ("%s.lib" % n) in present]
libdirs = [libdir]
if sys.platform == "win32":  # python3X.lib for the link
    libdirs.append(facts["lib_dir"])
print("BUILDTOOL_JSON=" + json.dumps({
    "python": facts["executable"], "python_version": facts["python_version"],
    "torch_version": torch.__version__, "torch_cuda": torch.version.cuda, "cxx11_abi": abi,
    "include_dirs": inc, "cuda_library_include_dirs": nv, "library_dirs": libdirs,
    "ext_suffix": facts["ext_suffix"],
    "libraries": libs, "torch_lib_dir": libdir, "site_packages": site,
}))
"""


class BuildEnv(Frozen):
    python: Path
    python_version: str  # "3.11.7"
    torch_version: str  # "2.14.1" or "2.4.1+cu124"
    torch_cuda: str | None  # torch.version.cuda: "13.0"; None for a CPU torch
    cxx11_abi: bool
    include_dirs: tuple[Path, ...]
    cuda_library_include_dirs: tuple[Path, ...] = ()
    library_dirs: tuple[Path, ...]
    libraries: tuple[str, ...]
    torch_lib_dir: Path
    site_packages: Path
    ext_suffix: str  # ".cpython-311-x86_64-linux-gnu.so" / ".cp311-win_amd64.pyd"
    origin: Literal["current", "interpreter", "created"] = "interpreter"

    @property
    def python_minor(self) -> str:
        return major_minor(self.python_version)


def introspect(python: Path, origin: Literal["current", "interpreter", "created"] = "interpreter") -> BuildEnv:
    """Ask ``python`` about its torch; UserError when torch cannot be imported there."""
    env = dict(os.environ)
    env["CUDA_HOME"] = _SENTINEL_CUDA_HOME  # keep the toolkit's dirs out: they come from the Toolchain
    env.pop("CUDA_PATH", None)
    try:
        proc = interp.run_code(python, _INTROSPECT, timeout=300, env=env)
    except OSError as exc:
        raise UserError(f"cannot run {python}: {exc}") from None
    data = interp.marked_json(proc.stdout, _JSON_PREFIX)
    if proc.returncode != 0 or data is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(
            f"cannot import torch with {python}: {tail[0]}",
            hint="install the cell's torch into that interpreter, or let buildtool create a build env",
        )
    data["origin"] = origin
    result: BuildEnv = BuildEnv.model_validate(data)
    return result


def current_env() -> BuildEnv:
    """The running interpreter as build env (`--use-current-env`; offline, how the GPU machine builds)."""
    return introspect(Path(sys.executable), origin="current")


def env_from_python(python: Path) -> BuildEnv:
    return introspect(python, origin="interpreter")


def mismatches(env: BuildEnv, cell: Cell) -> list[str]:
    """Every way ``env`` differs from what ``cell`` is labelled with (pure)."""
    problems: list[str] = []
    if env.python_minor != cell.python:
        problems.append(f"Python {env.python_version} (cell: {cell.python})")
    local = env.torch_version.split("+", 1)[0]
    if torch_minor(local) != cell.torch_minor:
        problems.append(f"torch {env.torch_version} (cell: {cell.torch})")
    if env.torch_cuda != cell.cuda:
        problems.append(f"torch built for CUDA {env.torch_cuda or 'none (CPU build)'} (cell: {cell.cuda})")
    if not cell.platform.startswith("windows") and env.cxx11_abi != cell.cxx11_abi:
        problems.append(f"torch C++11 ABI {env.cxx11_abi} (cell: {cell.cxx11_abi})")
    return problems


def check_matches(env: BuildEnv, cell: Cell) -> None:
    problems = mismatches(env, cell)
    if problems:
        raise UserError(
            f"the build env {env.python} does not match cell {cell.id}: " + "; ".join(problems),
            hint="use an interpreter with the cell's torch, or drop --use-current-env to create one",
        )


# --- creating an isolated env ----------------------------------------------------------------------------


def torch_index(cell: Cell, index_url: str | None = None) -> str | None:
    """The index torch comes from; None = pip's configured indexes (PyPI). Pure."""
    facts = load_facts().build_env
    if index_url:
        return index_url.format(cuda_tag=cell.cuda_tag)
    info = load_compat().torch_info(cell.torch)
    if info is not None and info.pypi_default_cuda == cell.cuda and cell.platform in facts.pypi_cuda_platforms:
        return None
    return facts.torch_index.format(cuda_tag=cell.cuda_tag)


def env_key(cell: Cell) -> str:
    return f"torch{cell.torch}-{cell.cuda_tag}-py{cell.python}-{cell.platform}"


def install_commands(python: Path, cell: Cell, index: str | None, installer: Installer) -> list[list[str]]:
    """The install steps for a fresh venv whose interpreter is ``python`` (pure)."""
    extras = list(load_facts().build_env.extra_packages)
    torch_req = f"torch=={cell.torch}"
    if installer == "uv":
        base = ["uv", "pip", "install", "--python", str(python)]
    else:
        base = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    torch_cmd = [*base, torch_req] + (["--index-url", index] if index else [])
    return [torch_cmd, [*base, *extras]]


def _runs_as(candidate: str, version: str) -> bool:
    """True when ``candidate`` starts and is Python ``version`` (a pyenv shim for a version that is
    installed but not selected exits 127; a stale link points nowhere)."""
    return interp.version_of(candidate) == version


def find_python(version: str) -> Path:
    """An interpreter for Python ``version`` ("3.11"): the running one, a working pythonX.Y on PATH, a pyenv
    installation of it, `uv python find`."""
    if interp.running_version() == version:
        return Path(sys.executable)
    tried: list[str] = []
    candidates = [shutil.which(f"python{version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += [str(p) for p in sorted(pyenv_root.glob(f"versions/{version}*/bin/python{version}"), reverse=True)]
    for cand in candidates:
        if cand is None:
            continue
        if _runs_as(cand, version):
            return Path(cand)
        tried.append(f"{cand} (does not run as Python {version})")
    uv = shutil.which("uv")
    if uv:
        proc = subprocess.run([uv, "python", "find", version], capture_output=True, text=True, timeout=60)
        if proc.returncode == 0 and proc.stdout.strip():
            return Path(proc.stdout.strip())
    raise UserError(
        f"no Python {version} interpreter: not the running one ({sys.version.split()[0]}), no working "
        f"python{version} on PATH" + (f" (tried {'; '.join(tried)})" if tried else "")
        + (", `uv python find` found none" if uv else ", no uv"),
        hint=f"install it (`uv python install {version}`, `pyenv install {version}`, or your OS package), "
        "or build with --use-current-env",
    )


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _rewrite_paths(venv: Path, old: str, new: str) -> None:
    """venvs hard-code their location in bin/ (script shebangs, activate) and pyvenv.cfg: retarget them."""
    bindir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    for f in [*bindir.iterdir(), venv / "pyvenv.cfg"]:
        if f.is_symlink() or not f.is_file() or f.stat().st_size > 1_000_000:
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        # Only scripts (shebang), activate* and pyvenv.cfg; binaries such as ninja are left alone.
        if not (text.startswith("#!") or f.name.lower().startswith("activate") or f.name == "pyvenv.cfg"):
            continue
        if old in text:
            f.write_text(text.replace(old, new), encoding="utf-8")


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=3600)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-8:])
        raise BuildError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); log {log}:\n{tail}")


def create_build_env(cell: Cell, root: Path, *, index_url: str | None = None, installer: Installer = "pip") -> BuildEnv:
    """An isolated venv with the cell's torch (see the module docstring); cached under ``root``."""
    final = root / env_key(cell)
    marker = final / MARKER
    if marker.is_file() and _venv_python(final).exists():
        cached = BuildEnv.model_validate_json(marker.read_text(encoding="utf-8"))
        check_matches(cached, cell)
        return cached
    python = find_python(cell.python)
    index = torch_index(cell, index_url)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    log = root / f"{final.name}.log"
    log.write_text(f"# build env for {cell.id}; torch index: {index or 'PyPI (pip configuration)'}\n", encoding="utf-8")
    try:
        if installer == "uv":
            if not shutil.which("uv"):
                raise UserError("installer uv requested but uv is not on PATH", hint="pip install uv, or use the pip installer")
            _run(["uv", "venv", "--python", str(python), str(tmp)], log)
        else:
            _run([str(python), "-m", "venv", str(tmp)], log)
        for cmd in install_commands(_venv_python(tmp), cell, index, installer):
            _run(cmd, log)
        _rewrite_paths(tmp, str(tmp), str(final))
        if final.exists():  # an incomplete env from an interrupted run (no marker)
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    env = introspect(_venv_python(final), origin="created")
    if env.torch_cuda != cell.cuda:
        shutil.rmtree(final, ignore_errors=True)
        raise UserError(
            f"torch {env.torch_version} from {index or 'PyPI'} is built for CUDA {env.torch_cuda or 'none (CPU)'}, "
            f"but cell {cell.id} needs CUDA {cell.cuda}",
            hint="pass --index-url for an index with that build (e.g. https://download.pytorch.org/whl/{cuda_tag})",
        )
    check_matches(env, cell)
    marker.write_text(env.model_dump_json(indent=2), encoding="utf-8")
    return env
