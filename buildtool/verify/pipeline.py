"""`verify`: static checks for every wheel, then the GPU checks per wheel group, into one Report."""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from buildtool import interp
from buildtool.errors import UserError
from buildtool.verify import gpu, stableabi
from buildtool.verify import requirements as requirements_check
from buildtool.verify.models import CheckResult, Environment, Report, failed, skipped
from buildtool.verify.record import GpuRun, write_records
from buildtool.verify.static import OpenedWheel, TargetLibs, find_cuobjdump, static_checks


@dataclass(frozen=True)
class VerifyOptions:
    gpu: bool = True             # False: static checks only; GPU checks reported as skipped
    require_gpu: bool = False    # a missing GPU is a failure (GPU CI runners)
    bench: bool = True
    skip: tuple[str, ...] = ()   # fnmatch patterns of GPU check names
    timeout: int = 900           # seconds per wheel group
    keep: Path | None = None     # keep install dirs and job files here
    python: str = sys.executable
    requirements: bool = True    # install each wheel with its requirements from `index` and import it (no GPU)
    index: str = requirements_check.PYPI
    records: Path | None = None  # write a GPU verification record per passing wheel here (record.py)


def collect_wheels(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(sorted(p.glob("*.whl")))
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"{p}: no such wheel or directory")
    if not found:
        raise UserError("no wheels to verify", hint="pass wheel files or a directory holding them, e.g. dist/")
    return found


def _declared_requirements(contents: Sequence[OpenedWheel], options: VerifyOptions) -> list[CheckResult]:
    """The declared-requirements check for each wheel built for the verifying interpreter's torch minor."""
    if not contents:
        return []
    found = requirements_check.torch_site(options.python)
    out: list[CheckResult] = []
    for wc in contents:
        label = wc.name.label
        if found is None:
            out.append(skipped(wc.path.name, requirements_check.CHECK, f"{options.python} has no importable torch"))
        elif label is not None and label.torch is not None and not found[1].startswith(label.torch + "."):
            out.append(skipped(wc.path.name, requirements_check.CHECK,
                               f"built for torch {label.torch}, this interpreter has torch {found[1]}"))
        else:
            out.append(requirements_check.check_declared_requirements(wc, python=options.python, index=options.index,
                                                                      keep=options.keep))
    return out


def verify_static(path: Path, *, site_dirs: Sequence[Path] = ()) -> tuple[CheckResult, ...]:
    """The checks `buildtool build` runs on each wheel it writes, before the wheel reaches dist/: every static
    check of `buildtool verify` (name, RECORD, provenance, shared libraries against the torch in
    ``site_dirs``, GLIBC, embedded archs; stable-ABI symbols and abi3audit), none needing a GPU or the network."""
    target = TargetLibs.discover(site_dirs) if site_dirs else None
    wc, rows = static_checks(path, target=target, cuobjdump=find_cuobjdump())
    if wc is not None and stableabi.is_stable_wheel(wc):
        rows += [stableabi.check_stable_symbols(wc), stableabi.check_abi3audit(wc, stableabi.find_abi3audit())]
    return tuple(rows)


def verify(paths: Sequence[Path], options: VerifyOptions | None = None) -> Report:
    options = options or VerifyOptions()
    wheels = collect_wheels(paths)
    target = TargetLibs.discover()
    cuobjdump = find_cuobjdump()
    abi3audit = stableabi.find_abi3audit()
    results: list[CheckResult] = []
    contents: list[OpenedWheel] = []
    for w in wheels:
        wc, rows = static_checks(w, target=target, cuobjdump=cuobjdump)
        results.extend(rows)
        if wc is not None and stableabi.is_stable_wheel(wc):
            results += [stableabi.check_stable_symbols(wc), stableabi.check_abi3audit(wc, abi3audit)]
        if wc is not None:
            contents.append(wc)
    if options.requirements:
        results.extend(_declared_requirements(contents, options))
    env = Environment(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), host_python=sys.version.split()[0],
                      platform=f"{platform.system()} {platform.machine()} {platform.release()}", cuobjdump=cuobjdump)
    if not options.gpu:
        results.extend(gpu.no_gpu_results(contents, "GPU checks not requested (--static-only)"))
        return Report(environment=env, wheels=tuple(w.name for w in wheels), results=tuple(results))
    info = gpu.probe(options.python)
    env = env.model_copy(update={"torch": info.get("torch"), "torch_cuda": info.get("torch_cuda"), "gpu": info.get("gpu"),
                                 "gpu_arch": f"sm_{info['gpu_arch']}" if info.get("gpu_arch") else None,
                                 "driver": info.get("driver"), "note": info.get("error", "")})
    if not info.get("cuda_available"):
        reason = info.get("error") or "torch.cuda.is_available() is False on this machine"
        results.extend(gpu.no_gpu_results(contents, reason))
        if options.require_gpu:
            results.append(failed("-", "gpu required", f"--require-gpu was given but there is no usable GPU: {reason}"))
        return Report(environment=env, wheels=tuple(w.name for w in wheels), results=tuple(results))
    groups, notes = gpu.group_wheels(contents)
    results.extend(notes)
    runs: list[GpuRun] = []
    for group in groups:
        foreign = [w for w in group.wheels.values() if not gpu.compatible_with_interpreter(w)]
        if foreign:
            results.extend(skipped(w.label, "gpu checks", f"not installable by this interpreter (Python "
                                   f"{interp.running_version()}, {platform.machine()}): "
                                   f"tags {w.name.python_tag}-{w.name.abi_tag}-{w.name.platform_tag}")
                           for w in group.wheels.values())
            continue
        rows = gpu.run_group(group, skip=list(options.skip), bench=options.bench, timeout=options.timeout,
                             python=options.python, keep=options.keep)
        results.extend(rows)
        runs.append(GpuRun(label=group.label, wheels=tuple(w.path.name for w in group.wheels.values()), rows=tuple(rows)))
    report = Report(environment=env, wheels=tuple(w.name for w in wheels), results=tuple(results))
    if options.records is not None:
        write_records(report, runs, wheels, options.records)
    return report
