"""One cell, end to end: toolchain -> prepare -> build env -> compile -> wheel -> repair -> dist/.

The toolchain is resolved first (it is cheap and the most common failure: a missing CUDA must fail in
seconds, before sources are fetched or torch is installed). Every cell has a persistent work directory,
build/cells/<cell-id>/, holding the prepared tree and ninja's objects, so an interrupted build continues
where it stopped. The wheel reaches dist/ only through an atomic rename of a finished file
(dist/.partial-<pid>-<random> -> dist/<name>.whl): an interrupt leaves no partial wheel there.

`build_tree` (prepared tree + toolchain + env -> wheel) is shared with the PEP 517 backend
(buildtool.backend), so `pip wheel` on a prepared tree and `buildtool build` run the same code.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from packaging.version import Version
from pydantic import Field

from buildtool import __version__
from buildtool.build.dist import _sweep_partials, existing_wheels, publish
from buildtool.build.lock import lock_cell
from buildtool.build.provenance import (
    ResumeKey,
    _env_summary,
    make_provenance,
    module_flags,
    provenance_matches,
    stable_source,
)
from buildtool.compile.models import CompileRequest, CompileSettings
from buildtool.errors import BuildError, BuildtoolError
from buildtool.host import host_platform
from buildtool.model import Frozen
from buildtool.source.fetch import file_sha256
from buildtool.source.prepare import TreeProvenance
from buildtool.spec.compat import load_compat
from buildtool.spec.matrix import Cell
from buildtool.spec.project import Project
from buildtool.spec.recipe import Recipe, load_recipes
from buildtool.verify.record import Verification, read_record, verification_status
from buildtool.wheel.name import WheelName
from buildtool.wheel.provenance import Provenance
from buildtool.wheel.reader import read_wheel_provenance
from buildtool.wheel.repair import RepairResult, repair_wheel
from buildtool.wheel.write import (
    WheelContents,
    collect_python_files,
    metadata_text,
    source_date_epoch,
    wheel_name_for,
    write_wheel,
)

if TYPE_CHECKING:
    from buildtool.build.buildenv import BuildEnv
    from buildtool.toolchain.models import Toolchain


__all__ = [
    "BuildOptions",
    "CellPaths",
    "CellResult",
    "build_cell",
    "build_tree",
    "cell_paths",
]


# "built" never stands alone as a success: a wheel `buildtool build` writes passed the static checks
# (verified-static); "verified": a `buildtool verify` GPU run passed a wheel with the same bytes (record.py).
Status = Literal["built", "verified-static", "verified", "resumed", "skipped", "failed"]


class BuildOptions(Frozen):
    toolchain: Literal["auto", "system", "pypi", "debian", "conda"] = "auto"
    use_current_env: bool = False
    build_python: Path | None = None  # build against this interpreter's torch (an existing env)
    index_url: str | None = None
    source_mirror: Path | None = None
    dist_dir: Path
    build_root: Path
    compile: CompileSettings = CompileSettings()
    resume: bool = False


class CellPaths(Frozen):
    work: Path     # build/cells/<id>: survives interruption
    tree: Path     # the prepared source tree
    objects: Path  # ninja's build directory
    staging: Path  # wheels before they are published
    log: Path      # build/logs/<id>.log: the full log
    report: Path   # build/logs/<id>.json: timings and result, for people and CI


class CellResult(Frozen):
    cell_id: str
    status: Status
    seconds: float
    log: Path
    wheel: Path | None = None
    size: int | None = None
    message: str = ""
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = Field(default_factory=dict)
    slowest_tu: str | None = None
    compile_bound: dict[str, Any] | None = None  # compile.modules.CompileBound.summary(): wall vs max(TU, CPU/cores)
    verification: Verification | None = None  # how far the wheel (built or resumed) was verified
    checks: dict[str, str] = Field(default_factory=dict)  # static check -> pass / skip (verify/pipeline.verify_static)


def cell_paths(build_root: Path, cell: Cell) -> CellPaths:
    work = build_root / "cells" / cell.id
    return CellPaths(work=work, tree=work / "src", objects=work / "obj", staging=work / "wheel",
                     log=build_root / "logs" / f"{cell.id}.log", report=build_root / "logs" / f"{cell.id}.json")


# ---------------------------------------------------------------- logging
class CellLog:
    """Appends timestamped step lines to the cell's log file; tools append their own output to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def line(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")


@contextlib.contextmanager
def _step(name: str, timings: dict[str, float], log: CellLog) -> Iterator[None]:
    log.line(f"== {name}")
    start = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(time.monotonic() - start, 2)
        log.line(f"== {name}: {timings[name]:.1f} s")


# ---------------------------------------------------------------- shared core
class BuiltWheel(Frozen):
    wheel: Path
    repair: RepairResult | None  # None: left as built (the PEP 517 backend; `buildtool repair` follows)
    provenance: Provenance
    compile_seconds: dict[str, float] = Field(default_factory=dict)
    notes: tuple[str, ...] = ()
    compile_bound: dict[str, Any] | None = None


def without_bad_sass(cell: Cell, nvcc_version: str, log: CellLog | None = None) -> Cell:
    """The cell with the SASS its toolkit miscompiles for this package replaced (data/bad_sass.yaml)."""
    from buildtool.spec.badsass import safe_archs

    archs, ptx, applied = safe_archs(cell.package, cell.version, cell.archs, cell.ptx, nvcc_version)
    for rule in applied:
        if log is not None:
            log.line(f"archs: sm_{rule.arch.replace('.', '')} -> sm_{rule.instead.replace('.', '')} SASS with nvcc "
                     f"{nvcc_version}: {rule.text}")
    return cell if archs == tuple(cell.archs) else cell.model_copy(update={"archs": archs, "ptx": ptx})


def resolve_kernels(tree: Path, recipe: Recipe, cell: Cell, toolchain: Toolchain) -> list[Any]:
    """The recipe's kernel specs (copied into the tree by prepare) resolved for the cell and toolchain."""
    from buildtool.compile.units import resolve
    from buildtool.spec import kernelspec

    specs_dir = tree / ".buildtool" / "kernels"
    specs = kernelspec.load_kernel_specs(specs_dir, recipe.get(cell.version).kernels_for(cell.abi))
    # The same facts the compile stage derives (major.minor CUDA, gcc or msvc), so flags recorded here are
    # the flags it uses.
    facts = kernelspec.TargetFacts.from_cell(cell, cuda=toolchain.cuda_minor,
                                             compiler="msvc" if toolchain.host.kind == "msvc" else "gcc",
                                             cuda_home=str(toolchain.cuda_home))
    return [resolve(spec, facts) for spec in specs]


def build_tree(*, tree: Path, tree_provenance: TreeProvenance, recipe: Recipe, cell: Cell,
               toolchain: Toolchain, env: BuildEnv, objects: Path, staging: Path, log: CellLog,
               settings: CompileSettings = CompileSettings(),
               timings: dict[str, float] | None = None, repair: bool = True) -> BuiltWheel:
    """Compile the cell's kernels in a prepared tree and assemble (and, with ``repair``, repair) the wheel
    into ``staging``."""
    from buildtool.compile import modules as compile_stage
    from buildtool.spec import kernelspec

    timings = timings if timings is not None else {}
    version = recipe.get(cell.version)
    specs = kernelspec.load_kernel_specs(tree / ".buildtool" / "kernels", version.kernels_for(cell.abi))
    with _step("compile", timings, log):
        request = CompileRequest.for_settings(settings, tree=tree, specs=tuple(specs), cell=cell, build_dir=objects,
                                              log_path=log.path)
        result = compile_stage.compile_modules(request, toolchain, env)
    # Record what was compiled (the split depends on the job count), not every part a spec could generate.
    compiled = list(result.kernels) or resolve_kernels(tree, recipe, cell, toolchain)
    drivers = [Version(k.min_driver_cuda) for k in compiled if getattr(k, "min_driver_cuda", "")]
    provenance = make_provenance(cell=cell, tree_provenance=tree_provenance, toolchain=toolchain, env=env,
                                 modules=module_flags(compiled), tree_root=tree,
                                 min_driver_cuda=str(max(drivers)) if drivers else None)
    log.line(f"compile: {len(result.modules)} module(s), {result.cache_hits} cached / {result.cache_misses} compiled "
             f"object(s), {result.jobs} job(s), -split-compile {result.split_compile}, "
             f"jobserver {getattr(result, 'jobserver', 0) or 'off'}, {result.wall_seconds:.1f} s")
    compile_bound = getattr(result, "bound", None)
    bound = compile_bound.summary() if compile_bound is not None else None
    if bound:
        log.line(f"compile vs bound: {bound['wall_seconds']:.1f} s against max(longest TU alone, "
                 f"{bound['cpu_seconds']:.0f} CPU-s / {bound['cores']} cores = {bound['bound_seconds']:.1f} s) "
                 f"= {bound['ratio']:.2f}x")
    files: dict[str, bytes | Path] = dict(collect_python_files(tree, version.python_packages))
    for arcname, module_path in _compiled_paths(result):
        files[arcname] = module_path
    for shim in _shim_files(tree, tree_provenance):
        files[shim.name] = shim
    plain = load_compat().platforms[cell.platform].wheel_tag
    name = wheel_name_for(recipe, cell, plain)
    epoch = source_date_epoch(stable_source(tree_provenance).source_date_epoch)
    raw_dir = staging / "raw"
    shutil.rmtree(raw_dir, ignore_errors=True)
    with _step("wheel", timings, log):
        raw = write_wheel(WheelContents(name=name, files=files, metadata=metadata_text(recipe, version, cell, name.full_version),
                                        provenance=provenance), raw_dir, epoch=epoch)
    if not repair:
        return BuiltWheel(wheel=raw, repair=None, provenance=provenance, compile_seconds=_unit_seconds(result))
    final_dir = staging / "final"
    shutil.rmtree(final_dir, ignore_errors=True)
    with _step("repair", timings, log):
        repaired = repair_wheel(raw, final_dir, platform=cell.platform, cuda=cell.cuda, log=log.path, epoch=epoch)
    for note in repaired.notes:
        log.line(f"repair: {note}")
    return BuiltWheel(wheel=repaired.wheel, repair=repaired, provenance=provenance,
                      compile_seconds=_unit_seconds(result), notes=repaired.notes, compile_bound=bound)


def _compiled_paths(result: Any) -> list[tuple[str, Path]]:
    """(path in the wheel, file) per compiled module: inside its spec's package, else at the top level."""
    modules = getattr(result, "modules", None)
    if modules is None:
        raise BuildError("the compile stage returned no modules")
    paths = []
    for module in modules:
        path = Path(getattr(module, "path", module))
        package = getattr(module, "package", "") or ""
        paths.append((f"{package.replace('.', '/')}/{path.name}" if package else path.name, path))
    return paths


def _shim_files(tree: Path, tree_provenance: TreeProvenance) -> list[Path]:
    """The stable track's shim modules prepare copied into the tree (upstream's old extension names)."""
    from buildtool.source.prepare import META_DIR, SHIM_DIR

    out = []
    for name in tree_provenance.shims:
        path = tree / META_DIR / SHIM_DIR / name
        if not path.is_file():
            raise BuildError(f"the prepared tree lacks the shim {name} ({path})", hint="prepare the tree again")
        out.append(path)
    return out


def _unit_seconds(result: Any) -> dict[str, float]:
    """Compiled translation units -> seconds (cache hits left out), from compile.CompileResult.timings."""
    return {f"{t.module}:{t.unit}": float(t.seconds) for t in getattr(result, "timings", ()) if not t.cached}


# ---------------------------------------------------------------- one cell
def build_cell(project: Project, cell: Cell, options: BuildOptions, *,
               toolchains: dict[tuple[str, str], Any] | None = None,
               recipes: Mapping[str, Recipe] | None = None,
               on_step: Callable[[str], None] | None = None) -> CellResult:
    """Build one cell into ``options.dist_dir``. Failures become a failed CellResult (never an exception),
    except KeyboardInterrupt, which propagates after cleanup so the runner can stop."""
    paths = cell_paths(options.build_root, cell)
    log = CellLog(paths.log)
    log.line(f"buildtool {__version__}: building {cell.id}")
    timings: dict[str, float] = {}
    start = time.monotonic()

    def result(status: Status, message: str = "", wheel: Path | None = None,
               notes: Sequence[str] = (), slowest: str | None = None,
               bound: dict[str, Any] | None = None, checks: Mapping[str, str] | None = None) -> CellResult:
        verification = _verification(wheel, checks, log)
        if status == "verified-static" and verification == "verified":
            status = "verified"
        res = CellResult(cell_id=cell.id, status=status, seconds=round(time.monotonic() - start, 2), log=paths.log,
                         wheel=wheel, size=wheel.stat().st_size if wheel else None, message=message,
                         notes=tuple(notes), timings=dict(timings), slowest_tu=slowest, compile_bound=bound,
                         verification=verification, checks=dict(checks or {}))
        log.line(f"result: {status} {message}")
        paths.report.write_text(json.dumps(res.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
        return res

    def step(name: str) -> contextlib.AbstractContextManager[None]:
        if on_step is not None:
            on_step(name)
        return _step(name, timings, log)

    lock = None
    try:
        here = host_platform()
        host = here if here in load_compat().platforms else None
        if host != cell.platform:
            return result("skipped", f"{cell.platform} cells build on {cell.platform} (this machine: {host or 'unknown'})")
        recipe = (recipes or load_recipes(project.recipes_dir))[cell.package]
        lock = lock_cell(paths.work)
        if lock.previous:
            log.line(f"work dir lock: the previous build ({lock.previous}) ended without releasing it "
                     "(killed); its compilers are gone, since they held the lock too")
        with step("toolchain"):
            toolchain = _toolchain_for(cell, options, toolchains, log)
        cell = without_bad_sass(cell, toolchain.cuda_version, log)
        with step("prepare"):
            tree_provenance = _prepare(project, cell, options, paths, log)
        options.dist_dir.mkdir(parents=True, exist_ok=True)
        _sweep_partials(options.dist_dir)
        plain = load_compat().platforms[cell.platform].wheel_tag
        name = wheel_name_for(recipe, cell, plain)
        if options.resume:
            resumed = _try_resume(project, cell, recipe, toolchain, tree_provenance, paths, options, name, log)
            if resumed is not None:
                with step("verify"):
                    checks = static_verification(resumed, log)
                return result("resumed", "wheel exists with the same provenance", resumed, checks=checks)
        with step("build env"):
            env = _build_env(cell, options, log)
        built = build_tree(tree=paths.tree, tree_provenance=tree_provenance, recipe=recipe, cell=cell,
                           toolchain=toolchain, env=env, objects=paths.objects, staging=paths.staging, log=log,
                           settings=options.compile, timings=timings)
        with step("verify"):
            checks = static_verification(built.wheel, log, site_dirs=(env.site_packages,))
        with step("publish"):
            final = publish(built.wheel, options.dist_dir)
            for stale in existing_wheels(options.dist_dir, name):
                if stale != final:
                    stale.unlink(missing_ok=True)
                    log.line(f"removed stale {stale.name}")
        slowest_name = None
        if built.compile_seconds:
            slowest_name, seconds = max(built.compile_seconds.items(), key=lambda kv: kv[1])
            timings["slowest_tu"] = seconds
            log.line(f"slowest translation unit: {slowest_name} {seconds:.1f} s")
        return result("verified-static", "", final, built.notes, slowest_name, built.compile_bound, checks)
    except BuildtoolError as exc:  # any class: the cell failed, the matrix goes on
        return result("failed", str(exc))
    except KeyboardInterrupt:
        log.line("interrupted: dist/ untouched; the build directory is kept so the next run continues")
        raise
    except Exception as exc:  # a bug in a stage must not take the other cells down
        import traceback

        log.line("internal error:\n" + traceback.format_exc())
        return result("failed", f"internal error ({type(exc).__name__}: {exc}); traceback in {paths.log}")
    finally:
        if lock is not None:
            lock.close()


def _verification(wheel: Path | None, checks: Mapping[str, str] | None, log: CellLog) -> Verification | None:
    """verified-static, or verified when `buildtool verify` recorded a GPU pass for these exact bytes."""
    if wheel is None or checks is None:
        return None
    sha256 = file_sha256(wheel)
    record = read_record(sha256)
    if record is not None:
        log.line(f"verify: {wheel.name} (sha256 {sha256[:12]}) passed the GPU checks on {record.gpu} "
                 f"with torch {record.torch} at {record.verified_at}")
    return verification_status(checks, sha256, record)


def static_verification(wheel: Path, log: CellLog, *, site_dirs: Sequence[Path] = ()) -> dict[str, str]:
    """The static checks of buildtool.verify on a wheel this build wrote, as the last step before dist/: a
    failure fails the cell (the wheel stays in the cell's staging dir) with every failing check named."""
    from buildtool.verify.pipeline import verify_static

    rows = verify_static(wheel, site_dirs=site_dirs)
    for row in rows:
        log.line(f"verify: {row.check}: {row.result}{': ' + row.detail if row.detail else ''}")
    failures = [r for r in rows if r.failed]
    if failures:
        raise BuildError(f"{wheel.name} fails the static checks: "
                         + "; ".join(f"{r.check}: {r.detail}" for r in failures),
                         hint=f"the wheel is kept at {wheel}; `buildtool verify {wheel} --static-only` shows every check")
    return {r.check: r.result for r in rows}


def _toolchain_for(cell: Cell, options: BuildOptions, cache: dict[tuple[str, str], Any] | None,
                   log: CellLog) -> Toolchain:
    """Resolve (once per CUDA x platform in a run: a missing toolkit fails every such cell at once)."""
    from buildtool.toolchain import resolve

    key = (cell.cuda, cell.platform)
    if cache is not None and key in cache:
        cached = cache[key]
        if isinstance(cached, BuildtoolError):
            raise cached
        return cached  # type: ignore[no-any-return]
    try:
        toolchain = resolve(cell.cuda, cell.platform, options.toolchain)
    except BuildtoolError as exc:
        if cache is not None:
            cache[key] = exc
        raise
    log.line(f"toolchain: {toolchain.provider} CUDA {toolchain.cuda_version} at {toolchain.cuda_home}, "
             f"host {toolchain.host.kind} {toolchain.host.version}")
    if cache is not None:
        cache[key] = toolchain
    return toolchain


def _prepare(project: Project, cell: Cell, options: BuildOptions, paths: CellPaths, log: CellLog) -> TreeProvenance:
    """Prepare into a fresh directory; keep the existing tree when identical (its mtimes keep ninja's
    objects valid), replace it otherwise."""
    from buildtool.source.prepare import load_prepared, prepare

    paths.work.mkdir(parents=True, exist_ok=True)
    fresh = paths.work / "src.new"
    shutil.rmtree(fresh, ignore_errors=True)
    prepared = prepare(project, cell.package, cell.version, cell.platform, fresh, mirror=options.source_mirror,
                       abi=cell.abi)
    try:
        old: TreeProvenance | None = load_prepared(paths.tree).provenance
    except BuildtoolError:  # none yet, or written by another buildtool: prepare afresh
        old = None
    if old is not None and _same_tree(old, prepared.provenance):
        shutil.rmtree(fresh, ignore_errors=True)
        log.line(f"prepare: kept the existing tree {paths.tree} (same source and patches)")
        return prepared.provenance
    shutil.rmtree(paths.tree, ignore_errors=True)
    shutil.rmtree(paths.objects, ignore_errors=True)  # objects of another source are worthless
    os.replace(fresh, paths.tree)
    log.line(f"prepare: tree at {paths.tree}")
    return prepared.provenance


def _same_tree(old: TreeProvenance, new: TreeProvenance) -> bool:
    """The same tree: everything equal but where the source bytes came from this time."""
    def key(prov: TreeProvenance) -> TreeProvenance:
        return prov.model_copy(update={"source": stable_source(prov).model_dump(mode="json")})

    return key(old) == key(new)


def _build_env(cell: Cell, options: BuildOptions, log: CellLog) -> BuildEnv:
    from buildtool.build import buildenv

    if options.use_current_env:
        env = buildenv.current_env()
        buildenv.check_matches(env, cell)
    elif options.build_python is not None:
        env = buildenv.env_from_python(options.build_python)
        buildenv.check_matches(env, cell)
    else:
        from buildtool.host import default_cache_dir

        # Shared across projects and runs: a torch install is gigabytes.
        env = buildenv.create_build_env(cell, default_cache_dir() / "buildenvs", index_url=options.index_url)
    log.line(f"build env: {_env_summary(env)}")
    return env


def _try_resume(project: Project, cell: Cell, recipe: Recipe, toolchain: Toolchain, tree_provenance: TreeProvenance,
                paths: CellPaths, options: BuildOptions, name: WheelName, log: CellLog) -> Path | None:
    candidates = existing_wheels(options.dist_dir, name)
    if not candidates:
        log.line("resume: no existing wheel")
        return None
    resolved = resolve_kernels(paths.tree, recipe, cell, toolchain)
    roots = {"{tree}": str(paths.tree), "{cuda_home}": str(toolchain.cuda_home)}
    expected = ResumeKey.expected(cell=cell, tree_provenance=tree_provenance, modules=module_flags(resolved),
                                  roots=roots)
    for wheel in candidates:
        try:
            found = read_wheel_provenance(wheel)
        except BuildtoolError as exc:
            log.line(f"resume: {wheel.name}: {exc}")
            continue
        ok, why = provenance_matches(found, expected)
        log.line(f"resume: {wheel.name}: {why}")
        if ok:
            return wheel
    return None
