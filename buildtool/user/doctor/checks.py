"""Check functions, one per diagnosis. data/doctor.yaml names them and says which failure (F-id) each one
diagnoses and how to fix it; a function only looks and reports what it saw."""

from __future__ import annotations

import ast
import functools
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from buildtool.binary.elf import torch_symbols
from buildtool.model import Frozen
from buildtool.spec import yamlsrc
from buildtool.spec.abitrack import is_stable_library
from buildtool.spec.compat import load_compat
from buildtool.spec.knownbad import installed_breaks, load_known_bad
from buildtool.user.doctor.context import DIST_EXTENSIONS, Context, demangle
from buildtool.user.doctor.model import Finding, Status
from buildtool.user.resolve import arch_covered
from buildtool.wheel import tags as wheeltags

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


def _no_torch(ctx: Context) -> Finding | None:
    if ctx.torch.import_error:
        return fail(f"import torch fails: {ctx.torch.import_error}")
    if not ctx.torch.installed:
        return skip("torch is not installed")
    return None


def _no_extensions(ctx: Context) -> Finding | None:
    return None if ctx.extensions else skip("no kernel extension (.so/.pyd) installed")


# ---------------------------------------------------------------- torch / ABI / CUDA (F01-F03)
@check
def torch_symbols_resolved(ctx: Context) -> Finding:
    if (early := _no_torch(ctx)) or (early := _no_extensions(ctx)):
        return early
    exports = ctx.torch_exports
    problems, checked = [], []
    for ext in ctx.extensions:
        elf = ctx.elf(ext.path)
        if elf is None:
            continue
        checked.append(ext.module)
        missing = [s for s in torch_symbols(elf.undefined) if s not in exports]
        if missing:
            problems.append(f"{ext.path.name}: {len(missing)} libtorch symbol(s) torch {ctx.torch.version} does not "
                            f"export, e.g. {demangle(missing[:1])[0]} ({missing[0]})")
    mismatched = [f"{n} {ctx.version(n)} is labelled torch{lab.torch}, installed torch is {ctx.torch.version}"
                  for n in ctx.kernel_dists() if (lab := ctx.label(n)) and lab.torch is not None
                  and lab.torch != ctx.torch.minor]
    if problems or mismatched:
        return fail("; ".join(problems + mismatched))
    if not checked:
        return skip("no ELF extension to read")
    return ok(f"every libtorch symbol of {', '.join(checked)} is exported by torch {ctx.torch.version}")


# `Ss` is the pre-C++11 std::string substitution (after R/K/P/E/I in a mangled signature).
_PRE_CXX11 = re.compile(r"[RKPEI]Ss|St12basic_stringIcSt11char_traitsIcESaIcEE")


@check
def cxx11_abi_matches(ctx: Context) -> Finding:
    if (early := _no_torch(ctx)) or (early := _no_extensions(ctx)):
        return early
    if ctx.is_windows:
        return skip("Windows has no C++11 ABI switch")
    abi = ctx.torch.cxx11_abi
    problems = []
    for ext in ctx.extensions:
        elf = ctx.elf(ext.path)
        if elf is None:
            continue
        tsyms = torch_symbols(elf.undefined)
        if abi is False and (bad := [s for s in tsyms if "__cxx11" in s]):
            problems.append(f"{ext.path.name} was built with the C++11 ABI (needs {demangle(bad[:1])[0]}), torch uses the old ABI")
        if abi is True and (bad := [s for s in tsyms if _PRE_CXX11.search(s) and "__cxx11" not in s]):
            problems.append(f"{ext.path.name} was built with the pre-C++11 ABI (needs {bad[0]} = "
                            f"{demangle(bad[:1])[0]}), torch._C._GLIBCXX_USE_CXX11_ABI is True")
    for n in ctx.kernel_dists():
        lab = ctx.label(n)
        if lab and abi is not None and lab.cxx11_abi is not None and lab.cxx11_abi != abi:
            problems.append(f"{n} {ctx.version(n)} is labelled cxx11abi{'TRUE' if lab.cxx11_abi else 'FALSE'}, "
                            f"torch's flag is {abi}")
    if problems:
        return fail("; ".join(problems))
    return ok(f"extensions and labels agree with torch's C++11 ABI flag ({abi})")


@check
def cuda_major_matches(ctx: Context) -> Finding:
    if (early := _no_torch(ctx)) or (early := _no_extensions(ctx)):
        return early
    major = ctx.torch.cuda_major
    problems = []
    if major is None:
        problems.append(f"torch {ctx.torch.version} is a CPU-only build: the installed CUDA kernels cannot run with it")
    for ext in ctx.extensions:
        elf = ctx.elf(ext.path)
        for lib in elf.needed if elf else ():
            m = re.match(r"libcudart\.so\.(\d+)", lib)
            if m and int(m[1]) != major:
                problems.append(f"{ext.path.name} needs {lib}, torch uses CUDA {ctx.torch.cuda or 'none (CPU build)'}")
    for n in ctx.kernel_dists():
        lab = ctx.label(n)
        if lab and major is not None and lab.cuda_major != major:
            problems.append(f"{n} {ctx.version(n)} is labelled cu{lab.cuda.replace('.', '')}, torch uses CUDA {ctx.torch.cuda}")
    if problems:
        fix = None if major is not None else ("install a CUDA build of torch (e.g. `pip install torch --index-url "
                                              "https://download.pytorch.org/whl/cu128`), then `buildtool install <pkg>`")
        return fail("; ".join(problems), fix)
    return ok(f"kernels match torch's CUDA {ctx.torch.cuda}")


@check
def extensions_import(ctx: Context) -> Finding:
    """Import every installed kernel extension in a subprocess (after torch): the error text is the evidence."""
    if (early := _no_torch(ctx)) or (early := _no_extensions(ctx)):
        return early
    modules = sorted({e.module for e in ctx.extensions if e.path.exists() and not is_stable_library(e.path.name)})
    # Stable-ABI libraries have no PyInit: torch loads them (and registers their ops), as their shims do.
    libraries = sorted({str(e.path) for e in ctx.extensions if e.path.exists() and is_stable_library(e.path.name)})
    failures = []
    for m in [*modules, *libraries]:
        code = f"import torch\ntorch.ops.load_library({m!r})" if m in libraries else f"import torch\nimport {m}"
        proc = subprocess.run([ctx.py.executable, "-c", code], capture_output=True, text=True,
                              timeout=300, cwd=ctx.cwd)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            failures.append(f"{m}: {last[:300]}")
    if failures:
        return fail("; ".join(failures))
    return ok(f"imported {', '.join(modules)}" + (f"; loaded {', '.join(Path(x).name for x in libraries)}"
                                                  if libraries else ""))


# ---------------------------------------------------------------- what is installed (F04-F06, F15-F19, F36)
@check
def kernel_modules_present(ctx: Context) -> Finding:
    dists = {n: d for n, d in ctx.kernel_dists().items() if n == "causal-conv1d"}
    if not dists:
        return skip("causal-conv1d is not installed")
    if ctx.py.has_module("causal_conv1d_cuda"):
        return ok(f"causal_conv1d_cuda found at {ctx.py.extensions['causal_conv1d_cuda']['origin']}")  # type: ignore[index]
    return fail(f"causal-conv1d {ctx.version('causal-conv1d')} is installed but has no importable causal_conv1d_cuda "
                f"(files: {', '.join(dists['causal-conv1d'].ext_files) or 'no .so at all'})")


@check
def mamba_cuda_kernel(ctx: Context) -> Finding:
    name = next((n for n in ("mamba-ssm", "mamba-ssm-vim") if ctx.dist(n)), None)
    if name is None:
        return skip("mamba-ssm is not installed")
    if ctx.py.has_module("selective_scan_cuda"):
        return ok("selective_scan_cuda found")
    return fail(f"{name} {ctx.version(name)} is installed without selective_scan_cuda: Mamba-1 (selective_scan_fn) "
                "cannot run; mamba-ssm after PR #977 builds it only with MAMBA_KEEP_CUDA_BUILD=TRUE")


@check
def vmamba_modules(ctx: Context) -> Finding:
    if not ctx.dist("selective-scan"):
        return skip("VMamba's selective-scan is not installed")
    have = [m for m in DIST_EXTENSIONS["selective-scan"] if ctx.py.has_module(m)]
    if not have:
        return fail("selective-scan is installed but neither selective_scan_cuda_oflex nor selective_scan_cuda_core "
                    "can be found (VMamba raises NameError when the kernel is first called)")
    if "selective_scan_cuda_core" not in have:
        return info("only the oflex backend is installed (the core backend is deprecated): use forward_type with oflex")
    return ok(f"found {', '.join(have)}")


def _pairing(mamba: Version, conv: Version) -> str | None:
    if mamba <= Version("2.2.4") and conv >= Version("1.5.1"):
        return "mamba-ssm <= 2.2.4 calls the 7-argument causal_conv1d_fwd; causal-conv1d >= 1.5.1 has the 8-argument form"
    if mamba >= Version("2.2.5") and conv < Version("1.5.1"):
        return "mamba-ssm >= 2.2.5 needs causal-conv1d >= 1.5.1 (8-argument causal_conv1d_fwd, cpp_functions)"
    return None


@check
def conv1d_api_pairing(ctx: Context) -> Finding:
    mamba, conv = ctx.version("mamba-ssm"), ctx.version("causal-conv1d")
    if mamba is None or conv is None:
        return skip("needs both mamba-ssm and causal-conv1d installed")
    problem = _pairing(Version(mamba.public), Version(conv.public))
    if problem:
        return fail(f"mamba-ssm {mamba.public} with causal-conv1d {conv.public}: {problem}")
    return ok(f"mamba-ssm {mamba.public} and causal-conv1d {conv.public} use the same causal_conv1d_fwd API")


@check
def conv1d_cpp_functions(ctx: Context) -> Finding:
    mamba, conv = ctx.version("mamba-ssm"), ctx.version("causal-conv1d")
    if mamba is None or Version(mamba.public) < Version("2.2.5"):
        return skip("only mamba-ssm >= 2.2.5 imports causal_conv1d.cpp_functions")
    if conv is None:
        return warn("mamba-ssm >= 2.2.5 without causal-conv1d: its conv1d fast path is off (causal_conv1d_fn is None)")
    if ctx.py.has_module("causal_conv1d.cpp_functions"):
        return ok("causal_conv1d.cpp_functions exists")
    return fail(f"causal-conv1d {conv.public} has no causal_conv1d.cpp_functions; mamba-ssm {mamba.public} swallows the "
                "ImportError and later asserts 'causal_conv1d_cuda is not available'")


@check
def triton_for_mamba(ctx: Context) -> Finding:
    mamba = ctx.version("mamba-ssm") or ctx.version("mamba-ssm-vim")
    if mamba is None:
        return skip("mamba-ssm is not installed")
    triton_dist = "triton-windows" if ctx.is_windows else "triton"
    if not ctx.py.has_module("triton"):
        return fail(f"mamba-ssm {mamba} is installed but `import triton` finds nothing: Mamba2/RMSNorm kernels "
                    "(mamba_ssm.ops.triton) become None",
                    f"pip install \"{triton_dist}{_triton_spec(ctx) or ''}\" (matched to torch {ctx.torch.version})")
    if Version(mamba.public) >= Version("2.0") and not ctx.py.has_module("mamba_ssm.ops.triton.layer_norm"):
        return warn("mamba_ssm.ops.triton.layer_norm is missing (renamed from layernorm in 2.0)")
    return ok(f"triton present for mamba-ssm {mamba}")


def _triton_spec(ctx: Context) -> str | None:
    if not ctx.torch.version:
        return None
    req = load_compat().triton_requirement(ctx.torch.version, "windows-x86_64" if ctx.is_windows else "linux-x86_64")
    return req[1] if req else None


@check
def triton_matches_torch(ctx: Context) -> Finding:
    if (early := _no_torch(ctx)) is not None:
        return early
    dist_name = "triton-windows" if ctx.is_windows else "triton"
    installed = ctx.version(dist_name)
    info_ = load_compat().torch_info(ctx.torch.version or "0.0")
    if info_ is None:
        return skip(f"torch {ctx.torch.version} is not in the compatibility table")
    pinned = info_.triton_windows if ctx.is_windows else info_.triton
    if installed is None:
        required = torch_requires_triton(ctx)
        if required is not None:
            return fail(f"torch {ctx.torch.version} requires {required} but no {dist_name} is installed: "
                        "torch.compile and mamba-ssm's Triton kernels fail at first use",
                        f"pip install \"{required.split(';')[0].strip()}\"")
        return skip(f"{dist_name} is not installed (torch {ctx.torch.minor} pairs with {pinned})")
    if pinned is None:
        return skip(f"no {dist_name} pairing known for torch {ctx.torch.minor}")
    want = Version(pinned)
    if (installed.major, installed.minor) != (want.major, want.minor):
        return fail(f"{dist_name} {installed} with torch {ctx.torch.version}, which pairs with {dist_name} {pinned}",
                    f"pip install \"{dist_name}{_triton_spec(ctx)}\"")
    return ok(f"{dist_name} {installed} pairs with torch {ctx.torch.minor}")


@check
def vim_fork_installed(ctx: Context) -> Finding:
    vim_project = (ctx.cwd / "models_mamba.py").exists() or (ctx.cwd / "vim" / "models_mamba.py").exists() \
        or (ctx.cwd / "mamba-1p1p1").is_dir()
    spec = ctx.py.modules.get("mamba_ssm.modules.mamba_simple")
    if not spec:
        return skip("mamba_ssm is not installed") if not vim_project else fail(
            "this looks like a Vim checkout (models_mamba.py) but mamba_ssm is not installed")
    source = Path(spec["origin"]).read_text(encoding="utf-8", errors="replace")
    params = _init_params(source, "Mamba")
    has_bimamba = "bimamba_type" in params
    if vim_project and not has_bimamba:
        return fail(f"Vim needs its forked mamba_ssm (Mamba(bimamba_type=...)); the installed one at {spec['origin']} "
                    "is upstream's: TypeError: Mamba.__init__() got an unexpected keyword argument 'bimamba_type'")
    if has_bimamba:
        return info("the installed mamba_ssm is Vim's fork (Mamba has bimamba_type)")
    return ok("upstream mamba_ssm, and no Vim checkout in the current directory")


def _init_params(source: str, cls: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    a = item.args
                    return {x.arg for x in [*a.args, *a.kwonlyargs]}
    return set()


# ---------------------------------------------------------------- toolchain (F08, F09, F27-F31)
@check
def cuda_home_valid(ctx: Context) -> Finding:
    h = ctx.env.host
    if h.cuda_home is None:
        return warn("no CUDA toolkit: CUDA_HOME/CUDA_PATH unset, no nvcc on PATH, no /usr/local/cuda",
                    "only needed for source builds: install wheels with `buildtool install` instead, or install a "
                    "toolkit and export CUDA_HOME")
    home = Path(h.cuda_home)
    if not home.is_dir():
        return fail(f"CUDA_HOME resolves to {home} ({h.cuda_home_source}), which does not exist")
    headers = (home / "include" / "cuda_runtime.h").exists() or any(home.glob("targets/*/include/cuda_runtime.h"))
    if h.nvcc_path is None:
        return fail(f"{home} ({h.cuda_home_source}) has no bin/nvcc")
    if not headers:
        real = Path("/usr/local/cuda") if Path("/usr/local/cuda/include/cuda_runtime.h").exists() else None
        return warn(f"CUDA_HOME resolves to {home} ({h.cuda_home_source}): it has bin/nvcc but no include/cuda_runtime.h, "
                    "so torch.utils.cpp_extension builds will not find CUDA headers",
                    f"export CUDA_HOME={real or '<toolkit root>'}")
    return ok(f"{home} ({h.cuda_home_source}): nvcc {h.nvcc_version}, headers present")


@check
def nvcc_matches_torch(ctx: Context) -> Finding:
    h = ctx.env.host
    if h.nvcc_version is None:
        return skip("no nvcc (nothing to compile with)")
    if ctx.torch.cuda is None:
        return skip("torch is not installed or is a CPU build")
    nv, tc = Version(h.nvcc_version), Version(ctx.torch.cuda)
    if nv.major != tc.major:
        return fail(f"nvcc {nv} at {h.nvcc_path} vs torch CUDA {tc}: source builds stop with 'The detected CUDA "
                    "version mismatches the version that was used to compile PyTorch'")
    if nv.minor != tc.minor:
        return info(f"nvcc {nv} vs torch CUDA {tc}: minor versions differ (allowed, torch only warns)")
    return ok(f"nvcc {nv} equals torch's CUDA {tc}")


@check
def host_compiler_supported(ctx: Context) -> Finding:
    h = ctx.env.host
    if h.nvcc_version is None or h.gcc_version is None:
        return skip("needs nvcc and a host g++")
    cuda = load_compat().cuda
    nv = Version(h.nvcc_version)
    known = sorted((Version(k) for k in cuda), reverse=True)
    key = next((k for k in known if k <= nv), None)
    if key is None:
        return skip(f"nvcc {nv} is older than the compatibility table")
    limit = cuda[f"{key.major}.{key.minor}"].max_gcc
    gcc = Version(h.gcc_version)
    if gcc.major > limit:
        return fail(f"g++ {gcc} ({h.gcc_path}) is newer than nvcc {nv} accepts (gcc <= {limit}): "
                    "'#error -- unsupported GNU version!'", f"install g++-{limit} and export CC=gcc-{limit} CXX=g++-{limit}")
    return ok(f"g++ {gcc} is supported by nvcc {nv} (gcc <= {limit})")


@check
def cccl_headers(ctx: Context) -> Finding:
    h = ctx.env.host
    if h.cuda_home is None or h.nvcc_version is None:
        return skip("no CUDA toolkit")
    home = Path(h.cuda_home)
    roots = [r for r in (home / "include", *home.glob("targets/*/include")) if (r / "cuda_runtime.h").exists()]
    if not roots:
        return skip(f"no CUDA headers under {home} (see cuda-home)")
    direct = [r for r in roots if (r / "nv" / "target").exists()]
    cccl = [r / "cccl" for r in roots if (r / "cccl" / "nv" / "target").exists()]
    if direct:
        return ok(f"nv/target in {direct[0]}")
    if cccl:
        incl = ctx.py.env.get("CPLUS_INCLUDE_PATH", "") + ctx.py.env.get("CPATH", "")
        if "cccl" in incl:
            return ok(f"nv/target in {cccl[0]} (on CPLUS_INCLUDE_PATH/CPATH)")
        return info(f"nv/target only in {cccl[0]} (CUDA 13 layout): nvcc finds it, host-compiled .cpp files do not "
                    "unless the build adds that path (buildtool does)")
    return fail(f"no nv/target under {home}: a partial toolkit (nvcc without CCCL); 'fatal error: nv/target: No such file'")


@check
def cuda_toolkit_present(ctx: Context) -> Finding:
    h = ctx.env.host
    if h.nvcc_path:
        return ok(f"nvcc {h.nvcc_version} at {h.nvcc_path}")
    return warn("no nvcc: any sdist install of causal-conv1d/mamba-ssm fails at import of setup.py "
                "(NameError: bare_metal_version) before it can fetch a wheel")


@check
def glibc_vs_cuda_headers(ctx: Context) -> Finding:
    glibc, nvcc = ctx.py.glibc, ctx.env.host.nvcc_version
    if not glibc or not nvcc:
        return skip("needs Linux and nvcc")
    if Version(glibc) >= Version("2.41") and Version(nvcc) < Version("13.0"):
        return fail(f"glibc {glibc} with nvcc {nvcc}: math_functions.h conflicts with glibc's noexcept cospi/sinpi/rsqrt")
    return ok(f"glibc {glibc} and nvcc {nvcc} headers agree")


@check
def msvc_preprocessor(ctx: Context) -> Finding:
    if not ctx.is_windows:
        return skip("Windows only")
    nvcc = ctx.env.host.nvcc_version
    if nvcc and Version(nvcc) >= Version("13.2"):
        return warn(f"nvcc {nvcc} on Windows: CCCL needs MSVC's conforming preprocessor (/Zc:preprocessor), which "
                    "torch.utils.cpp_extension does not pass")
    return ok(f"nvcc {nvcc or 'none'}: no /Zc:preprocessor requirement")


@check
def windows_compiler(ctx: Context) -> Finding:
    if not ctx.is_windows:
        return skip("Windows only")
    env = ctx.py.env
    if env.get("VCToolsInstallDir") or env.get("VSCMD_ARG_TGT_ARCH"):
        return ok("inside a Visual Studio developer environment")
    return info("not inside a VS developer prompt: fine for installing wheels; source builds need vcvars64.bat")


# ---------------------------------------------------------------- loader (F10, F11, F38)
@check
def glibc_new_enough(ctx: Context) -> Finding:
    if (early := _no_extensions(ctx)) is not None:
        return early
    if not ctx.py.glibc:
        return skip("not a glibc system")
    system = Version(ctx.py.glibc)
    worst: tuple[Version, str] | None = None
    for ext in ctx.extensions:
        elf = ctx.elf(ext.path)
        if elf and elf.max_glibc and (worst is None or Version(elf.max_glibc) > worst[0]):
            worst = (Version(elf.max_glibc), ext.path.name)
    if worst is None:
        return ok("no GLIBC version needs recorded")
    if worst[0] > system:
        return fail(f"{worst[1]} needs GLIBC_{worst[0]}, this system has glibc {system}")
    return ok(f"needs at most GLIBC_{worst[0]}, system glibc {system}")


@check
def libstdcxx_new_enough(ctx: Context) -> Finding:
    if (early := _no_extensions(ctx)) is not None:
        return early
    lib, versions = ctx.libstdcxx_versions
    if lib is None:
        return skip("no system libstdc++.so.6 found through ldconfig")
    missing = []
    for ext in ctx.extensions:
        elf = ctx.elf(ext.path)
        need = elf.max_glibcxx if elf else None
        if need and f"GLIBCXX_{need}" not in versions:
            missing.append(f"{ext.path.name} needs GLIBCXX_{need}")
    if missing:
        return fail("; ".join(missing) + f", not in {lib}")
    return ok(f"{lib} provides every GLIBCXX version the extensions need")


@check
def extension_platform(ctx: Context) -> Finding:
    if (early := _no_extensions(ctx)) is not None:
        return early
    want_machine = ctx.py.platform.split("-", 1)[1]
    suffix = ctx.py.ext_suffix or ""
    problems = []
    for ext in ctx.extensions:
        name = ext.path.name
        if name.endswith((".so", ".pyd")) and not (name.endswith(suffix) or re.search(r"\.abi3\.(so|pyd)$", name)
                                                   or re.fullmatch(r"[A-Za-z_0-9]+\.(so|pyd)", name)):
            problems.append(f"{name} does not end in {suffix} (built for another Python), so Python cannot import it")
        elf = ctx.elf(ext.path)
        if elf and elf.machine != want_machine:
            problems.append(f"{name} is {elf.machine} code on a {want_machine} machine")
    if problems:
        return fail("; ".join(problems))
    return ok(f"extensions are {want_machine} and end in {suffix}")


@check
def wheel_tags_fit(ctx: Context) -> Finding:
    """Each kernel distribution's WHEEL tags against the tags this interpreter accepts (packaging.tags)."""
    dists = {n: d for n, d in ctx.kernel_dists().items() if d.wheel_tags}
    if not dists:
        return skip("no kernel distribution with a WHEEL file")
    accepted = set(wheeltags.supported_tags(ctx.py.python_tag, ctx.py.platform, ctx.py.glibc))
    problems = []
    for name, d in dists.items():
        tags = frozenset(t for line in d.wheel_tags for t in wheeltags.parse_tag_line(line))
        if not tags & accepted:
            problems.append(f"{name} {d.version} was installed from a wheel tagged {', '.join(d.wheel_tags)}, which "
                            f"CPython {ctx.py.python_minor} on {ctx.py.platform} (glibc {ctx.py.glibc or '?'}) does not accept")
    if problems:
        return fail("; ".join(problems))
    return ok(", ".join(f"{n}: {', '.join(d.wheel_tags)}" for n, d in dists.items()) + f" fit {ctx.py.python_tag}")


@check
def known_bad_pairs(ctx: Context) -> Finding:
    """Installed dependency versions known to break an import (data/known_bad.yaml, measured)."""
    pairs = load_known_bad().pairs
    versions: dict[str, str] = {str(canonicalize_name(n)): d.version for n, d in ctx.py.dists.items()}
    present = [p.package for p in pairs if canonicalize_name(p.package) in versions]
    if not present:
        return skip("none of " + ", ".join(sorted({p.package for p in pairs})) + " is installed")
    breaks = installed_breaks(versions, pairs)
    if breaks:
        return fail("; ".join(breaks))
    return ok(", ".join(f"{n} {versions[canonicalize_name(n)]}" for n in present) + ": no known-bad dependency version")


# ---------------------------------------------------------------- GPU and driver (F12, F13, F20, F25, F39)
def _gpus(ctx: Context) -> list[dict[str, str]]:
    return list(ctx.env.host.gpus) or [dict(d) for d in ctx.torch.devices]


def _archs(ctx: Context, dist: str) -> tuple[tuple[str, ...], str | None]:
    d = ctx.dist(dist)
    prov = d.provenance if d else None
    if not prov:
        return (), None
    from buildtool.publish.index import _archs_from  # the same reader the index uses
    return _archs_from(prov)


@check
def gpu_arch_in_wheels(ctx: Context) -> Finding:
    gpus = _gpus(ctx)
    if not gpus:
        return skip("no NVIDIA GPU visible (nvidia-smi / torch.cuda)")
    if not ctx.kernel_dists():
        return skip("no kernel package installed")
    problems, unknown = [], []
    for name in ctx.kernel_dists():
        archs, ptx = _archs(ctx, name)
        if not archs:
            unknown.append(name)
            continue
        for g in gpus:
            if not arch_covered(g["cc"], archs, ptx):
                problems.append(f"{name} has sm_{' sm_'.join(a.replace('.', '') for a in archs)}"
                                f"{' +PTX' if ptx else ''}, no code for {g.get('name', 'GPU')} (sm_{g['cc'].replace('.', '')})")
    if problems:
        return fail("; ".join(problems))
    if unknown:
        return info(f"arch list unknown for {', '.join(unknown)} (no buildtool provenance)")
    return ok("every GPU is covered: " + ", ".join(f"sm_{g['cc'].replace('.', '')}" for g in gpus))


@check
def b300_causal_conv1d(ctx: Context) -> Finding:
    """Known-miscompiled SASS (data/bad_sass.yaml) in an installed wheel, on a GPU of that arch."""
    from buildtool.spec.badsass import affected, load_rules

    ccs = {g.get("cc") for g in _gpus(ctx)}
    rules = [r for r in load_rules() if r.arch in ccs]
    if not rules:
        return skip("no GPU of an arch with known-miscompiled SASS (" + ", ".join(
            sorted({f"sm_{r.arch.replace('.', '')}" for r in load_rules()})) + ")")
    bad, unknown, fine = [], [], []
    for name in sorted({r.package for r in rules}):
        d = ctx.dist(name)
        if d is None:
            continue
        archs, _ = _archs(ctx, name)
        if not archs:
            unknown.append(name)
            continue
        nvcc = ((d.provenance or {}).get("toolchain") or {}).get("cuda_version")
        rule = affected(name, d.version, archs, nvcc, rules)
        if rule is None:
            fine.append(name)
            continue
        bad.append(f"{name} {d.version} carries sm_{rule.arch.replace('.', '')} SASS built by nvcc {nvcc or '(unknown)'}: "
                   + rule.text)
    if bad:
        return fail("; ".join(bad))
    if unknown:
        return info(f"arch list unknown for {', '.join(unknown)} (no buildtool provenance); a source build with "
                    "CUDA >= 13 embeds the miscompiled SASS")
    if not fine:
        return skip("no affected package installed")
    return ok(f"{', '.join(fine)}: no miscompiled SASS for this GPU")


@check
def libcuda_for_triton(ctx: Context) -> Finding:
    if ctx.is_windows:
        return skip("Linux only")
    if not ctx.py.has_module("triton"):
        return skip("triton is not installed")
    h = ctx.env.host
    if not h.ldconfig:
        return fail("triton needs `ldconfig` to find libcuda.so and there is none on PATH or in /sbin")
    if ctx.py.env.get("TRITON_LIBCUDA_PATH"):
        return ok(f"TRITON_LIBCUDA_PATH={ctx.py.env['TRITON_LIBCUDA_PATH']}")
    if not _gpus(ctx) and not h.nvidia_smi:
        return skip("no NVIDIA driver on this machine")
    if any(Path(p).name == "libcuda.so" for p in h.libcuda_so):
        return ok("libcuda.so is in the ldconfig cache")
    return fail(f"ldconfig knows only {', '.join(h.libcuda_so) or 'no libcuda'}: triton links with -lcuda and needs "
                "an unversioned libcuda.so")


@check
def triton_supports_gpu(ctx: Context) -> Finding:
    dist = "triton-windows" if ctx.is_windows else "triton"
    tv = ctx.version(dist)
    gpus = _gpus(ctx)
    if tv is None or not gpus:
        return skip("needs triton and a GPU")
    for g in gpus:
        cc = Version(g["cc"])
        if cc >= Version("12.0") and tv < Version("3.3"):
            return fail(f"{dist} {tv} is too old for {g.get('name')} (sm_{g['cc'].replace('.', '')}): needs >= 3.3")
        if cc == Version("7.5") and tv >= Version("3.3"):
            return warn(f"{dist} {tv} dropped Turing (sm_75) support; stay on 3.2 with torch 2.6")
    return ok(f"{dist} {tv} supports the GPUs")


@check
def driver_supports_torch(ctx: Context) -> Finding:
    h = ctx.env.host
    if not h.driver_cuda:
        return skip("no NVIDIA driver found (nvidia-smi)")
    if not ctx.torch.cuda:
        return skip("torch is not installed or is a CPU build")
    drv, tc = Version(h.driver_cuda), Version(ctx.torch.cuda)
    if drv.major < tc.major:
        return fail(f"driver {h.driver_version} supports CUDA {drv}, torch needs CUDA {tc}: 'CUDA driver version is "
                    "insufficient for CUDA runtime version'")
    if drv < tc:
        return warn(f"driver CUDA {drv} < torch CUDA {tc}: works only through minor-version compatibility (no new PTX)")
    return ok(f"driver {h.driver_version} (CUDA {drv}) >= torch CUDA {tc}")


@check
def driver_loads_kernel_wheels(ctx: Context) -> Finding:
    """Each buildtool wheel records the oldest driver that loads its modules (provenance min_driver_cuda):
    X.0 for a CUDA X.y build, 12.4 for size-compressed fatbins (buildtool/data/compile_flags.yaml)."""
    h = ctx.env.host
    if not h.driver_cuda:
        return skip("no NVIDIA driver found (nvidia-smi)")
    needs = {}
    for name, d in ctx.kernel_dists().items():
        floor = (d.provenance or {}).get("min_driver_cuda")
        if floor:
            needs[name] = str(floor)
    if not needs:
        return skip("no installed kernel wheel records its driver floor")
    drv = Version(h.driver_cuda)
    low = {n: f for n, f in needs.items() if drv < Version(f)}
    if low:
        return fail(f"driver {h.driver_version} supports CUDA {drv}; " + ", ".join(
            f"{n} needs CUDA >= {f} (an older driver cannot load its device code)"
            for n, f in sorted(low.items())))
    return ok(f"driver {h.driver_version} (CUDA {drv}) loads " + ", ".join(
        f"{n} (needs >= {f})" for n, f in sorted(needs.items())))


# ---------------------------------------------------------------- Python and OS (F21-F23, F35, F37, F40-F42)
@check
def python_headers(ctx: Context) -> Finding:
    include = ctx.py.include_dir
    if include and (Path(include) / "Python.h").exists():
        return ok(f"{include}/Python.h")
    if not ctx.py.has_module("triton"):
        return info(f"no Python.h in {include}; only triton's JIT launcher needs it (triton not installed)")
    return fail(f"no Python.h in {include}: triton cannot compile its launcher ('Python.h: No such file')",
                f"apt install python{ctx.py.python_minor}-dev (Windows: copy include/ and libs/ of the same Python)")


@check
def triton_distribution(ctx: Context) -> Finding:
    has_triton, has_win = ctx.dist("triton") is not None, ctx.dist("triton-windows") is not None
    if ctx.is_windows:
        if has_triton and not has_win:
            return fail(f"official triton {ctx.version('triton')} is installed on Windows, which it does not support",
                        f"pip uninstall triton && pip install \"triton-windows{_triton_spec(ctx) or ''}\"")
        return ok("triton-windows installed") if has_win else skip("no triton")
    if has_win:
        return fail("triton-windows is installed on Linux", "pip uninstall triton-windows && pip install triton")
    return ok(f"triton {ctx.version('triton')}") if has_triton else skip("triton is not installed")


@check
def home_set(ctx: Context) -> Finding:
    env = ctx.py.env
    if env.get("HOME") or env.get("TRITON_CACHE_DIR"):
        return ok(f"HOME={env.get('HOME')}" if env.get("HOME") else f"TRITON_CACHE_DIR={env['TRITON_CACHE_DIR']}")
    status = fail if ctx.py.has_module("triton") else warn
    return status("HOME is not set (and TRITON_CACHE_DIR neither): triton's cache dir lookup raises KeyError: 'HOME'",
                  "export HOME=... (Windows: set HOME=%USERPROFILE%) or TRITON_CACHE_DIR=...")


@check
def pip_cache_stale(ctx: Context) -> Finding:
    wheels = ctx.pip_cache_wheels
    if wheels is None:
        return skip("pip cache not inspected")
    kernels = [w for w in wheels if re.match(r"(causal_conv1d|mamba_ssm|selective_scan)-", Path(w).name)]
    if not kernels:
        return ok("no locally built kernel wheels in pip's cache")
    stale = []
    for w in kernels:
        m = re.search(r"torch(\d+\.\d+)", Path(w).name)
        if m is None or m[1] != ctx.torch.minor:
            stale.append(Path(w).name)
    if stale:
        return warn(f"pip's cache holds kernel wheels built for another (or unknown) torch: {', '.join(stale[:4])}; "
                    "pip reuses them after a torch upgrade", "pip cache remove causal_conv1d; pip cache remove mamba_ssm")
    return ok(f"{len(kernels)} cached kernel wheel(s), all for torch {ctx.torch.minor}")


@check
def stray_specifier_files(ctx: Context) -> Finding:
    stray = sorted(p.name for p in ctx.cwd.glob("=*") if re.fullmatch(r"=[\d.]+.*", p.name))
    if stray:
        return warn(f"files named {', '.join(stray)} in {ctx.cwd}: an unquoted `pip install pkg>={stray[0][1:]}` "
                    "redirected output and installed an unpinned version", "quote specifiers: pip install \"causal-conv1d>=1.2.0\"")
    return ok("no stray '=<version>' files")


@check
def wheel_version_consistent(ctx: Context) -> Finding:
    if not ctx.kernel_dists():
        return skip("no kernel package installed")
    notes, unlabelled = [], []
    for name, d in ctx.kernel_dists().items():
        url = (d.direct_url or {}).get("url", "")
        fname = url.rsplit("/", 1)[-1]
        m = re.match(r"[^-]+-([^-]+)-", fname)
        if fname.endswith(".whl") and m:
            from urllib.parse import unquote
            file_version = unquote(m[1])
            if Version(file_version) != Version(d.version):
                notes.append(f"{name}: installed from {unquote(fname)} but its METADATA says {d.version} "
                             "(an upstream wheel renamed after the build)")
        if ctx.label(name) is None:
            unlabelled.append(f"{name} {d.version}")
    if notes:
        return warn("; ".join(notes))
    if unlabelled:
        return info(f"no +cu..torch..cxx11abi.. label in {', '.join(unlabelled)}: the torch/CUDA/ABI it was built "
                    "for is unknown (symbols are checked instead)")
    return ok("file names and METADATA agree, labels present")


@check
def transformers_fast_path(ctx: Context) -> Finding:
    if not ctx.dist("transformers"):
        return skip("transformers is not installed")
    missing = [m for m in ("causal_conv1d_cuda", "selective_scan_cuda") if not ctx.py.has_module(m)]
    if missing:
        return warn(f"transformers' Mamba models will print 'The fast path is not available' and run the slow "
                    f"sequential path: {', '.join(missing)} missing")
    return ok("kernels for transformers' fast path are installed")


@check
def ngc_torch(ctx: Context) -> Finding:
    ngc = ctx.py.env.get("NVIDIA_PYTORCH_VERSION")
    nv_build = bool(ctx.torch.version and "nv" in ctx.torch.version)
    if not ngc and not nv_build:
        return ok("not an NGC PyTorch container")
    return warn(f"NGC PyTorch ({'NVIDIA_PYTORCH_VERSION=' + ngc if ngc else ctx.torch.version}): a pre-release torch "
                "with the C++11 ABI; release-torch wheels may miss symbols",
                "use wheels built in that container (`buildtool build` there) or NGC-named upstream assets")


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


# ---------------------------------------------------------------- environment variables of source builds
class _FlagRule(Frozen):
    pattern: str
    status: Literal["fail", "warn", "info"]
    why: str
    fix: str


class _EnvPolicy(Frozen):
    version: Literal[1]
    nvcc_flags: tuple[_FlagRule, ...]
    arch_names: dict[str, tuple[str, ...]]


@functools.cache
def env_policy() -> _EnvPolicy:
    return yamlsrc.load_packaged(_EnvPolicy, "doctor_env.yaml")


def _gcc_limit(nvcc_version: str) -> tuple[int, str] | None:
    cuda = load_compat().cuda
    nv = Version(nvcc_version)
    key = next((k for k in sorted((Version(k) for k in cuda), reverse=True) if k <= nv), None)
    return (cuda[f"{key.major}.{key.minor}"].max_gcc, f"{key.major}.{key.minor}") if key else None


@check
def host_compiler_env(ctx: Context) -> Finding:
    compilers = ctx.env.host.compilers
    if not compilers:
        return skip("CC and CXX are not set (torch and nvcc use the default g++)")
    nvcc = ctx.env.host.nvcc_version
    limit = _gcc_limit(nvcc) if nvcc else None
    seen = []
    for var, comp in sorted(compilers.items()):
        if comp.path is None:
            return fail(f"{var}={comp.named} is not on PATH: torch passes -ccbin ${var} to nvcc "
                        f"(CC) / builds C++ with it (CXX), so every source build stops at the first compile",
                        f"install it or unset {var}")
        if comp.kind == "gcc" and comp.version and limit is not None:
            major = int(comp.version.split(".")[0])
            if major > limit[0]:
                return fail(f"{var}={comp.named} is gcc {comp.version} ({comp.path}), newer than nvcc {nvcc} accepts "
                            f"(gcc <= {limit[0]}): torch passes -ccbin ${var} to nvcc, which stops with "
                            "'#error -- unsupported GNU version!'",
                            f"install g++-{limit[0]} and export CC=gcc-{limit[0]} CXX=g++-{limit[0]}")
        if comp.kind == "clang" and var == "CC":
            seen.append(f"{var}={comp.named} is clang {comp.version}: nvcc accepts only some clang versions as "
                        "host compiler on Linux")
            continue
        seen.append(f"{var}={comp.named} -> {comp.kind or 'compiler'} {comp.version or '?'} ({comp.path})")
    if any("clang" in s for s in seen):
        return warn("; ".join(seen), "export CC=gcc CXX=g++ for CUDA builds")
    return ok("; ".join(seen) + (f"; nvcc {nvcc} accepts gcc <= {limit[0]}" if limit else ""))


@check
def nvcc_env_flags(ctx: Context) -> Finding:
    env = ctx.py.env
    found = [(var, flag) for var in ("NVCC_PREPEND_FLAGS", "NVCC_APPEND_FLAGS") for flag in env.get(var, "").split()]
    if not found:
        return ok("NVCC_PREPEND_FLAGS and NVCC_APPEND_FLAGS are not set")
    worst: tuple[int, str, str] | None = None
    notes = []
    rank = {"info": 0, "warn": 1, "fail": 2}
    for var, flag in found:
        rule = next((r for r in env_policy().nvcc_flags if re.match(r.pattern, flag)), None)
        if rule is None:
            continue
        notes.append(f"{var} has {flag}: {rule.why}")
        if worst is None or rank[rule.status] > worst[0]:
            worst = (rank[rule.status], rule.status, rule.fix)
    if worst is None:
        return info(f"NVCC flags from the environment: {', '.join(f for _, f in found)}")
    status = {"fail": fail, "warn": warn}.get(worst[1])
    if status is None:
        return info("; ".join(notes))
    return status("; ".join(notes), worst[2])


def parse_arch_list(text: str) -> tuple[list[str], list[str]]:
    """TORCH_CUDA_ARCH_LIST ('8.0;9.0+PTX', spaces also separate, names like 'Hopper') -> (archs, bad)."""
    names = env_policy().arch_names
    archs: list[str] = []
    bad: list[str] = []
    for item in re.split(r"[;\s]+", text.strip()):
        if not item:
            continue
        base = item[:-4] if item.endswith("+PTX") else item
        if base in names:
            archs += names[base]
        elif re.fullmatch(r"\d+\.\d+[af]?", base):
            archs.append(base.rstrip("af"))
        else:
            bad.append(item)
    return archs, bad


@check
def torch_cuda_arch_list(ctx: Context) -> Finding:
    text = ctx.py.env.get("TORCH_CUDA_ARCH_LIST")
    if text is None:
        return skip("TORCH_CUDA_ARCH_LIST is not set (torch builds for the visible GPUs)")
    archs, bad = parse_arch_list(text)
    if bad or not archs:
        shown = ", ".join(repr(b) for b in bad) or repr(text)
        return fail(f"TORCH_CUDA_ARCH_LIST={text!r}: {shown} is not an arch like 8.0, 9.0+PTX or a name like Hopper; "
                    "torch stops with 'Unknown CUDA arch'")
    nvcc = ctx.env.host.nvcc_version
    if nvcc:
        cuda = load_compat().cuda
        nv = Version(nvcc)
        key = next((k for k in sorted((Version(k) for k in cuda), reverse=True) if k <= nv), None)
        info_ = cuda[f"{key.major}.{key.minor}"] if key else None
        if info_ is not None:
            unsupported = [a for a in archs if not info_.can_compile(a)]
            if unsupported:
                return fail(f"TORCH_CUDA_ARCH_LIST={text!r} has {', '.join(unsupported)}, which nvcc {nvcc} cannot "
                            f"compile ({info_.min_arch} to {info_.max_arch}): 'nvcc fatal: Unsupported gpu "
                            "architecture'")
    gpus = [g["cc"] for g in ctx.env.host.gpus if g.get("cc")]
    missing = [cc for cc in gpus if cc not in archs and not text.endswith("+PTX")]
    if missing:
        return warn(f"TORCH_CUDA_ARCH_LIST={text!r} leaves out this machine's GPU (sm_{missing[0].replace('.', '')}): "
                    "what you build here will not run here ('no kernel image is available')",
                    f"add {missing[0]} to TORCH_CUDA_ARCH_LIST")
    return ok(f"TORCH_CUDA_ARCH_LIST={text!r}: {', '.join(archs)}")
