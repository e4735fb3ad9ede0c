"""The GPU side of `buildtool verify`, run as `python -m buildtool.verify.worker JOB.json` in a fresh
interpreter per wheel group, with the group's install directory first on sys.path (so two causal-conv1d
versions, or mamba-ssm and Vim's fork - both `mamba_ssm` - never meet in one process).

`--probe` prints the machine (torch, CUDA, GPU, driver) as JSON and exits.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from buildtool.verify.models import CheckResult, failed, passed, skipped

NO_KERNEL_IMAGE = "no kernel image is available for execution on the device"
VIM_REFERENCE_CHECK = "numerics Vim mamba_inner_ref/bimamba_inner_ref vs fused"


def probe() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0]}
    try:
        import torch
    except Exception as exc:
        info["error"] = f"torch is not importable: {type(exc).__name__}: {exc}"
        return info
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_arch=major * 10 + minor)
        smi = shutil.which("nvidia-smi")
        if smi:
            proc = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                  capture_output=True, text=True, check=False)
            info["driver"] = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else None
    return info


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if NO_KERNEL_IMAGE in str(exc):
        return f"no kernel image for this GPU's arch (the wheel lacks its cubin and PTX): {text}"
    if "undefined symbol" in str(exc):
        return f"{text} (built against a different torch / C++ ABI than the one installed)"
    return text


def missing_dependency(exc: BaseException, own: Iterable[str]) -> str | None:
    """The top-level name of a third-party module that is not installed, if that is why an import failed."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        if top not in set(own):
            return top
    return None


def import_without_package_init(package: str) -> ModuleType:
    """Make `package` importable without running its __init__.py: upstream __init__ files import the whole
    world (transformers, huggingface_hub, tilelang...) while a block needs only its own module."""
    if package in sys.modules:
        return sys.modules[package]
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ModuleNotFoundError(f"No module named {package!r}", name=package)
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    return module


def purge(package: str) -> None:
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]


class Runner:
    """Collects CheckResults; every check runs guarded so one failure never hides the others."""

    def __init__(self, skip: list[str]) -> None:
        self.results: list[CheckResult] = []
        self.skip = skip

    def run(self, wheel: str, check: str, fn: Callable[..., Any]) -> None:
        if any(fnmatch.fnmatch(check, pat) for pat in self.skip):
            self.results.append(skipped(wheel, check, "skipped by --skip"))
            return
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            out = failed(wheel, check, f"{describe_error(exc)} [at {Path(tb.filename).name}:{tb.lineno}]")
        for r in out if isinstance(out, list) else [out]:
            numbers = dict(r.numbers)
            numbers.setdefault("seconds", round(time.perf_counter() - t0, 2))
            self.results.append(r.model_copy(update={"numbers": numbers}))


def _case_summary(wheel: str, check: str, cases: list[Any]) -> CheckResult:
    bad = [c for c in cases if not c.ok]
    worst = max((c.worst for c in cases), key=lambda c: c.ratio)
    numbers = {"cases": len(cases), "failed": len(bad), "worst_max_abs": worst.max_abs,
               "worst_of_allowed": round(worst.ratio, 4)}
    if bad:
        msgs = [c.worst.message for c in bad[:3]]
        return failed(wheel, check, f"{len(bad)}/{len(cases)} cases off: " + "; ".join(msgs), **numbers)
    return passed(wheel, check, f"{len(cases)} cases; worst {worst.message}", **numbers)


DTYPE_NAMES = ("float32", "float16", "bfloat16")
# Speed is reported, not judged, except that a kernel clearly slower than the pure-PyTorch reference means
# something is broken (a debug build, a fallback path). Tiny kernels (update) are launch-bound, hence the slack.
SLOWEST_ACCEPTED_SPEEDUP = 0.5


# ---------------------------------------------------------------- per-package checks
def check_extension_imports(r: Runner, spec: dict[str, Any]) -> dict[str, ModuleType]:
    mods: dict[str, ModuleType] = {}
    for name in spec["modules"]:
        def do(name: str = name) -> CheckResult:
            mods[name] = importlib.import_module(name)
            return passed(spec["wheel"], f"import {name}", f"from {Path(mods[name].__file__ or '?').parent}")
        r.run(spec["wheel"], f"import {name}", do)
    return mods


def check_arch(r: Runner, spec: dict[str, Any], gpu_arch: int) -> None:
    def do() -> CheckResult:
        cubins, ptx = spec.get("cubin_archs", []), spec.get("ptx_archs", [])
        if gpu_arch in cubins:
            return passed(spec["wheel"], "gpu arch embedded", f"sm_{gpu_arch} cubin present (embedded sm {cubins})",
                          gpu_arch=gpu_arch)
        jit = [p for p in ptx if p <= gpu_arch]
        if jit:
            return passed(spec["wheel"], "gpu arch embedded", f"no sm_{gpu_arch} cubin; PTX compute_{max(jit)} JIT-compiles "
                          "at first use (slow start)", gpu_arch=gpu_arch)
        return failed(spec["wheel"], "gpu arch embedded", f"sm_{gpu_arch} is not among the embedded archs {cubins} and no "
                      f"PTX <= {gpu_arch}: kernels will fail with '{NO_KERNEL_IMAGE}'", gpu_arch=gpu_arch)
    r.run(spec["wheel"], "gpu arch embedded", do)


def causal_conv1d_checks(r: Runner, spec: dict[str, Any], device: str) -> None:
    from buildtool.verify import kernels

    wheel = spec["wheel"]
    try:
        pkg = importlib.import_module("causal_conv1d")
    except Exception as exc:
        r.results.append(failed(wheel, "numerics causal_conv1d", f"cannot import causal_conv1d: {describe_error(exc)}"))
        return
    conv, update = kernels.causal_conv1d_impl(pkg), kernels.causal_conv1d_update_impl(pkg)
    for dt in DTYPE_NAMES:
        r.run(wheel, f"numerics causal_conv1d fwd+bwd {dt}",
              lambda dt=dt: _case_summary(wheel, f"numerics causal_conv1d fwd+bwd {dt}", list(kernels.conv_cases(device, dt, conv))))
        r.run(wheel, f"numerics causal_conv1d_update {dt}",
              lambda dt=dt: _case_summary(wheel, f"numerics causal_conv1d_update {dt}", list(kernels.update_cases(device, dt, update))))


def _configs(configs: tuple[Any, ...], small: bool) -> tuple[Any, ...]:
    """`small` (fixture tests on the CPU): the same configurations over a short sequence."""
    import dataclasses
    return tuple(dataclasses.replace(c, seqlen=24) for c in configs) if small else configs


def mamba_scan_checks(r: Runner, spec: dict[str, Any], mods: dict[str, ModuleType], device: str, small: bool = False) -> None:
    from buildtool.verify import kernels

    wheel = spec["wheel"]
    if "selective_scan_cuda" not in mods:
        r.results.append(failed(wheel, "numerics selective_scan", "selective_scan_cuda did not import"))
        return
    impl = kernels.mamba_scan_impl(mods["selective_scan_cuda"])
    for dt in DTYPE_NAMES:
        check = f"numerics selective_scan fwd+bwd {dt}"
        r.run(wheel, check, lambda dt=dt, check=check: _case_summary(
            wheel, check, list(kernels.scan_cases(device, dt, impl, _configs(kernels.MAMBA_SCAN_CONFIGS, small)))))
    if small:
        return
    check = "numerics selective_scan fwd+bwd float32 L2100"
    r.run(wheel, check, lambda: _case_summary(wheel, check, list(kernels.scan_cases(device, "float32", impl, (kernels.LONG_SCAN,)))))


def vmamba_scan_checks(r: Runner, spec: dict[str, Any], mods: dict[str, ModuleType], device: str, small: bool = False) -> None:
    import torch

    from buildtool.verify import kernels

    wheel = spec["wheel"]
    for name in ("selective_scan_cuda_core", "selective_scan_cuda_oflex"):
        if name not in mods:
            r.results.append(failed(wheel, f"numerics {name}", f"{name} did not import"))
            continue
        oflex = name.endswith("oflex")
        for dt in DTYPE_NAMES:
            variants = [False, True] if oflex and dt != "float32" else [False]
            for out_float in variants:
                check = f"numerics {name} fwd+bwd {dt}" + (" out_float" if out_float else "")
                impl = kernels.vmamba_scan_impl(mods[name], oflex=oflex, out_float=out_float)
                r.run(wheel, check, lambda dt=dt, impl=impl, check=check, out_float=out_float: _case_summary(
                    wheel, check, list(kernels.scan_cases(device, dt, impl, _configs(kernels.VMAMBA_SCAN_CONFIGS, small), prefix=check,
                                                          out_dtype=torch.float32 if out_float else None))))


def smoke_checks(r: Runner, job: dict[str, Any], device: str) -> None:
    from buildtool.verify import kernels, smoke

    wheels = job["wheels"]
    label = job["label"]
    own = ["mamba_ssm", "causal_conv1d", "selective_scan_cuda", "causal_conv1d_cuda"]
    mamba = wheels.get("mamba_ssm")

    def smoke_result(check: str, res: smoke.SmokeResult) -> CheckResult:
        worst = max(res.comparisons, key=lambda c: c.ratio)
        numbers = {"tensors": len(res.comparisons), "worst_of_allowed": round(worst.ratio, 4)}
        if not res.ok:
            bad = [c.message for c in res.comparisons if not c.ok][:3]
            return failed(label, check, "; ".join(bad), **numbers)
        return passed(label, check, f"{res.note}; worst {worst.message}", **numbers)

    def guarded_import(check: str, module: str) -> tuple[ModuleType | None, CheckResult | None]:
        try:
            return importlib.import_module(module), None
        except Exception as exc:
            dep = missing_dependency(exc, own)
            if dep:
                return None, skipped(label, check, f"{module} needs '{dep}', which is not installed here "
                                     f"(a runtime requirement of the wheel; install it to run this check): {describe_error(exc)}")
            return None, failed(label, check, f"cannot import {module}: {describe_error(exc)}")

    if mamba is not None:
        import_without_package_init("mamba_ssm")

        def mamba_v1() -> CheckResult:
            check = "smoke Vim bimamba-v2 block" if mamba.get("vim") else "smoke Mamba"
            _, problem = guarded_import(check, "mamba_ssm.ops.selective_scan_interface")
            mod, problem = (None, problem) if problem else guarded_import(check, "mamba_ssm.modules.mamba_simple")
            if problem or mod is None:
                return problem or failed(label, check, "import failed")
            kwargs = {"bimamba_type": "v2"} if mamba.get("vim") else {}
            res = smoke.smoke_mamba(mod.Mamba, device, **kwargs)
            if not res.fused and "causal_conv1d" in wheels:
                return failed(label, check, f"{res.note} although causal_conv1d {wheels['causal_conv1d']['version']} is installed")
            return smoke_result(check, res)

        r.run(label, "smoke Vim bimamba-v2 block" if mamba.get("vim") else "smoke Mamba", mamba_v1)
        if mamba.get("vim"):
            def vim_refs() -> CheckResult:
                check = VIM_REFERENCE_CHECK
                mod, problem = guarded_import(check, "mamba_ssm.ops.selective_scan_interface")
                if problem or mod is None:
                    return problem or failed(label, check, "import failed")
                try:
                    res = smoke.vim_reference_paths(mod, device)
                except Exception as exc:  # e.g. the unpatched 1.0-style call: 'str' object has no attribute ...
                    return failed(label, check, f"{type(exc).__name__}: {exc}")
                return smoke_result(check, res)
            r.run(label, VIM_REFERENCE_CHECK, vim_refs)
        if not mamba.get("vim"):
            def mamba2() -> CheckResult:
                mod, problem = guarded_import("smoke Mamba2", "mamba_ssm.modules.mamba2")
                if problem or mod is None:
                    return problem or failed(label, "smoke Mamba2", "import failed")
                return smoke_result("smoke Mamba2", smoke.smoke_mamba2(mod.Mamba2, device))
            r.run(label, "smoke Mamba2", mamba2)
        purge("mamba_ssm")

    scan = wheels.get("selective_scan")
    if scan is not None:
        for name in ("selective_scan_cuda_oflex", "selective_scan_cuda_core"):
            check = f"smoke VMamba SS2D ({name.rsplit('_', 1)[-1]})"

            def ss2d(name: str = name, check: str = check) -> CheckResult:
                mod = importlib.import_module(name)
                impl = kernels.vmamba_scan_impl(mod, oflex=name.endswith("oflex"))
                return smoke_result(check, smoke.smoke_ss2d(impl, device, check))
            r.run(scan["wheel"], check, ss2d)


def api_checks(r: Runner, job: dict[str, Any]) -> None:
    """The user's view: `import causal_conv1d` / `import mamba_ssm` and their public names."""
    own = ["mamba_ssm", "causal_conv1d", "selective_scan_cuda", "causal_conv1d_cuda"]
    apis = {"causal_conv1d": ["causal_conv1d_fn", "causal_conv1d_update"]}
    mamba = job["wheels"].get("mamba_ssm")
    if mamba:
        names = ["selective_scan_fn", "mamba_inner_fn", "Mamba"]
        if not mamba.get("vim") and int(mamba["version"].split(".")[0]) >= 2:
            names.append("Mamba2")
        apis["mamba_ssm"] = names
    for pkg, names in apis.items():
        spec = job["wheels"].get(pkg)
        if not spec:
            continue

        def do(pkg: str = pkg, names: list[str] = names, spec: dict[str, Any] = spec) -> CheckResult:
            if pkg == "mamba_ssm":
                purge(pkg)  # the smoke models loaded it with its __init__ bypassed; now the user's import
            try:
                module = importlib.import_module(pkg)
            except Exception as exc:
                dep = missing_dependency(exc, own)
                if dep:
                    return skipped(spec["wheel"], f"import {pkg} (public API)", f"`import {pkg}` needs '{dep}', not installed "
                                   f"here (a Requires-Dist of the wheel); extension and models were checked without it")
                raise
            missing = [n for n in names if not hasattr(module, n)]
            if missing:
                return failed(spec["wheel"], f"import {pkg} (public API)", f"{pkg} lacks {', '.join(missing)}")
            version = getattr(module, "__version__", "?")
            return passed(spec["wheel"], f"import {pkg} (public API)", f"{pkg} {version}: {', '.join(names)}")
        r.run(spec["wheel"], f"import {pkg} (public API)", do)


# ---------------------------------------------------------------- speed
def speed_checks(r: Runner, job: dict[str, Any], mods: dict[str, ModuleType], device: str) -> None:
    import torch

    from buildtool.verify import kernels
    from buildtool.verify.bench import time_ms
    from buildtool.verify.references import causal_conv1d_ref, selective_scan_ref

    def ratio_result(wheel: str, check: str, kernel: Callable[[], object], reference: Callable[[], object], shape: str) -> CheckResult:
        k = time_ms(kernel)
        ref = time_ms(reference, warmup=1, reps=3)
        speedup = ref / k if k > 0 else float("inf")
        numbers = {"kernel_ms": round(k, 4), "reference_ms": round(ref, 4), "speedup": round(speedup, 2), "shape": shape}
        detail = f"{shape}: kernel {k:.3f} ms, reference {ref:.3f} ms, {speedup:.1f}x"
        if speedup < SLOWEST_ACCEPTED_SPEEDUP:
            return failed(wheel, check, detail + f" — the kernel is more than {1 / SLOWEST_ACCEPTED_SPEEDUP:g}x slower "
                          "than the pure-PyTorch reference", **numbers)
        return passed(wheel, check, detail, **numbers)

    def grad_of(fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            out = fn()
            return torch.autograd.grad(out, inputs, torch.ones_like(out))
        return run

    cc = job["wheels"].get("causal_conv1d")
    if cc:
        def conv_speed(backward: bool) -> CheckResult:
            pkg = importlib.import_module("causal_conv1d")
            impl = kernels.causal_conv1d_impl(pkg)
            x = torch.randn(4, 1024, 2048, device=device, dtype=torch.bfloat16, requires_grad=backward)
            w = torch.randn(1024, 4, device=device, dtype=torch.bfloat16, requires_grad=backward)
            b = torch.randn(1024, device=device, dtype=torch.bfloat16, requires_grad=backward)
            def k() -> torch.Tensor:
                return impl(x, w, b, True)

            def ref() -> torch.Tensor:
                return causal_conv1d_ref(x, w, b, True)
            if backward:
                return ratio_result(cc["wheel"], "speed causal_conv1d fwd+bwd", grad_of(k, [x, w, b]), grad_of(ref, [x, w, b]),
                                    "B4 D1024 L2048 W4 bf16")
            return ratio_result(cc["wheel"], "speed causal_conv1d fwd", k, ref, "B4 D1024 L2048 W4 bf16")
        r.run(cc["wheel"], "speed causal_conv1d fwd", lambda: conv_speed(False))
        r.run(cc["wheel"], "speed causal_conv1d fwd+bwd", lambda: conv_speed(True))

        def update_speed() -> CheckResult:
            from buildtool.verify.references import causal_conv1d_update_ref
            impl = kernels.causal_conv1d_update_impl(importlib.import_module("causal_conv1d"))
            # a large batch, so neither side is pure launch overhead
            x = torch.randn(256, 4096, device=device, dtype=torch.bfloat16)
            state = torch.randn(256, 4096, 4, device=device, dtype=torch.bfloat16)
            w = torch.randn(4096, 4, device=device, dtype=torch.bfloat16)
            return ratio_result(cc["wheel"], "speed causal_conv1d_update", lambda: impl(x, state, w, None, True),
                                lambda: causal_conv1d_update_ref(x, state, w, None, True), "B256 D4096 W4 bf16")
        r.run(cc["wheel"], "speed causal_conv1d_update", update_speed)

    def scan_speed(wheel: str, check: str, impl: kernels.ScanImpl, groups: int, backward: bool) -> CheckResult:
        cfg = kernels.ScanConfig(z=False, D=True, delta_bias=True, softplus=True, groups=groups, seqlen=512)
        args = kernels.scan_inputs(device, "float32", cfg, dim=256)
        args.pop("z")
        leaves = [t.requires_grad_(backward) for t in args.values() if t is not None]

        def k() -> torch.Tensor:
            return impl(**args, delta_softplus=True)

        def ref() -> torch.Tensor:
            out = selective_scan_ref(**args, delta_softplus=True)  # type: ignore[arg-type]
            assert isinstance(out, torch.Tensor)
            return out
        shape = f"B2 D256 N16 L512 g{groups} fp32"
        if backward:
            return ratio_result(wheel, check, grad_of(k, leaves), grad_of(ref, leaves), shape)
        with torch.no_grad():
            return ratio_result(wheel, check, k, ref, shape)

    mamba = job["wheels"].get("mamba_ssm")
    if mamba and "selective_scan_cuda" in mods:
        impl = kernels.mamba_scan_impl(mods["selective_scan_cuda"])
        r.run(mamba["wheel"], "speed selective_scan fwd", lambda: scan_speed(mamba["wheel"], "speed selective_scan fwd", impl, 1, False))
        r.run(mamba["wheel"], "speed selective_scan fwd+bwd", lambda: scan_speed(mamba["wheel"], "speed selective_scan fwd+bwd", impl, 1, True))
        for bench in job.get("scan_bench", []):
            check = f"speed selective_scan {bench['name']}"
            r.run(mamba["wheel"], check, lambda bench=bench, check=check: design_shape(mamba["wheel"], check, impl, bench, device))
    scan = job["wheels"].get("selective_scan")
    if scan:
        for name in ("selective_scan_cuda_core", "selective_scan_cuda_oflex"):
            if name not in mods:
                continue
            impl = kernels.vmamba_scan_impl(mods[name], oflex=name.endswith("oflex"))
            for backward in (False, True):
                check = f"speed {name} {'fwd+bwd' if backward else 'fwd'}"
                r.run(scan["wheel"], check, lambda impl=impl, check=check, backward=backward: scan_speed(scan["wheel"], check, impl, 4, backward))


def design_shape(wheel: str, check: str, impl: Callable[..., Any], bench: dict[str, Any], device: str) -> CheckResult:
    """The DESIGN.md shapes, timed like upstream's numbers (fwd; fwd+bwd), next to the upstream baselines."""
    import torch

    from buildtool.verify import kernels
    from buildtool.verify.bench import time_ms

    fwd_call, fwd_bwd_call = kernels.scan_speed_calls(impl, device, **{k: bench[k] for k in kernels.SCAN_SHAPE_FIELDS})
    with torch.no_grad():
        fwd = time_ms(fwd_call)
    both = time_ms(fwd_bwd_call)
    numbers = {"fwd_ms": round(fwd, 4), "fwd_bwd_ms": round(both, 4), "baseline_fwd_ms": bench["baseline_fwd_ms"],
               "baseline_fwd_bwd_ms": bench["baseline_fwd_bwd_ms"], "fwd_vs_baseline": round(fwd / bench["baseline_fwd_ms"], 3),
               "fwd_bwd_vs_baseline": round(both / bench["baseline_fwd_bwd_ms"], 3)}
    return passed(wheel, check, f"fwd {fwd:.3f} ms ({numbers['fwd_vs_baseline']}x upstream's {bench['baseline_fwd_ms']} ms), "
                  f"fwd+bwd {both:.3f} ms ({numbers['fwd_bwd_vs_baseline']}x upstream's {bench['baseline_fwd_bwd_ms']} ms; "
                  "baselines from an H200)", **numbers)


# ---------------------------------------------------------------- entry
def run_job(job: dict[str, Any]) -> list[CheckResult]:
    for p in reversed(job.get("sys_path", [])):
        sys.path.insert(0, p)
    importlib.invalidate_caches()
    r = Runner(job.get("skip", []))
    import torch

    device = job.get("device", "cuda")  # "cpu" only in the fixture tests, with stand-in extension modules
    if "gpu_arch" in job:
        arch = int(job["gpu_arch"])
    else:
        major, minor = torch.cuda.get_device_capability(0)
        arch = major * 10 + minor
    mods: dict[str, ModuleType] = {}
    for spec in job["wheels"].values():
        check_arch(r, spec, arch)
        mods.update(check_extension_imports(r, spec))
    if "causal_conv1d" in job["wheels"]:
        causal_conv1d_checks(r, job["wheels"]["causal_conv1d"], device)
    if "mamba_ssm" in job["wheels"]:
        mamba_scan_checks(r, job["wheels"]["mamba_ssm"], mods, device, small=job.get("small", False))
    if "selective_scan" in job["wheels"]:
        vmamba_scan_checks(r, job["wheels"]["selective_scan"], mods, device, small=job.get("small", False))
    smoke_checks(r, job, device)
    if job.get("bench", True):
        speed_checks(r, job, mods, device)
    api_checks(r, job)
    return r.results


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--probe":
        print(json.dumps(probe()))
        return 0
    job = json.loads(Path(argv[0]).read_text())
    with contextlib.suppress(Exception):
        import warnings
        warnings.filterwarnings("ignore", category=FutureWarning)
    results = run_job(job)
    Path(job["out"]).write_text(json.dumps([r.model_dump() for r in results]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
