"""How much of one TU's compile can spread over cores: its build.ninja command run alone, once per
-split-compile value, with `nvcc --time` phase timings, and the serial / parallel split fitted to them.

    python benchmarks/serial_part.py --cell CELL_ID [--tu MODULE:UNIT] [--threads 1,16] --out FILE.json
    (or `benchmarks/bench.py --serial-part`, right after each cold build (b))

The TU defaults to the cell log's slowest one; the build dir must compile that TU (a cold build just ran there:
a warm rebuild's build.ninja only links). With
t1 the wall time on one thread and tn on n, Amdahl's law gives the serial part s = (n*tn - t1) / (n - 1) and
the parallel part p = t1 - s: the front end (EDG, NVVM IR generation) and the host compile do not split, cicc's
optimiser and ptxas do. If the parallel part scales worse than n-fold, s comes out larger than the true serial
part, so the fit is an upper estimate of it. The object is rebuilt by the same command, so the build dir stays
valid.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import REPO, _slowest_from_log, ninja_target

_SPLIT = re.compile(r"-split-compile[= ](\d+)")


def with_split_compile(command: str, threads: int, extra: tuple[str, ...] = ()) -> str:
    """The compile command (build.ninja's whole rule line) with nvcc's -split-compile set to ``threads`` (1:
    the flag removed, nvcc's unsplit compile) and ``extra`` nvcc options, placed before nvcc's ``-c``."""
    bare = " ".join(_SPLIT.sub("", command).split())
    added = ([f"-split-compile={threads}"] if threads > 1 else []) + [shlex.quote(x) for x in extra]
    at = bare.find(" -c ")
    if at < 0:
        raise ValueError(f"no nvcc `-c` in the command: {command[:200]}")
    return bare[:at] + "".join(f" {a}" for a in added) + bare[at:]


def amdahl(t1: float, tn: float, n: int) -> dict[str, float]:
    """Serial and parallel seconds of a job that takes t1 on one thread and tn on n (perfect scaling of the
    parallel part assumed: s is an upper estimate)."""
    if n <= 1 or t1 <= 0:
        raise ValueError("needs n > 1 threads and a positive one-thread time")
    serial = max(0.0, min(t1, (n * tn - t1) / (n - 1)))
    return {"serial_s": round(serial, 1), "parallel_s": round(t1 - serial, 1),
            "serial_share": round(serial / t1, 3)}


def nvcc_phases(csv_path: Path) -> dict[str, float]:
    """`nvcc --time FILE` rows (file, phase, inputs, output, arch, tool, metric, unit) summed per phase, in s."""
    phases: dict[str, float] = {}
    if not csv_path.is_file():
        return phases
    with open(csv_path, newline="", encoding="utf-8", errors="replace") as f:
        for row in csv.reader(f):
            if len(row) < 8 or row[-1].strip() != "ms":
                continue
            try:
                ms = float(row[-2])
            except ValueError:
                continue
            phase = row[1].strip()
            phases[phase] = round(phases.get(phase, 0.0) + ms / 1000, 2)
    return phases


def _run(command: str, objdir: Path) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(command, shell=True, cwd=objdir, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
    return wall, cpu, proc.returncode


def measure(cell_id: str, tu: str, threads: list[int]) -> dict[str, Any]:
    """Run ``tu`` of the cell's build dir alone once per -split-compile value; phases and the Amdahl fit."""
    objdir = REPO / "build" / "cells" / cell_id / "obj"
    target = ninja_target(cell_id, tu)
    if target is None:
        raise SystemExit(f"serial_part: {tu!r} is not compiled by {objdir / 'build.ninja'} (run it right after a "
                         "cold build: a warm rebuild's build.ninja only links)")
    from buildtool.compile.ninja import ninja_binary

    listing = subprocess.run([ninja_binary(dict(os.environ)), "-C", str(objdir), "-t", "commands", target],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()
    command = listing[-1]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in threads:
            times = Path(tmp) / f"time-{n}.csv"
            wall, cpu, rc = _run(with_split_compile(command, n, ("--time", str(times))), objdir)
            runs.append({"threads": n, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "rc": rc,
                         "phases_s": nvcc_phases(times)})
    ok = [r for r in runs if r["rc"] == 0]
    one = next((r for r in ok if r["threads"] == 1), None)
    fits = {str(r["threads"]): amdahl(one["wall_s"], r["wall_s"], r["threads"])
            for r in ok if one is not None and r["threads"] > 1}
    return {"cell": cell_id, "tu": tu, "cores": len(os.sched_getaffinity(0)), "runs": runs, "amdahl": fits,
            "ok": len(ok) == len(runs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", required=True)
    ap.add_argument("--tu", help="module:unit as the cell log names it (default: the slowest TU)")
    ap.add_argument("--threads", default=f"1,{len(os.sched_getaffinity(0))}")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    result = measure(args.cell, args.tu or _slowest_from_log(args.cell)[0], [int(x) for x in args.threads.split(",")])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
