"""What is installed: kernel modules, pairings, triton, the Vim fork (F04-F06, F15-F19, F36)."""

from __future__ import annotations

import ast
from pathlib import Path

from packaging.version import Version

from buildtool.spec.compat import load_compat
from buildtool.user.doctor.checks.base import (
    check,
    fail,
    info,
    no_torch,
    ok,
    skip,
    torch_requires_triton,
    triton_spec,
    warn,
)
from buildtool.user.doctor.context import DIST_EXTENSIONS, Context
from buildtool.user.doctor.model import Finding


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
    triton_dist = ctx.triton_dist
    if not ctx.py.has_module("triton"):
        return fail(f"mamba-ssm {mamba} is installed but `import triton` finds nothing: Mamba2/RMSNorm kernels "
                    "(mamba_ssm.ops.triton) become None",
                    f"pip install \"{triton_dist}{triton_spec(ctx) or ''}\" (matched to torch {ctx.torch.version})")
    if Version(mamba.public) >= Version("2.0") and not ctx.py.has_module("mamba_ssm.ops.triton.layer_norm"):
        return warn("mamba_ssm.ops.triton.layer_norm is missing (renamed from layernorm in 2.0)")
    return ok(f"triton present for mamba-ssm {mamba}")


@check
def triton_matches_torch(ctx: Context) -> Finding:
    if (early := no_torch(ctx)) is not None:
        return early
    dist_name = ctx.triton_dist
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
                    f"pip install \"{dist_name}{triton_spec(ctx)}\"")
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
