"""How much of one TU's compile can spread over cores: its build.ninja command run alone, once per
-split-compile value, with `nvcc --time` phase timings, and the serial / parallel split fitted to them.

    python benchmarks/serial_part.py --cell CELL_ID [--tu MODULE:UNIT] [--threads 1,16] --out FILE.json

The TU defaults to the cell log's slowest one; the build dir must hold that TU (a cold build just ran). With
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


def with_split_compile(command: str, threads: int) -> str:
    """The nvcc command with -split-compile set to ``threads`` (1: the flag removed, nvcc's unsplit compile)."""
    bare = _SPLIT.sub("", command)
    if threads <= 1:
        return " ".join(bare.split())
    nvcc_at = bare.find(" -c ") if " -c " in bare else len(bare)
    return " ".join((bare[:nvcc_at] + f" -split-compile={threads}" + bare[nvcc_at:]).split())


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", required=True)
    ap.add_argument("--tu", help="module:unit as the cell log names it (default: the slowest TU)")
    ap.add_argument("--threads", default=f"1,{len(os.sched_getaffinity(0))}")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    tu = args.tu or _slowest_from_log(args.cell)[0]
    objdir = REPO / "build" / "cells" / args.cell / "obj"
    target = ninja_target(args.cell, tu)
    if target is None:
        sys.exit(f"serial_part: {tu!r} is not a TU of {objdir / 'build.ninja'}")
    from buildtool.compile.ninja import ninja_binary

    listing = subprocess.run([ninja_binary(dict(os.environ)), "-C", str(objdir), "-t", "commands", target],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()
    command = listing[-1]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.threads.split(",")):
            times = Path(tmp) / f"time-{n}.csv"
            wall, cpu, rc = _run(with_split_compile(command, n) + " --time " + shlex.quote(str(times)), objdir)
            runs.append({"threads": n, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "rc": rc,
                         "phases_s": nvcc_phases(times)})
    ok = [r for r in runs if r["rc"] == 0]
    one = next((r for r in ok if r["threads"] == 1), None)
    fits = {str(r["threads"]): amdahl(one["wall_s"], r["wall_s"], r["threads"])
            for r in ok if one is not None and r["threads"] > 1}
    result = {"cell": args.cell, "tu": tu, "cores": len(os.sched_getaffinity(0)), "runs": runs, "amdahl": fits}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if len(ok) == len(runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
