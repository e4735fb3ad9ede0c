"""Python and OS: headers, triton distribution, HOME, pip cache, stray files, versions (F21-F23, F35, F37, F40-F42)."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.version import Version

from buildtool.user.doctor.checks.base import check, fail, info, ok, skip, triton_spec, warn
from buildtool.user.doctor.context import Context
from buildtool.user.doctor.model import Finding


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
                        f"pip uninstall triton && pip install \"triton-windows{triton_spec(ctx) or ''}\"")
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


