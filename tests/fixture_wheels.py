"""Test helpers for the user side (index, install, doctor, env create): real wheels, real venvs, real HTTP.

- `make_wheel`: a small but real wheel (METADATA with the local label, WHEEL, RECORD with hashes,
  optional buildtool provenance), built the way a wheel builder must build it.
- `compile_extension`: a real CPython extension (.so) compiled with the host g++, optionally
  referencing libtorch symbols so its import fails the way failures.md F01/F02 describe.
- `serve`: a loopback HTTP server (127.0.0.1, ephemeral port) over a directory.
- `torch_site` / `make_venv`: venvs that see one real torch (the session's torch site-packages),
  linked in by a .pth plus copies of the *.dist-info metadata, so pip and uv both see torch as
  installed without copying gigabytes; nothing in the shared site can be modified from the venv.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from torchenv import torch_env

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
# The torch the tests run against: a site-packages holding torch (and its dependencies).
TORCH_ENV = torch_env()
TORCH_SITE_CANDIDATES = tuple(str(p) for p in (TORCH_ENV / "lib").glob("python3.*/site-packages"))
CPU_TORCH = "torch==2.13.0+cpu"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(
    out_dir: Path, name: str, version: str, *, python_tag: str = "cp311", platform_tag: str = "linux_x86_64",
    files: Mapping[str, bytes | str] | None = None, requires: tuple[str, ...] = (), requires_python: str = ">=3.9",
    provenance: dict[str, object] | None = None, metadata_version: str | None = None, abi_tag: str | None = None,
) -> Path:
    """Write a real wheel. ``version`` is the full version (with the +label); ``metadata_version``
    lets a test write an upstream-style wheel whose METADATA lacks the label (F40)."""
    dist = name.replace("-", "_").lower()
    abi = abi_tag or ("none" if python_tag.startswith("py") else python_tag)
    filename = f"{dist}-{version}-{python_tag}-{abi}-{platform_tag}.whl"
    info = f"{dist}-{metadata_version or version}.dist-info"
    meta_lines = [
        "Metadata-Version: 2.1", f"Name: {name}", f"Version: {metadata_version or version}",
        f"Summary: test fixture {name}", f"Requires-Python: {requires_python}",
        *[f"Requires-Dist: {r}" for r in requires],
    ]
    entries: dict[str, bytes] = {k: v.encode() if isinstance(v, str) else v for k, v in (files or {}).items()}
    entries[f"{info}/METADATA"] = ("\n".join(meta_lines) + "\n\n").encode()
    entries[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: buildtool-tests\nRoot-Is-Purelib: false\nTag: {python_tag}-{abi}-{platform_tag}\n"
    ).encode()
    if provenance is not None:
        entries[f"{info}/buildtool_provenance.json"] = json.dumps(provenance).encode()
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in entries.items()) + f"{info}/RECORD,,\n"
    entries[f"{info}/RECORD"] = record.encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p, d in entries.items():
            zf.writestr(p, d)
    return path


def label(torch_minor: str, cuda: str = "13.0", abi: bool = True) -> str:
    return f"cu{cuda.replace('.', '')}torch{torch_minor}cxx11abi{'TRUE' if abi else 'FALSE'}"


EXT_TEMPLATE = r"""
#include <Python.h>
#include <cstdlib>
%(decls)s
static PyObject* touch(PyObject*, PyObject*) { (void)getenv("BUILDTOOL_X"); %(calls)s Py_RETURN_NONE; }
static PyMethodDef methods[] = {{"touch", touch, METH_NOARGS, "touch"}, {nullptr, nullptr, 0, nullptr}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "%(name)s", nullptr, -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModule_Create(&mod); }
"""


def compile_extension(work: Path, module: str, *, decls: str = "", calls: str = "", flags: tuple[str, ...] = (),
                      suffix: str | None = None) -> tuple[str, bytes]:
    """(file name, bytes) of a real extension module compiled with g++ against this Python."""
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"{module}.cpp"
    src.write_text(EXT_TEMPLATE % {"decls": decls, "calls": calls, "name": module})
    name = module + (suffix or sysconfig.get_config_var("EXT_SUFFIX"))
    out = work / name
    subprocess.run(["g++", "-shared", "-fPIC", "-O0", f"-I{sysconfig.get_paths()['include']}", *flags, str(src),
                    "-o", str(out)], check=True, capture_output=True)
    return name, out.read_bytes()


# A libtorch symbol whose signature changed between torch minors (failures.md F01): c10::cuda::SetDevice(int).
OLD_TORCH_DECL = "namespace c10 { namespace cuda { void SetDevice(int); } }"
OLD_TORCH_CALL = "c10::cuda::SetDevice(0);"
# A pre-C++11-ABI std::string in a c10 signature (F02): compiled with -D_GLIBCXX_USE_CXX11_ABI=0.
ABI0_DECL = "#include <string>\nnamespace c10 { void warn_legacy(const std::string&); }"
ABI0_CALL = 'c10::warn_legacy(std::string("x"));'


# ---------------------------------------------------------------- HTTP
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- venvs
def clean_env(**extra: str) -> dict[str, str]:
    """Subprocess environment without this machine's pip config (find-links, extra indexes, constraints)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_")) and k != "VIRTUAL_ENV"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_CONFIG="1", **extra)
    return env


def uv_bin() -> str | None:
    cand = Path(PY).parent / "uv"
    return str(cand) if cand.exists() else shutil.which("uv")


def find_torch_site(cache: Path) -> Path:
    """A site-packages with a real torch: $BUILDTOOL_TEST_TORCH_SITE, the shared torch venv, or
    torch==2.13.0+cpu installed once with pip from the machine's local wheel store (pip config)."""
    env = os.environ.get("BUILDTOOL_TEST_TORCH_SITE")
    for cand in ([env] if env else []) + list(TORCH_SITE_CANDIDATES):
        if cand and (Path(cand) / "torch" / "__init__.py").exists():
            return Path(cand)
    target = cache / "torch-site"
    if (target / "torch" / "__init__.py").exists():
        return target
    proc = subprocess.run([PY, "-m", "pip", "install", "--quiet", "--target", str(target), CPU_TORCH],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        pytest.skip(f"no torch for test venvs: set BUILDTOOL_TEST_TORCH_SITE, or make `pip install {CPU_TORCH}` "
                    f"work offline (it failed: {proc.stderr.strip()[-300:]})")
    return target


def make_venv(path: Path, torch_site: Path | None = None, *, with_pip: bool = False,
              exclude: tuple[str, ...] = ()) -> Path:
    """A fresh venv (uv when present and no pip is wanted, else venv); returns its python."""
    uv = uv_bin()
    if uv and not with_pip:
        subprocess.run([uv, "venv", "-q", "--python", PY, str(path)], check=True, env=clean_env())
    else:
        subprocess.run([PY, "-m", "venv", str(path)], check=True)
        # ensurepip's old setuptools would shadow the torch site's (torch requires setuptools>=77)
        subprocess.run([str(path / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", "setuptools"],
                       check=True, env=clean_env())
    python = path / "bin" / "python"
    if torch_site is not None:
        site = Path(subprocess.run([str(python), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        (site / "zz_buildtool_torch_site.pth").write_text(str(torch_site) + "\n")
        for info in torch_site.glob("*.dist-info"):
            if info.name.split("-")[0].lower() not in ("pip", *exclude):
                shutil.copytree(info, site / info.name)
    return python


def torch_facts(python: Path) -> dict[str, object]:
    code = ("import json,torch;print(json.dumps({'version':torch.__version__,'cuda':torch.version.cuda,"
            "'abi':bool(torch._C._GLIBCXX_USE_CXX11_ABI),'file':torch.__file__}))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout
    facts: dict[str, object] = json.loads(out)
    return facts


def buildtool(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "buildtool", *args], capture_output=True, text=True, env=env or clean_env(),
                          cwd=cwd)


def pip_install(python: Path, *wheels: Path, env: dict[str, str] | None = None) -> None:
    """Install wheel files without dependencies (pip writes direct_url.json, as for a user's URL install)."""
    proc = subprocess.run([PY, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", *map(str, wheels)],
                          capture_output=True, text=True, env=env or clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
