"""torch, C++ ABI and CUDA major of the installed kernels (F01-F03)."""

from __future__ import annotations

import re
from pathlib import Path

from buildtool import interp
from buildtool.binary.elf import torch_symbols
from buildtool.spec.abitrack import is_stable_library
from buildtool.user.doctor.checks.base import check, fail, no_extensions, no_torch, ok, skip
from buildtool.user.doctor.context import Context, demangle
from buildtool.user.doctor.model import Finding


# ---------------------------------------------------------------- torch / ABI / CUDA (F01-F03)
@check
def torch_symbols_resolved(ctx: Context) -> Finding:
    if (early := no_torch(ctx)) or (early := no_extensions(ctx)):
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
    if (early := no_torch(ctx)) or (early := no_extensions(ctx)):
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
    if (early := no_torch(ctx)) or (early := no_extensions(ctx)):
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
    if (early := no_torch(ctx)) or (early := no_extensions(ctx)):
        return early
    modules = sorted({e.module for e in ctx.extensions if e.path.exists() and not is_stable_library(e.path.name)})
    # Stable-ABI libraries have no PyInit: torch loads them (and registers their ops), as their shims do.
    libraries = sorted({str(e.path) for e in ctx.extensions if e.path.exists() and is_stable_library(e.path.name)})
    failures = []
    for m in [*modules, *libraries]:
        code = f"import torch\ntorch.ops.load_library({m!r})" if m in libraries else f"import torch\nimport {m}"
        proc = interp.run_code(ctx.py.executable, code, timeout=300, cwd=ctx.cwd)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            failures.append(f"{m}: {last[:300]}")
    if failures:
        return fail("; ".join(failures))
    return ok(f"imported {', '.join(modules)}" + (f"; loaded {', '.join(Path(x).name for x in libraries)}"
                                                  if libraries else ""))
