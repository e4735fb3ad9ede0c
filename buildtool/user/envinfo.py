"""Environment detection: what a Python environment and its host offer to a CUDA kernel wheel.

Two halves. The *probe* runs inside the target interpreter (a venv's python, possibly without buildtool)
as a stdlib-only script and prints JSON: Python tags, glibc, torch's version/CUDA/ABI, installed
distributions and where the kernel modules live. Importing torch happens there, in a subprocess, so a
crashing or slow torch never takes buildtool down. The *host* half runs here: nvidia-smi, nvcc, gcc.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from buildtool import interp
from buildtool.errors import UserError
from buildtool.model import Frozen
from buildtool.versions import cuda_major, major_minor
from buildtool.wheel.provenance import Provenance, ProvenanceError, parse_provenance

# Distributions and extension modules the doctor and the resolver care about.
KERNEL_DISTS = ("causal-conv1d", "mamba-ssm", "mamba-ssm-vim", "selective-scan")
WATCHED_DISTS = (*KERNEL_DISTS, "torch", "triton", "triton-windows", "transformers", "pip", "packaging",
                 "tilelang", "apache-tvm-ffi")   # the last two: data/known_bad.yaml
EXTENSION_MODULES = ("causal_conv1d_cuda", "selective_scan_cuda", "selective_scan_cuda_oflex", "selective_scan_cuda_core")
PYTHON_MODULES = (
    "causal_conv1d", "causal_conv1d.cpp_functions", "mamba_ssm", "mamba_ssm.ops.triton.layer_norm",
    "mamba_ssm.ops.triton.layernorm", "mamba_ssm.ops.triton.layernorm_gated", "mamba_ssm.modules.mamba_simple",
    "triton",
)
ENV_VARS = (
    "CUDA_HOME", "CUDA_PATH", "HOME", "USERPROFILE", "CC", "CXX", "CUDAHOSTCXX", "NVCC_PREPEND_FLAGS",
    "NVCC_APPEND_FLAGS", "TORCH_CUDA_ARCH_LIST",
    "TRITON_LIBCUDA_PATH", "TRITON_CACHE_DIR", "NVIDIA_PYTORCH_VERSION", "NVIDIA_PRODUCT_NAME", "LD_LIBRARY_PATH",
    "CPLUS_INCLUDE_PATH", "CPATH", "INCLUDE", "PIP_CACHE_DIR", "VIRTUAL_ENV",
)

# Runs in the target interpreter after interp.FACTS_CODE: stdlib only, never fails as a whole (each part
# records its own error).
PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, platform, sys
WATCHED = %(watched)r
EXTS = %(exts)r
MODS = %(mods)r
ENVS = %(envs)r
def spec_origin(name):
    try:
        s = importlib.util.find_spec(name)
    except Exception as e:
        return {"error": type(e).__name__ + ": " + str(e)}
    return None if s is None else {"origin": s.origin}
facts = _buildtool_facts()
out = {
  "python_version": facts["release"],
  "implementation": sys.implementation.name,
  "executable": facts["executable"],
  "prefix": sys.prefix,
  "sys_platform": facts["platform"],
  "machine": platform.machine(),
  "glibc": (os.confstr("CS_GNU_LIBC_VERSION").split()[-1] if hasattr(os, "confstr") and sys.platform.startswith("linux") else None),
  "ext_suffix": facts["ext_suffix"],
  "include_dir": facts["include"],
  "purelib": facts["purelib"],
  "base_prefix": sys.base_prefix,
  "env": {k: os.environ[k] for k in ENVS if k in os.environ},
  "cwd": os.getcwd(),
  "dists": {},
  "extensions": {n: spec_origin(n) for n in EXTS},
  "modules": {},
}
for name in WATCHED:
    try:
        d = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    files = [str(f) for f in (d.files or []) if str(f).endswith((".so", ".pyd"))]
    direct = d.read_text("direct_url.json")
    prov = d.read_text("buildtool_provenance.json")
    wheel = d.read_text("WHEEL") or ""
    out["dists"][name] = {
        "version": d.version, "location": str(d.locate_file("")), "ext_files": files,
        "requires": d.requires or [], "direct_url": json.loads(direct) if direct else None,
        "provenance": json.loads(prov) if prov else None,
        "wheel_tags": [ln.split(":", 1)[1].strip() for ln in wheel.splitlines() if ln.startswith("Tag:")],
    }
for m in MODS:
    # find_spec of a submodule imports its parents (and so torch); locate the file instead, import nothing.
    top = spec_origin(m.split(".")[0])
    out["modules"][m] = top if "." not in m else None
    if "." in m and top and top.get("origin"):
        base = os.path.dirname(top["origin"])
        rel = m.split(".")[1:]
        for cand in (os.path.join(base, *rel) + ".py", os.path.join(base, *rel, "__init__.py")):
            if os.path.exists(cand):
                out["modules"][m] = {"origin": cand}
torch = {"installed": False}
if %(with_torch)r:
    try:
        import torch as t
        torch = {"installed": True, "version": t.__version__, "cuda": t.version.cuda,
                 "hip": getattr(t.version, "hip", None), "cxx11_abi": bool(t._C._GLIBCXX_USE_CXX11_ABI),
                 "lib_dir": os.path.join(os.path.dirname(t.__file__), "lib"), "cuda_available": False,
                 "devices": [], "arch_list": []}
        try:
            torch["cuda_available"] = bool(t.cuda.is_available())
            if torch["cuda_available"]:
                torch["arch_list"] = list(t.cuda.get_arch_list())
                for i in range(t.cuda.device_count()):
                    cc = t.cuda.get_device_capability(i)
                    torch["devices"].append({"name": t.cuda.get_device_name(i), "cc": "%%d.%%d" %% cc})
        except Exception as e:
            torch["cuda_error"] = str(e)
        try:
            from torch.utils import cpp_extension as ce
            torch["cpp_extension_cuda_home"] = ce.CUDA_HOME
        except Exception as e:
            torch["cpp_extension_error"] = str(e)
    except ModuleNotFoundError:
        pass
    except Exception as e:
        torch = {"installed": True, "import_error": type(e).__name__ + ": " + str(e)}
out["torch"] = torch
print("BUILDTOOL-PROBE" + json.dumps(out))
"""


class TorchInfo(Frozen):
    installed: bool = False
    version: str | None = None
    cuda: str | None = None
    hip: str | None = None
    cxx11_abi: bool | None = None
    lib_dir: str | None = None
    cuda_available: bool = False
    devices: tuple[dict[str, str], ...] = ()
    arch_list: tuple[str, ...] = ()
    cuda_error: str | None = None
    import_error: str | None = None
    cpp_extension_cuda_home: str | None = None
    cpp_extension_error: str | None = None

    @property
    def minor(self) -> str | None:
        if not self.version:
            return None
        return major_minor(self.version) if re.match(r"^\d+\.\d+", self.version) else None

    @property
    def cuda_major(self) -> int | None:
        return int(cuda_major(self.cuda)) if self.cuda else None


class DistInfo(Frozen):
    version: str
    location: str
    ext_files: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    direct_url: dict[str, Any] | None = None
    provenance: Provenance | None = None
    provenance_error: str | None = None  # why an installed buildtool_provenance.json could not be read
    wheel_tags: tuple[str, ...] = ()   # the `Tag:` lines of its WHEEL file

    @model_validator(mode="before")
    @classmethod
    def _typed_provenance(cls, data: Any) -> Any:
        """An unreadable provenance is a fact about the installed wheel, not a reason for doctor to stop."""
        if not isinstance(data, dict) or data.get("provenance") is None or isinstance(data["provenance"], Provenance):
            return data
        try:
            return {**data, "provenance": parse_provenance(data["provenance"])}
        except ProvenanceError as exc:
            return {**data, "provenance": None, "provenance_error": exc.message}

    def ext_paths(self) -> list[Path]:
        return [Path(self.location) / f for f in self.ext_files]


class PythonEnv(Frozen):
    """What the probe saw inside the target interpreter."""

    python_version: str
    implementation: str
    executable: str
    prefix: str
    sys_platform: str
    machine: str
    glibc: str | None
    ext_suffix: str | None
    include_dir: str | None
    purelib: str | None
    base_prefix: str
    env: dict[str, str]
    cwd: str
    dists: dict[str, DistInfo]
    extensions: dict[str, dict[str, str] | None]
    modules: dict[str, dict[str, str] | None]
    torch: TorchInfo

    @property
    def python_minor(self) -> str:
        return major_minor(self.python_version)

    @property
    def python_tag(self) -> str:
        return "cp" + self.python_minor.replace(".", "")

    @property
    def platform(self) -> str:
        """The project's platform name (compat.yaml): linux-x86_64, linux-aarch64, windows-x86_64."""
        machine = {"amd64": "x86_64", "x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
            self.machine.lower(), self.machine.lower())
        os_name = "windows" if self.sys_platform == "win32" else "macos" if self.sys_platform == "darwin" else "linux"
        return f"{os_name}-{machine}"

    def has_module(self, name: str) -> bool:
        entry = self.extensions.get(name) if name in self.extensions else self.modules.get(name)
        return bool(entry and entry.get("origin"))


class CompilerInfo(Frozen):
    """A compiler an environment variable names: as written, where it resolves, its version."""

    named: str
    path: str | None = None
    version: str | None = None
    kind: str | None = None  # "gcc" | "clang" | None (unknown)


class HostInfo(Frozen):
    """Tools on the host, outside Python: driver, GPUs, nvcc, gcc."""

    driver_version: str | None = None
    driver_cuda: str | None = None
    gpus: tuple[dict[str, str], ...] = ()
    nvidia_smi: str | None = None
    nvcc_path: str | None = None
    nvcc_version: str | None = None
    cuda_home: str | None = None
    cuda_home_source: str | None = None
    gcc_path: str | None = None
    gcc_version: str | None = None
    compilers: dict[str, CompilerInfo] = Field(default_factory=dict)  # what $CC / $CXX name (torch passes -ccbin $CC to nvcc)
    ldconfig: str | None = None
    libcuda_so: tuple[str, ...] = ()


class Environment(Frozen):
    python: PythonEnv
    host: HostInfo

    def summary(self) -> dict[str, Any]:
        p, t, h = self.python, self.python.torch, self.host
        return {
            "python": p.python_version, "python_tag": p.python_tag, "platform": p.platform, "glibc": p.glibc,
            "torch": t.version, "torch_cuda": t.cuda, "cxx11_abi": t.cxx11_abi,
            "gpus": [f"{g.get('name')} (sm_{g.get('cc', '?').replace('.', '')})" for g in h.gpus],
            "driver": h.driver_version, "driver_cuda": h.driver_cuda, "nvcc": h.nvcc_version,
            "cuda_home": h.cuda_home, "gcc": h.gcc_version,
            "kernels": {n: d.version for n, d in p.dists.items() if n in KERNEL_DISTS},
        }


# ---------------------------------------------------------------- the probe
def default_python() -> str:
    """The interpreter a user means: the active virtualenv's, else this one."""
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        for cand in (Path(venv) / "bin" / "python", Path(venv) / "Scripts" / "python.exe"):
            if cand.exists():
                return str(cand)
    return sys.executable


def python_of(path: str | Path) -> str:
    """Accept an interpreter or a venv directory."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / "bin" / "python", p / "Scripts" / "python.exe"):
            if cand.exists():
                return str(cand)
        raise UserError(f"{p} is a directory without bin/python: not a virtual environment")
    if not p.exists():
        raise UserError(f"python interpreter {p} does not exist")
    return str(p)


def probe_python(python: str | None = None, *, with_torch: bool = True, env: dict[str, str] | None = None,
                 timeout: float = 180) -> PythonEnv:
    exe = python_of(python) if python else default_python()
    script = interp.FACTS_CODE + PROBE % {"watched": WATCHED_DISTS, "exts": EXTENSION_MODULES,
                                          "mods": PYTHON_MODULES, "envs": ENV_VARS, "with_torch": with_torch}
    try:
        proc = interp.run_code(exe, script, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot run {exe}: {exc}") from None
    data = interp.marked_json(proc.stdout, "BUILDTOOL-PROBE")
    if data is None:
        raise UserError(f"probing {exe} failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    result: PythonEnv = PythonEnv.model_validate(data)
    return result


# ---------------------------------------------------------------- host tools
def _run(cmd: list[str], timeout: float = 30, env: dict[str, str] | None = None) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def parse_nvcc_version(text: str) -> str | None:
    m = re.search(r"release (\d+\.\d+)", text)
    return m[1] if m else None


def resolve_cuda_home(env: dict[str, str]) -> tuple[str | None, str | None]:
    """torch.utils.cpp_extension's order: CUDA_HOME/CUDA_PATH, then nvcc on PATH, then /usr/local/cuda."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(var):
            return env[var], var
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    if nvcc:
        return str(Path(nvcc).resolve().parent.parent), "nvcc on PATH"
    if Path("/usr/local/cuda").exists():
        return "/usr/local/cuda", "/usr/local/cuda"
    return None, None


def probe_compiler(named: str, env: dict[str, str]) -> CompilerInfo:
    """Resolve and run a compiler named by CC/CXX (a name on PATH or a path, maybe with arguments)."""
    first = named.split()[0] if named.split() else named
    path = shutil.which(first, path=env.get("PATH"))
    if path is None:
        return CompilerInfo(named=named)
    banner = _run([path, "--version"]) or ""
    kind = "clang" if "clang" in banner.lower() else "gcc" if re.search(r"\b(gcc|g\+\+|GCC)\b", banner) else None
    version = (_run([path, "-dumpfullversion", "-dumpversion"]) or "").strip().splitlines()
    return CompilerInfo(named=named, path=path, version=version[0] if version else None, kind=kind)


def probe_host(env: dict[str, str] | None = None) -> HostInfo:
    env = dict(os.environ if env is None else env)
    info: dict[str, Any] = {}
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if smi:
        info["nvidia_smi"] = smi
        q = _run([smi, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"])
        if q:
            gpus = []
            for row in q.strip().splitlines():
                parts = [x.strip() for x in row.split(",")]
                if len(parts) >= 3:
                    gpus.append({"name": parts[0], "cc": parts[1]})
                    info["driver_version"] = parts[2]
            info["gpus"] = tuple(gpus)
        head = _run([smi])
        m = re.search(r"CUDA Version:\s*(\d+\.\d+)", head or "")
        if m:
            info["driver_cuda"] = m[1]
    cuda_home, source = resolve_cuda_home(env)
    info["cuda_home"], info["cuda_home_source"] = cuda_home, source
    if cuda_home:
        nvcc = Path(cuda_home) / "bin" / ("nvcc.exe" if sys.platform == "win32" else "nvcc")
        if nvcc.exists():
            info["nvcc_path"] = str(nvcc)
            info["nvcc_version"] = parse_nvcc_version(_run([str(nvcc), "-V"]) or "")
    cxx = env.get("CXX") or shutil.which("g++", path=env.get("PATH")) or shutil.which("gcc", path=env.get("PATH"))
    if cxx and shutil.which(cxx, path=env.get("PATH")):
        info["gcc_path"] = shutil.which(cxx, path=env.get("PATH"))
        ver = _run([cxx, "-dumpfullversion", "-dumpversion"])
        info["gcc_version"] = ver.strip().splitlines()[0] if ver else None
    info["compilers"] = {var: probe_compiler(env[var], env) for var in ("CC", "CXX") if env.get(var)}
    ldconfig = shutil.which("ldconfig", path=env.get("PATH")) or ("/sbin/ldconfig" if Path("/sbin/ldconfig").exists() else None)
    info["ldconfig"] = ldconfig
    if ldconfig:
        listing = _run([ldconfig, "-p"]) or ""
        info["libcuda_so"] = tuple(sorted({ln.split("=>")[-1].strip() for ln in listing.splitlines() if "libcuda.so" in ln}))
    result: HostInfo = HostInfo.model_validate(info)
    return result


def detect(python: str | None = None, *, env: dict[str, str] | None = None) -> Environment:
    return Environment(python=probe_python(python, env=env), host=probe_host(env))
