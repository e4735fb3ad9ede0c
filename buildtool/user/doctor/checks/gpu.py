"""The GPU and its driver: archs in the wheels, libcuda, triton and torch support (F12, F13, F20, F25, F39)."""

from __future__ import annotations

from pathlib import Path

from packaging.version import Version

from buildtool.user.doctor.checks.base import check, fail, info, ok, skip, warn
from buildtool.user.doctor.context import Context
from buildtool.user.doctor.model import Finding
from buildtool.user.resolve import arch_covered


# ---------------------------------------------------------------- GPU and driver (F12, F13, F20, F25, F39)
def _gpus(ctx: Context) -> list[dict[str, str]]:
    return list(ctx.env.host.gpus) or [dict(d) for d in ctx.torch.devices]


def _archs(ctx: Context, dist: str) -> tuple[tuple[str, ...], str | None]:
    d = ctx.dist(dist)
    prov = d.provenance if d else None
    if prov is None:
        return (), None
    return prov.cell.archs, prov.ptx_arch


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
        nvcc = d.provenance.toolchain.cuda_version if d.provenance else None
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
    dist = ctx.triton_dist
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
        floor = d.provenance.min_driver_cuda if d.provenance else None
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
