"""The toolchain a source build would use: CUDA_HOME, nvcc, host compiler, CCCL (F08, F09, F27-F31)."""

from __future__ import annotations

from pathlib import Path

from packaging.version import Version

from buildtool.spec.compat import load_compat
from buildtool.user.doctor.checks.base import check, fail, info, ok, skip, warn
from buildtool.user.doctor.context import Context
from buildtool.user.doctor.model import Finding


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
