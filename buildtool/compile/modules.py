"""The compile stage: kernel specs into extension modules. It plans every TU (plan.py), sizes the jobs to the
machine (sizing.py), restores cached objects (cache.py), writes our own build.ninja (ninja.py, drivers.py),
runs ninja with live progress and the full log, stores new objects, and reports sizes and timings.

Importable without torch: everything about the target environment comes from the toolchain and build-env
objects (see models.py ``ToolchainLike`` / ``BuildEnvLike``) and from running the target Python once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

from buildtool.binary.elf import read_elf
from buildtool.binary.fatbin import FATBIN_SECTION, device_code_sizes
from buildtool.compile.cache import restore_cached, store_compiled
from buildtool.compile.drivers import compile_argv, link_argv
from buildtool.compile.jobserver import jobserver, plan_jobserver
from buildtool.compile.models import (
    BuildEnvLike,
    CompileBound,
    CompileRequest,
    CompileResult,
    ModuleArtifact,
    ToolchainLike,
    UnitTiming,
)
from buildtool.compile.ninja import (
    ninja_binary,
    ninja_version,
    quote_command,
    read_ninja_log,
    write_build_ninja,
)
from buildtool.compile.plan import BuildContext, PlannedModule, PlannedUnit, plan_modules
from buildtool.compile.schedule import (
    nice_levels,
    order_by_cost,
    read_unit_history,
    session_per_compile_available,
    unit_costs,
    unit_history_key,
    write_unit_history,
)
from buildtool.compile.sizing import (
    _usable_cores,
    available_memory,
    default_jobs,
    default_split_compile,
    honours_split_compile,
    split_compile_keeps_code,
    split_compile_pays,
)
from buildtool.compile.target import PythonFacts, host_compiler, query_python, tool_identity
from buildtool.compile.units import nvcc_threads
from buildtool.errors import BuildError, UserError
from buildtool.host import default_cache_dir
from buildtool.spec.kernelspec import KernelSpec, TargetFacts
from buildtool.versions import major_minor


# ------------------------------------------------------------------------------------------- the stage
def compile_modules(request: CompileRequest, toolchain: ToolchainLike, env: BuildEnvLike) -> CompileResult:
    """Compile and link every spec's module for ``request.cell``; returns the module files and build
    statistics. ``request.cache_dir`` holds the object cache (default: the user cache dir,
    ``buildtool.host.default_cache_dir``); ``split=False`` compiles every source as one TU, ignoring the specs'
    split rules (for comparisons); ``split_compile``: nvcc -split-compile threads (default:
    ``default_split_compile``; 1 turns it off)."""
    from buildtool.compile.progress import STATUS_MARK, NinjaProgress

    started = time.monotonic()
    cell, specs, split_compile, quiet = request.cell, list(request.specs), request.split_compile, request.quiet
    tree, build_dir = request.tree.resolve(), request.build_dir.resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    log_path = request.log_path.resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    python = query_python(Path(env.python))
    ext_suffix = env.ext_suffix or python.ext_suffix
    python = PythonFacts(python.version, ext_suffix, python.include_dirs, python.lib_dirs)
    cxx = host_compiler(toolchain.host)
    facts = TargetFacts.from_cell(cell, cuda=major_minor(toolchain.cuda_version), compiler=cxx.kind,
                                  cuda_home=str(Path(toolchain.cuda_home)))
    python_dirs = {os.path.normpath(d) for d in python.include_dirs}
    torch_includes = tuple(str(d) for d in env.include_dirs if os.path.normpath(str(d)) not in python_dirs)
    cache_root = None
    if request.use_object_cache:
        cache_root = request.cache_dir or default_cache_dir()
    split_by_default = split_compile is None
    if split_compile is None:
        split_compile = default_split_compile(toolchain.cuda_version)
    elif split_compile < 1:
        raise UserError(f"split_compile must be at least 1 (1 turns nvcc -split-compile off), not {split_compile}")
    elif not honours_split_compile(toolchain.cuda_version):
        split_compile = 1  # an explicit --split-compile applies to the cells whose nvcc honours it
    if split_compile > 1 and not split_compile_keeps_code(facts.archs):
        split_compile = 1  # it would change Blackwell's code (and cache keys leave it out): never there
    threads = nvcc_threads(facts.archs, facts.ptx)
    run_env = {**os.environ, **{k: str(v) for k, v in toolchain.env.items()}}
    ninja = ninja_binary(run_env)
    ctx = BuildContext(
        tree, build_dir, facts, toolchain, env, cxx, python, torch_includes, cache_root,
        nvcc_identity=tool_identity((str(toolchain.nvcc), "--version")),
        host_identity=(tool_identity((cxx.path, "--version")) if cxx.kind == "gcc"
                       else f"{cxx.path} {toolchain.host.version}"),
        split_compile=split_compile,
    )

    jobs = request.jobs or default_jobs(threads, memory=available_memory(), split_compile=split_compile)
    history = read_unit_history(cache_root)

    def specs_for(split_compile: int) -> list[KernelSpec]:
        # split rules apply per machine size (min_jobs); split=False compiles every source whole
        return [s.for_jobs(jobs, split_compile) if request.split else s.model_copy(update={"split": ()})
                for s in specs]

    def plan(ctx: BuildContext, planned_specs: list[KernelSpec]) -> tuple[list[PlannedModule], int,
                                                                           list[PlannedUnit], dict[str, float]]:
        modules = plan_modules(ctx, planned_specs)
        hits = restore_cached(ctx, modules)
        to_compile = [u for m in modules for u in m.units if not u.cached]
        return modules, hits, to_compile, unit_costs(ctx, to_compile, history)

    planned_specs = specs_for(split_compile)
    modules, hits, to_compile, costs = plan(ctx, planned_specs)
    split_note = ""
    if split_by_default and split_compile > 1 and costs and not split_compile_pays(list(costs.values()), jobs):
        # the TUs keep every core busy without it: its extra CPU would only make the build longer
        split_compile, split_note = 1, " (the TUs keep the cores busy without it)"
        ctx = dataclasses.replace(ctx, split_compile=1)
        unsplit_specs = specs_for(1)
        if unsplit_specs != planned_specs:  # other split rules (without_split_compile): other TUs to plan
            modules, hits, to_compile, costs = plan(ctx, unsplit_specs)
    pool = plan_jobserver(wanted=request.jobserver, windows=facts.os == "windows", cuda_version=toolchain.cuda_version,
                          ninja_version=ninja_version(ninja) if request.jobserver else None,
                          nvcc_workers=split_compile * threads,
                          cores=_usable_cores())
    ctx = dataclasses.replace(ctx, jobserver=pool.enabled)
    for m in modules:
        m.link_command = link_argv(ctx, m)
    launcher = shutil.which("ccache", path=run_env.get("PATH")) if request.use_ccache else None
    nice = nice_levels(unit_costs(ctx, to_compile, {})) if request.priorities else None
    session = session_per_compile_available() if request.fair_share else None  # build.ninja drops it on Windows
    # under a jobserver ninja runs without -j (it would ignore the pool), so a ninja pool caps the compiles
    ninja_file = write_build_ninja(ctx, modules, launcher, costs, nice, compile_pool=jobs if pool.enabled else None,
                                   session=session)
    to_compile = order_by_cost(to_compile, costs)

    usage_before = _children_usage()
    with open(log_path, "a", encoding="utf-8") as log:  # the caller's cell log: append
        log.write(f"# buildtool compile: {', '.join(s.name for s in specs)} for {cell.id}\n")
        log.write(f"# tree {tree}\n# build.ninja {ninja_file}\n# jobs {jobs}, nvcc --threads {threads}, "
                  f"-split-compile {split_compile if split_compile > 1 else 'off'}{split_note}, "
                  f"jobserver {pool.reason}, session per compile {'on' if session else 'off'}, ccache {launcher or 'off'}, object cache {cache_root or 'off'}: "
                  f"{hits} hits, {len(to_compile)} to compile\n")
        for u in to_compile:
            origin = "measured" if unit_history_key(u, _targets(ctx)) in history else "estimated"
            prio = f", nice {nice[u.label]}" if nice else ""
            log.write(f"# {u.label} ({origin} cost {costs[u.label]:.0f} s{prio}): {quote_command(compile_argv(ctx, u), ctx.windows)}\n")
        log.flush()
        progress = NinjaProgress(
            units={str(u.object_path): u.label for u in to_compile}, log=log, quiet=quiet,
            title=", ".join(s.module for s in specs),
        )
        argv = [ninja, "-C", str(build_dir), "-f", ninja_file.name, *([] if pool.enabled else ["-j", str(jobs)]),
                "-k", "1"]
        ninja_env = {**run_env, "NINJA_STATUS": STATUS_MARK + "%f/%t| "}
        with jobserver(pool.slots) if pool.enabled else contextlib.nullcontext() as tokens:
            ninja_started = time.monotonic()
            code = progress.run(argv, tokens.environ(ninja_env) if tokens else ninja_env)
            ninja_seconds = time.monotonic() - ninja_started
    if code != 0:
        raise BuildError(
            f"compiling {', '.join(s.module for s in specs)} failed"
            + (f" in {progress.failed[0]}" if progress.failed else "")
            + ("\n" + "\n".join(progress.error_excerpt(40)) if progress.error_excerpt(40) else ""),
            hint=f"full log: {log_path}",
        )
    cpu, rss = _children_usage_delta(usage_before)
    misses = store_compiled(ctx, modules)
    seconds = read_ninja_log(build_dir)
    timings = [
        UnitTiming(module=pu.spec.module, unit=pu.unit.name, cached=pu.cached,
                   seconds=0.0 if pu.cached else seconds.get(os.path.normpath(str(pu.object_path)), 0.0))
        for m in modules for pu in m.units
    ]
    timings.sort(key=lambda t: (-t.seconds, t.unit))
    write_unit_history(cache_root, {
        unit_history_key(pu, _targets(ctx)): seconds[os.path.normpath(str(pu.object_path))]
        for pu in to_compile if os.path.normpath(str(pu.object_path)) in seconds
    })
    bound = (CompileBound(cores=_usable_cores(), wall_seconds=round(ninja_seconds, 2), cpu_seconds=cpu)
             if to_compile and cpu is not None else None)
    artifacts = []
    for m in modules:
        if not m.output.is_file():
            raise BuildError(f"link produced no {m.output}", hint=f"full log: {log_path}")
        elf = read_elf(m.output, sections=(FATBIN_SECTION,))
        fatbin = elf.fatbin if elf is not None else ()  # a Windows .pyd carries none we can read
        artifacts.append(ModuleArtifact(name=m.spec.module, package=m.spec.package, path=m.output,
                                        size=m.output.stat().st_size, device_code=device_code_sizes(fatbin),
                                        device_code_uncompressed=device_code_sizes(fatbin, uncompressed=True)))
    return CompileResult(
        modules=tuple(artifacts), timings=tuple(timings), cache_hits=hits, cache_misses=misses,
        ccache=launcher is not None, jobs=jobs, split_compile=split_compile, jobserver=pool.slots,
        wall_seconds=round(time.monotonic() - started, 3),
        cpu_seconds=cpu, peak_rss_mb=rss, log_path=log_path, build_ninja=ninja_file,
        kernels=tuple(m.resolved for m in modules), bound=bound,
    )


def _targets(ctx: BuildContext) -> int:
    return len(ctx.facts.archs) + (1 if ctx.facts.ptx else 0)


def _children_usage() -> tuple[float, float] | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime, float(ru.ru_maxrss)


def _children_usage_delta(before: tuple[float, float] | None) -> tuple[float | None, float | None]:
    after = _children_usage()
    if before is None or after is None:
        return None, None
    # ru_maxrss is KiB on Linux (bytes on macOS); a maximum over all waited-for descendants, not a delta.
    scale = 1 / (1024 * 1024) if sys.platform == "darwin" else 1 / 1024
    return round(after[0] - before[0], 2), round(after[1] * scale, 1)
