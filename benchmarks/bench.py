"""`nox -s bench`: build time, CPU, peak memory and wheel size of buildtool against upstream's setup.py,
on the same machine, in the same run, for the same arch list.

    python benchmarks/bench.py --cell CELL_ID [--cell ...] --archs 9.0 [--second-python PY] [--upstream-timeout S]
        [--use-current-env | --build-python PY] --out docs/performance-<machine>.json

Per cell: (a) upstream `pip wheel --no-build-isolation` of the untouched source (arch list restricted on a
temp copy, see upstream.py), (b) buildtool cold (empty object cache, fresh build dir), (c) buildtool warm
rebuild (same build dir), (d) buildtool for a second Python version (object cache from (b) only). Ratios are
against (a). Results: JSON next to a Markdown table appended to docs/performance.md by --markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upstream import build_upstream

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    label: str
    wall_s: float | None = None
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    slowest_tu: str = ""
    slowest_tu_s: float | None = None
    wheel_bytes: int | None = None
    ok: bool = False
    note: str = ""
    cache: dict[str, int] = field(default_factory=dict)
    env_s: float = 0.0  # creating/checking the build env (torch venv): one-off, reported apart from the build
    load: str = ""  # 1-minute load average before / after: other work on the machine distorts wall times
    cores: int = 0  # usable cores (affinity mask)
    compile_bound: dict[str, Any] = field(default_factory=dict)  # the build's own report (compile stage)
    slowest_alone_s: float | None = None  # the slowest TU compiled again alone, same flags, same machine
    bound_s: float | None = None  # max(slowest TU alone, CPU-s of the whole build / cores)
    vs_bound: float | None = None  # (wall - build env) / bound_s
    host: dict[str, Any] = field(default_factory=dict)  # the machine's own CPU accounts over the run (host_cpu)
    timeline: list[tuple[str, float, float]] = field(default_factory=list)  # (TU, start s, end s) from .ninja_log
    busy_cores: list[tuple[float, float]] = field(default_factory=list)  # (s since start, busy cores over the last second)


# Runs one command and reports its own children's usage, so each measurement's peak RSS is its own
# (RUSAGE_CHILDREN of this long-lived process keeps the largest child ever, e.g. the upstream build's).
_MEASURE = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stderr.write(proc.stderr)
print(json.dumps({"rc": proc.returncode, "wall": time.perf_counter() - t0, "cpu": u.ru_utime + u.ru_stime,
                  "rss_mb": u.ru_maxrss / 1024.0, "stdout": proc.stdout}))
"""


#: /proc/stat fields that count a core as busy: user, nice, system, irq, softirq (idle, iowait, steal are not).
_BUSY_FIELDS = (0, 1, 2, 5, 6)


def _proc_stat() -> list[int] | None:
    """The aggregate `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal (jiffies)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def host_cpu(before: list[int] | None, after: list[int] | None) -> dict[str, Any]:
    """Core-seconds the whole machine spent busy, idle and stolen (by the hypervisor) between two /proc/stat
    readings, and the container's CPU quota: what the bound's `CPU-s / cores` assumes is there to use."""
    out: dict[str, Any] = {}
    if before and after:
        hz = os.sysconf("SC_CLK_TCK")
        d = [(a - b) / hz for a, b in zip(after, before, strict=True)]
        out = {"busy_s": round(sum(d[i] for i in _BUSY_FIELDS), 1), "idle_s": round(d[3] + d[4], 1),
               "steal_s": round(d[7], 1)}
    with contextlib.suppress(OSError):
        out["cgroup_cpu_max"] = Path("/sys/fs/cgroup/cpu.max").read_text().strip()
    return out


def busy_series(readings: list[tuple[float, list[int]]], hz: int) -> list[tuple[float, float]]:
    """(seconds since the first reading, cores busy on average since the previous reading) from timed
    /proc/stat readings: where in a build the machine's cores sat idle."""
    out = []
    for (t0, a), (t1, b) in itertools.pairwise(readings):
        if t1 <= t0:
            continue
        busy = sum(b[i] - a[i] for i in _BUSY_FIELDS) / hz
        out.append((round(t1 - readings[0][0], 1), round(busy / (t1 - t0), 2)))
    return out


class CoreSampler:
    """Reads /proc/stat once a second in a thread while a build runs (``with CoreSampler() as s``)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval, self.readings = interval, []  # type: float, list[tuple[float, list[int]]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            stat = _proc_stat()
            if stat is not None:
                self.readings.append((time.monotonic(), stat))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> CoreSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        stat = _proc_stat()
        if stat is not None:
            self.readings.append((time.monotonic(), stat))

    def series(self) -> list[tuple[float, float]]:
        return busy_series(self.readings, os.sysconf("SC_CLK_TCK"))


def ninja_timeline(cell_id: str) -> list[tuple[str, float, float]]:
    """Each compile's start and end (s from the first start) in the cell's build dir, from .ninja_log."""
    log = REPO / "build" / "cells" / cell_id / "obj" / ".ninja_log"
    rows = []
    for line in log.read_text(errors="replace").splitlines() if log.is_file() else []:
        parts = line.split("\t")
        if len(parts) >= 4 and parts[0].isdigit():
            rows.append((Path(parts[3]).name, int(parts[0]) / 1000, int(parts[1]) / 1000))
    t0 = min((r[1] for r in rows), default=0.0)
    return sorted((name, round(a - t0, 1), round(b - t0, 1)) for name, a, b in rows)


def _buildtool(args: list[str], env: dict[str, str]) -> tuple[float, float, float, dict[str, Any], int]:
    cmd = [sys.executable, "-m", "buildtool", "build", *args, "--json"]
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], cwd=REPO, env=env, capture_output=True, text=True)
    try:
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        summary = json.loads(m["stdout"])
    except (json.JSONDecodeError, IndexError, KeyError):
        return 0.0, 0.0, 0.0, {"error": proc.stderr[-2000:]}, 1
    return m["wall"], m["cpu"], m["rss_mb"], summary, m["rc"]


def _cell_report(cell_id: str) -> dict[str, Any]:
    path = REPO / "build" / "logs" / f"{cell_id}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _slowest_from_log(cell_id: str) -> tuple[str, float | None]:
    """From the cell log's `slowest translation unit: NAME SECONDS s` line."""
    log = REPO / "build" / "logs" / f"{cell_id}.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    for line in reversed(lines):
        if "slowest translation unit:" in line:
            name, secs, _ = line.split("slowest translation unit:", 1)[1].strip().rsplit(" ", 2)
            return name, float(secs)
    return "", None


def ours(label: str, cell_id: str, archs: str, env_args: list[str], env: dict[str, str], dist: Path) -> Run:
    for old in dist.glob("*.whl"):
        old.unlink()
    load0 = os.getloadavg()[0]
    stat0 = _proc_stat()
    with CoreSampler() as sampler:
        wall, cpu, rss, summary, rc = _buildtool([cell_id, "--archs", archs, "--toolchain", "system", "--dist",
                                                  str(dist), *env_args], env)
    run = Run(label=label, wall_s=round(wall, 1), cpu_s=round(cpu, 1), peak_rss_mb=round(rss),
              load=f"{load0:.1f}/{os.getloadavg()[0]:.1f}", cores=len(os.sched_getaffinity(0)),
              host=host_cpu(stat0, _proc_stat()), timeline=ninja_timeline(cell_id), busy_cores=sampler.series())
    cells = summary.get("cells") or []
    if rc != 0 or not cells or cells[0].get("status") != "verified-static":
        run.note = str(cells[0].get("message") if cells else summary.get("error", ""))[:300]
        return run
    run.ok = True
    run.wheel_bytes = cells[0].get("size")
    run.env_s = round(float((cells[0].get("timings") or {}).get("build env", 0.0)), 1)
    run.slowest_tu, run.slowest_tu_s = _slowest_from_log(cell_id)
    run.compile_bound = cells[0].get("compile_bound") or {}
    _set_bound(run)
    log = (REPO / "build" / "logs" / f"{cell_id}.log").read_text(errors="replace")
    for line in log.splitlines():
        if line.startswith("compile:") and "cached" in line:
            # "compile: N module(s), H cached / M compiled ..."
            words = line.replace(",", "").split()
            with contextlib.suppress(ValueError, IndexError):
                run.cache = {"hits": int(words[words.index("cached") - 1]), "misses": int(words[words.index("compiled") - 1])}
    return run


def _set_bound(run: Run) -> None:
    """The whole build against max(slowest TU alone, its CPU-s / cores); without the alone time, CPU alone."""
    if not run.wall_s or not run.cpu_s or not run.cores:
        return
    run.bound_s = round(max(run.cpu_s / run.cores, run.slowest_alone_s or 0.0), 1)
    run.vs_bound = round((run.wall_s - run.env_s) / run.bound_s, 3)


def ninja_target(cell_id: str, tu: str) -> str | None:
    """The object build.ninja makes from ``tu`` ("module:unit", as the cell log names it) in the cell's
    build dir, or None where that build has no such TU (another split)."""
    ninja_file = REPO / "build" / "cells" / cell_id / "obj" / "build.ninja"
    if not tu or not ninja_file.is_file():
        return None
    module, _, unit = tu.partition(":")
    want = f"{module}: {unit}"
    previous = ""
    for line in ninja_file.read_text(encoding="utf-8").splitlines():
        if line.strip() == f"desc = {want}" and previous.startswith("build "):
            return previous[len("build "):].split(": ", 1)[0].replace("$ ", " ").replace("$:", ":")
        if line.startswith("build "):
            previous = line
    return None


def slowest_alone(cell_id: str, run: Run, env: dict[str, str]) -> None:
    """Compile a cold build's slowest TU again, alone, from its build.ninja edge (same command, nothing
    beside it): the first term of the bound. The object is rebuilt identical, so the wheel stays valid."""
    objdir = REPO / "build" / "cells" / cell_id / "obj"
    target = ninja_target(cell_id, run.slowest_tu)
    if target is None:
        return
    Path(target).unlink(missing_ok=True)
    from buildtool.compile.ninja import ninja_binary

    t0 = time.perf_counter()
    proc = subprocess.run([ninja_binary(env), "-C", str(objdir), target], env=env, capture_output=True, text=True)
    if proc.returncode == 0:
        run.slowest_alone_s = round(time.perf_counter() - t0, 1)
        _set_bound(run)


def _cell(cell_id: str) -> Any:
    """The matrix cell (package, version, CUDA) behind an id."""
    from buildtool.spec.matrix import load_matrix
    from buildtool.spec.project import find_project

    cells = load_matrix(find_project(REPO).root).expand().by_id()
    if cell_id not in cells:
        raise SystemExit(f"no buildable cell {cell_id} in matrix.yaml (see `buildtool matrix --format ids`)")
    return cells[cell_id]


def _system_cuda_home(cell: Any) -> str:
    from buildtool import toolchain
    from buildtool.host import host_platform

    return str(toolchain.resolve(cell.cuda, host_platform(), "system").cuda_home)


def upstream_source(cell: Any, env: dict[str, str]) -> Path:
    """The untouched upstream source of a cell's package (sdist or git archive), from buildtool's source cache."""
    out = Path(tempfile.mkdtemp(prefix="bench-src-"))
    name, version = cell.package, cell.version
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from buildtool.spec.project import find_project\n"
        "from buildtool.spec.recipe import load_recipes\n"
        "from buildtool.source import fetch as sources\n"
        f"r = load_recipes(find_project().recipes_dir)[{name!r}].get({version!r})\n"
        f"f = sources.fetch(r.source, Path({str(out / 'src')!r}), mirror=sources.mirror_from_env())\n"
        "print(f.tree)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"cannot fetch the upstream source of {cell.id}: {proc.stderr[-800:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", action="append", required=True)
    ap.add_argument("--archs", default="9.0")
    ap.add_argument("--use-current-env", action="store_true")
    ap.add_argument("--build-python")
    ap.add_argument("--second-cell", action="append", default=[], metavar="CELL=PYTHON",
                    help="(d): CELL_ID of the same package for another Python, built with that interpreter")
    ap.add_argument("--upstream-timeout", type=int, default=1800)
    ap.add_argument("--skip-upstream", action="store_true")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--upstream-python", default=sys.executable,
                    help="interpreter (with torch, setuptools, wheel) that runs upstream's setup.py")
    ap.add_argument("--keep-wheels", type=Path, metavar="DIR", help="copy the cold builds' wheels here")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=ARGS",
                    help="one more cold build with extra `buildtool build` arguments, e.g. "
                         "'old split=--split-compile 1' (compared with (a) like (b))")
    ap.add_argument("--serial-part", action="store_true",
                    help="after (b), its slowest TU alone with -split-compile 1 and every core, nvcc --time, "
                         "serial part fitted (benchmarks/serial_part.py)")
    ap.add_argument("--keep-upstream-wheels", type=Path, metavar="DIR",
                    help="copy upstream's wheels here (for the kernel speed comparison, benchmarks/kernel_speed.py)")
    args = ap.parse_args()

    env_args: list[str] = []
    if args.use_current_env:
        env_args = ["--use-current-env"]
    elif args.build_python:
        env_args = ["--build-python", args.build_python]
    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    # A fresh object cache, but the user's sources and torch build envs (those are not what we measure).
    user_cache = Path(os.environ.get("BUILDTOOL_CACHE_DIR") or Path.home() / ".cache" / "buildtool")
    if (user_cache / "sources").is_dir():
        shutil.copytree(user_cache / "sources", cache / "sources")
    (user_cache / "buildenvs").mkdir(parents=True, exist_ok=True)
    (cache / "buildenvs").symlink_to(user_cache / "buildenvs")
    env = dict(os.environ, BUILDTOOL_CACHE_DIR=str(cache), CCACHE_DISABLE="1", PYTHONUNBUFFERED="1")
    dist = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    seconds = dict(x.split("=", 1) for x in args.second_cell)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)},
        "archs": args.archs, "cells": {},
    }
    for cell_id in args.cell:
        shutil.rmtree(REPO / "build" / "cells" / cell_id, ignore_errors=True)
        runs: list[Run] = []
        if args.skip_upstream:
            runs.append(Run(label="(a) upstream setup.py", note="skipped (--skip-upstream)"))
        else:
            cell = _cell(cell_id)
            source = upstream_source(cell, env)
            up_env = {"CAUSAL_CONV1D_FORCE_BUILD": "TRUE", "MAMBA_FORCE_BUILD": "TRUE", "CCACHE_DISABLE": "1"}
            # the toolkit buildtool compiles with, so that both sides use the same nvcc; torch's own guess
            # from `which nvcc` lands on /usr/local when nvcc there is a wrapper script (no headers there)
            up_env["CUDA_HOME"] = os.environ.get("CUDA_HOME") or _system_cuda_home(cell)
            try:
                res = _timeout_upstream(source, args.archs.split(","), dist / "upstream", args.jobs, up_env,
                                        args.upstream_timeout, args.upstream_python, cell.cxx_std)
                runs.append(res)
                if args.keep_upstream_wheels:
                    args.keep_upstream_wheels.mkdir(parents=True, exist_ok=True)
                    for wheel in (dist / "upstream").glob("*.whl"):
                        shutil.copy2(wheel, args.keep_upstream_wheels / wheel.name)
            finally:
                shutil.rmtree(source.parent, ignore_errors=True)
        cold = ours("(b) buildtool cold", cell_id, args.archs, env_args, env, dist)
        runs.append(cold)
        if cold.ok:
            # now, while build.ninja still compiles every TU (the warm rebuild's only links)
            slowest_alone(cell_id, cold, env)
            if args.serial_part:
                from serial_part import measure

                threads = sorted({1, cold.cores})
                results.setdefault("serial_part", {})[cell_id] = measure(cell_id, cold.slowest_tu, threads)
        if args.keep_wheels:
            args.keep_wheels.mkdir(parents=True, exist_ok=True)
            for wheel in dist.glob("*.whl"):
                shutil.copy2(wheel, args.keep_wheels / wheel.name)
        runs.append(ours("(c) buildtool warm rebuild", cell_id, args.archs, env_args, env, dist))
        for variant in args.variant:
            label, _, extra = variant.partition("=")
            # cold again: its own empty object cache and build dir, ccache still off
            shutil.rmtree(REPO / "build" / "cells" / cell_id, ignore_errors=True)
            v_cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
            (v_cache / "buildenvs").symlink_to(user_cache / "buildenvs")
            if (cache / "sources").is_dir():
                shutil.copytree(cache / "sources", v_cache / "sources")
            runs.append(ours(f"(b') buildtool cold, {label}", cell_id, args.archs, [*env_args, *shlex.split(extra)],
                             dict(env, BUILDTOOL_CACHE_DIR=str(v_cache)), dist))
            shutil.rmtree(v_cache, ignore_errors=True)
        for r in runs:
            # a variant that compiled the same slowest TU shares (b)'s alone time (order and nice aside); one
            # whose TUs differ (another split) keeps the CPU term alone, the smaller bound: not flattered
            if r.label.startswith("(b'") and r.ok and cold.ok and r.slowest_tu == cold.slowest_tu:
                r.slowest_alone_s = cold.slowest_alone_s
                _set_bound(r)
        if cell_id in seconds:
            other, _, interpreter = seconds[cell_id].partition("@")
            shutil.rmtree(REPO / "build" / "cells" / other, ignore_errors=True)  # its objects from the cache only
            runs.append(ours(f"(d) buildtool second Python ({other})", other, args.archs,
                             ["--build-python", interpreter] if interpreter else [], env, dist))
        results["cells"][cell_id] = [asdict(r) for r in runs]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


def _timeout_upstream(source: Path, archs: list[str], out: Path, jobs: int, env: dict[str, str], timeout: int,
                      python: str, cxx_std: str | None = None) -> Run:
    """Upstream build in a child process group, killed at ``timeout`` seconds (reported as not finished)."""
    import multiprocessing as mp

    q: mp.Queue[Any] = mp.Queue()

    def target() -> None:
        os.setsid()
        r = build_upstream(source, archs, out, jobs, env, python, cxx_std)
        q.put(asdict(r) | {"wheel": str(r.wheel) if r.wheel else None, "log": str(r.log)})

    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    p = mp.Process(target=target)
    p.start()
    p.join(timeout)
    run = Run(label="(a) upstream setup.py")
    run.load = f"{load0:.1f}/{os.getloadavg()[0]:.1f}"
    if p.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid or 0, 9)
        p.join(5)
        run.wall_s = round(time.perf_counter() - t0, 1)
        run.note = f"did not finish in {timeout} s (killed)"
        return run
    data = q.get()
    run.wall_s, run.cpu_s, run.peak_rss_mb = round(data["wall_s"], 1), round(data["cpu_s"], 1), round(data["peak_rss_mb"])
    run.wheel_bytes = data["wheel_bytes"] or None
    run.ok = data["returncode"] == 0 and data["wheel"] is not None
    tus = data["tu_seconds"]
    if tus:
        name, secs = max(tus.items(), key=lambda kv: kv[1])
        run.slowest_tu, run.slowest_tu_s = name, round(secs, 1)
    if data["std_flags_changed"]:
        run.note = f"setup.py's -std=c++NN raised to C++{cxx_std} ({data['std_flags_changed']} flags)"
    if not run.ok:
        run.note = f"failed (exit {data['returncode']}), log {data['log']}"
    return run


def markdown(results: dict[str, Any]) -> str:
    lines = [f"### {results['date']} — {results['machine']['cores']} cores, {results['machine']['platform']}, "
             f"archs {results['archs']}", ""]
    for cell_id, runs in results["cells"].items():
        base = runs[0]
        lines += [f"**{cell_id}**", "",
                  "| build | wall s | build env s | CPU s | slowest TU | slowest TU alone s | bound s | vs bound | compile vs its CPU bound | peak RSS MB | wheel MB | wall vs (a) | wheel vs (a) | load | note |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            def ratio(key: str, r: dict[str, Any] = r, base: dict[str, Any] = base) -> str:
                a, b = base.get(key), r.get(key)
                if r is base:
                    return "1.00" if a else "—"
                return f"{b / a:.2f}" if a and b else "—"
            # Ratios leave out the one-off build env (a torch venv, shared by every later build).
            own = (r["wall_s"] - r.get("env_s", 0.0)) if r["wall_s"] and r is not base else None
            if r is base:
                wall_ratio = "1.00" if base["wall_s"] and not base["note"] else "—"
            elif own and base["wall_s"]:
                prefix = "< " if base["note"].startswith("did not finish") else ""
                wall_ratio = f"{prefix}{own / base['wall_s']:.2f}"
            else:
                wall_ratio = "—"
            tu = f"{r['slowest_tu']} {r['slowest_tu_s']} s" if r["slowest_tu_s"] else "—"
            mb = f"{r['wheel_bytes'] / 1e6:.1f}" if r["wheel_bytes"] else "—"
            cache = f"cache {r['cache']['hits']} hit / {r['cache']['misses']} miss" if r.get("cache") else ""
            cb = r.get("compile_bound") or {}
            compile_ratio = f"{cb['ratio']:.2f} ({cb['wall_seconds']:.0f} / {cb['bound_seconds']:.0f} s)" if cb.get("ratio") else "—"
            lines.append(f"| {r['label']} | {r['wall_s'] or '—'} | {r.get('env_s') or '—'} | {r['cpu_s'] or '—'} | {tu} | "
                         f"{r.get('slowest_alone_s') or '—'} | {r.get('bound_s') or '—'} | {r.get('vs_bound') or '—'} | {compile_ratio} | {r['peak_rss_mb'] or '—'} | "
                         f"{mb} | {wall_ratio} | {ratio('wheel_bytes')} | {r.get('load', '')} | {' '.join(x for x in (r['note'], cache) if x)} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
