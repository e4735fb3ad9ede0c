"""Measure `buildtool env create`: time, disk, what the user sees, and every failure path ending cleanly.
Writes docs/env-create.md.   nox -s env-create-measure   (or python benchmarks/envcreate_measure.py)

Real parts: `buildtool env create` as a user runs it (a subprocess, uv), torch 2.13.0 from this machine's
local wheel directory (the CPU build: the only torch 2.13 on this machine's disk; download.pytorch.org is not
reachable here), everything else from the local PyPI mirror, a real kernel wheel (compiled extension) served
by `buildtool index` on 127.0.0.1. Ctrl-C is a real SIGINT to the process group during the torch step.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixture_wheels import clean_env, compile_extension, label, make_wheel, serve  # noqa: E402

TORCH_WHEELS = Path("/opt/wheels")
LOCAL_PYPI = Path("/opt/pypi/simple")
MATRIX = """
version: 1
axes: {platform: [linux-x86_64], python: ["3.11", "3.12"], cuda: ["13.0"], torch: ["2.13.0"]}
packages: [causal-conv1d==1.7.0, mamba-ssm==2.3.2.post1]
arch_policy: {"13.0": {archs: ["9.0"], ptx: true}}
default_profile: m
profiles:
  m: {description: "measurement", select: {cuda: ["13.0"]}}
"""


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) if path.exists() else 0


def run(argv: list[str], env: dict[str, str], *, interrupt_on: str | None = None) -> dict[str, object]:
    t0 = time.monotonic()
    # A terminal's Ctrl-C: SIGINT to the whole process group. The child gets SIGINT's default disposition back
    # (a harness started in the background would otherwise pass SIG_IGN down and the signal would do nothing).
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    lines: list[tuple[float, str]] = []
    sent = False
    for line in proc.stdout:
        lines.append((time.monotonic() - t0, line.rstrip()))
        if interrupt_on and not sent and interrupt_on in line:
            time.sleep(3)   # well inside the torch step
            os.killpg(proc.pid, signal.SIGINT)
            sent = True
    code = proc.wait()
    return {"exit": code, "seconds": round(time.monotonic() - t0, 1), "lines": lines}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "env-create.md")
    ap.add_argument("--from-json", type=Path, help="rewrite the table from a previous run's JSON (no measuring)")
    args = ap.parse_args()
    if args.from_json:
        write(json.loads(args.from_json.read_text())["rows"], args.out)
        return 0
    if not list(TORCH_WHEELS.glob("torch-2.13.0*-cp311-*.whl")) or not LOCAL_PYPI.is_dir():
        print(f"needs torch 2.13.0 in {TORCH_WHEELS} and a PyPI mirror at {LOCAL_PYPI}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="envcreate-measure-"))
    rows: list[dict[str, object]] = []
    try:
        so_name, so = compile_extension(work / "ext", "causal_conv1d_cuda")
        make_wheel(work / "dist", "causal-conv1d", f"1.7.0+{label('2.13')}", requires=("torch==2.13.*", "packaging"),
                   files={"causal_conv1d/__init__.py": "", so_name: so})
        subprocess.run([sys.executable, "-m", "buildtool", "index", str(work / "dist"), "--out", str(work / "site")],
                       check=True, capture_output=True, env=clean_env())
        (work / "matrix.yaml").write_text(MATRIX)
        (work / "a-file").write_text("x")
        (work / "full").mkdir()
        (work / "full" / "keep.txt").write_text("x")
        cache = work / "uv-cache"
        env = clean_env(UV_CACHE_DIR=str(cache))
        with serve(work / "site") as url:
            def create(target: Path, *extra: str, python: str = "3.11", torch_index: str = str(TORCH_WHEELS),
                       with_: str = "mamba") -> list[str]:
                return [sys.executable, "-m", "buildtool", "env", "create", str(target), "--profile", "m", "--matrix",
                        str(work / "matrix.yaml"), "--python", python, "--with", with_, "--index", url,
                        "--torch-index", torch_index, "--pypi-index", LOCAL_PYPI.as_uri(), "--skip-triton", *extra]
            cases = [
                ("no wheel for a requested package (mamba-ssm)", create(work / "e1"), work / "e1", None),
                ("no wheel for the requested Python (3.12)", create(work / "e2", python="3.12"),
                 work / "e2", None),
                ("torch index unreachable", create(work / "e3", "--allow-missing", torch_index="http://127.0.0.1:9/whl/"),
                 work / "e3", None),
                ("DIR is a regular file", create(work / "a-file", "--allow-missing"), work / "a-file", None),
                ("DIR exists and is not empty", create(work / "full", "--allow-missing"), work / "full", None),
                ("Ctrl-C during the torch step (cold cache)", create(work / "e4", "--allow-missing"), work / "e4",
                 "2/5 torch"),
                ("created (re-run after Ctrl-C: cache kept what was downloaded)", create(work / "e4", "--allow-missing"),
                 work / "e4", None),
                ("created again into a new DIR (warm cache)", create(work / "e5", "--allow-missing"), work / "e5", None),
            ]
            for name, argv, target, interrupt in cases:
                result = run(argv, env, interrupt_on=interrupt)
                lines = result.pop("lines")
                assert isinstance(lines, list)
                step_times = {ln.split(" ", 1)[0]: t for t, ln in lines if ln[:4] in ("1/5 ", "2/5 ", "3/5 ", "4/5 ", "5/5 ")}
                row = {"case": name, **result, "dir_after": ("exists" if target.exists() else "absent"),
                       "dir_bytes": du(target) if target.is_dir() and name.startswith("created") else 0,
                       "cache_bytes": du(cache), "first_output_s": lines[0][0] if lines else None,
                       "longest_silence_s": round(max((b[0] - a[0] for a, b in itertools.pairwise(lines)), default=0.0), 1),
                       "steps": step_times, "output": [ln for _, ln in lines if not ln.startswith("  | ")][-6:]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(rows, args.out)
    return 0


def write(rows: list[dict[str, object]], out: Path) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}"
    lines = [
        "# `buildtool env create`: measured",
        "",
        "Generated by `nox -s env-create-measure` (`benchmarks/envcreate_measure.py`); do not edit by hand.",
        f"Machine: {machine}, no GPU. uv; torch 2.13.0 (the CPU build, ~190 MB wheel: the torch on this machine's",
        "disk; a CUDA torch is ~5 GB with its libraries, so its step is ~25x the bytes) from a local wheel directory,",
        "other packages from a local PyPI mirror, the kernel from a loopback `buildtool index`. The profile asks",
        "for causal-conv1d and mamba-ssm; the index has causal-conv1d only, so runs that get past the plan use",
        "`--allow-missing` (and end with exit 1: created with problems). Ctrl-C is a real SIGINT to the process",
        "group 3 s into the torch step. \"DIR after: exists\" in the two DIR cases is the user's own file or",
        "directory, left untouched. The harness reads the output through a pipe, where uv prints nothing while it",
        "installs torch (the \"longest silence\"); on a terminal env create passes the installer's own progress",
        "bar (bytes, rate) straight through, and a pipe gets each line the installer prints as it comes.",
        "",
        "| case | exit | seconds | first output (s) | longest silence (s) | DIR after | DIR size | uv cache | last lines the user sees |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        seen = "<br>".join(str(x).replace("|", "\\|")[:160] for x in r["output"])  # type: ignore[attr-defined]
        size = f"{int(r['dir_bytes']) / 1e6:.0f} MB" if r["dir_bytes"] else "-"  # type: ignore[call-overload]
        lines.append(f"| {r['case']} | {r['exit']} | {r['seconds']} | {float(r['first_output_s'] or 0):.1f} | {r['longest_silence_s']} | "
                     f"{r['dir_after']} | {size} | {int(r['cache_bytes']) / 1e6:.0f} MB | {seen} |")  # type: ignore[call-overload]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
