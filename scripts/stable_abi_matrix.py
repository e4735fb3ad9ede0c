"""Cross-torch / cross-Python check of stable-ABI wheels: the SAME wheel files in fresh venvs next to each torch.

    python scripts/stable_abi_matrix.py WHEEL... [--torch 2.11.0 ...] [--python 3.10 ...]
                                        [--pivot-torch 2.14.1] [--pivot-python 3.11] [--json FILE]

Rows: every --torch under --pivot-python, then every --python under --pivot-torch. Each cell is a fresh venv
(pyenv's CPython), ``pip install torch==X`` from PyPI as a user would (its CUDA is recorded), then the wheels
with ``--no-deps`` (their heavy runtime deps -- transformers, tilelang -- are not what is tested; torch is
never replaced: checked after the install), then scripts/stable_abi_check.py ``probe`` per shim: the shim
imports and loads the library, the ops are registered for CUDA, every shim function reaches the dispatcher
and is refused with a clear "no kernel for the CPU backend" error (no GPU here; never an undefined symbol or a
crash), fake kernels give upstream's return structures, torch.compile(fullgraph=True) traces. The venv
(~5 GB) is deleted after each cell. Prints a table torch x Python -> result; --json writes every cell's report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "scripts" / "stable_abi_check.py"
SHIMS = {"causal_conv1d": "causal_conv1d_cuda", "mamba_ssm": "selective_scan_cuda"}
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def interpreter(version: str) -> Path | None:
    """pyenv's newest CPython X.Y."""
    found = sorted((p for p in PYENV.glob(f"{version}.*") if (p / "bin" / "python").is_file()),
                   key=lambda p: [int(x) for x in p.name.split(".") if x.isdigit()])
    return found[-1] / "bin" / "python" if found else None


def shims_of(wheels: list[Path]) -> list[str]:
    names: list[str] = []
    for w in wheels:
        with zipfile.ZipFile(w) as zf:
            names += [SHIMS[pkg] for pkg in SHIMS if f"{SHIMS[pkg]}.py" in zf.namelist()]
    return names


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None, timeout: int = 3600) -> int:
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode


def cell(torch: str, python: str, wheels: list[Path], work: Path, logs: Path, cache: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"torch": torch, "python": python}
    py = interpreter(python)
    if py is None:
        return result | {"ok": False, "stage": "python", "error": f"no CPython {python} under {PYENV}"}
    log = logs / f"torch{torch}-py{python}.log"
    venv = work / f"venv-torch{torch}-py{python}"
    # PyPI as a user gets it: no local pip config (here /etc/xdg/pip caps torch at 2.14.1) and no find-links
    # (a local torch+cpu wheel there would win over PyPI's CUDA build of the same version).
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_CACHE_DIR": str(cache)}
    start = time.monotonic()
    try:
        if run([str(py), "-m", "venv", str(venv)], log) != 0:
            return result | {"ok": False, "stage": "venv", "log": str(log)}
        vpy = str(venv / "bin" / "python")
        if run([vpy, "-m", "pip", "install", "-q", f"torch=={torch}"], log, env) != 0:
            return result | {"ok": False, "stage": f"pip install torch=={torch}", "log": str(log)}
        if run([vpy, "-m", "pip", "install", "-q", "--no-deps", *map(str, wheels), "packaging"], log, env) != 0:
            return result | {"ok": False, "stage": "pip install wheels", "log": str(log)}
        probe_torch = subprocess.run([vpy, "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
                                     capture_output=True, text=True)
        version, cuda = [*probe_torch.stdout.split(), "?", "?"][:2]
        result |= {"torch_installed": version, "torch_cuda": cuda}
        if not version.startswith(torch) or cuda in ("None", "?"):
            return result | {"ok": False, "stage": "torch", "error": f"torch {version} (CUDA {cuda}) after the install"}
        reports = {}
        for shim in shims_of(wheels):
            proc = subprocess.run([vpy, str(CHECK), "probe", "--path", str(work / "empty"), "--shim", shim],
                                  capture_output=True, text=True, timeout=1800)
            try:
                reports[shim] = json.loads(proc.stdout)
            except json.JSONDecodeError:
                reports[shim] = {"ok": False, "error": (proc.stderr or proc.stdout)[-2000:]}
        result |= {"reports": reports, "ok": all(r.get("ok") for r in reports.values()) and bool(reports)}
        return result
    finally:
        result["seconds"] = round(time.monotonic() - start, 1)
        shutil.rmtree(venv, ignore_errors=True)


def verdict(r: dict[str, Any]) -> str:
    if r.get("ok"):
        return f"ok (torch {r.get('torch_installed')}, CUDA {r.get('torch_cuda')})"
    if "reports" in r:
        bad = [f"{s}: {'; '.join(rep.get('problems') or [rep.get('error', '?')])[:120]}"
               for s, rep in r["reports"].items() if not rep.get("ok")]
        return "FAIL " + " | ".join(bad)
    return f"FAIL at {r.get('stage')}: {r.get('error', r.get('log', ''))}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheels", nargs="+", type=Path)
    ap.add_argument("--torch", nargs="*", default=["2.11.0", "2.12.1", "2.13.0", "2.14.1", "2.15.0"])
    ap.add_argument("--python", nargs="*", default=["3.10", "3.11", "3.12", "3.13", "3.14"])
    ap.add_argument("--pivot-torch", default="2.14.1")
    ap.add_argument("--pivot-python", default="3.11")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workdir", type=Path, help="where the venvs go (default: a temporary directory)")
    ap.add_argument("--pip-cache", type=Path, help="pip's cache, kept (default: one inside the work dir, deleted)")
    args = ap.parse_args()
    wheels = [w.resolve() for w in args.wheels]
    missing = [str(w) for w in wheels if not w.is_file()]
    if missing:
        print(f"error: no such wheel: {', '.join(missing)}", file=sys.stderr)
        return 2
    cells = [(t, args.pivot_python) for t in args.torch]
    cells += [(args.pivot_torch, p) for p in args.python if (args.pivot_torch, p) not in cells]
    work = Path(tempfile.mkdtemp(prefix="stable-abi-matrix-", dir=args.workdir))
    (work / "empty").mkdir()
    logs = work / "logs"
    logs.mkdir()
    results = []
    try:
        for torch, python in cells:
            print(f"[{len(results) + 1}/{len(cells)}] torch {torch} x Python {python} ...", flush=True)
            results.append(cell(torch, python, wheels, work, logs, args.pip_cache or work / "pip-cache"))
            print(f"    {verdict(results[-1])} ({results[-1]['seconds']} s)", flush=True)
    finally:
        report = {"wheels": [{"file": w.name, "sha256": sha256(w)} for w in wheels], "cells": results,
                  "machine": "CPU-only (no GPU): ops are checked up to the dispatcher, not run"}
        if args.json:
            args.json.write_text(json.dumps(report, indent=1) + "\n")
        shutil.rmtree(work / "pip-cache", ignore_errors=True)
        kept = [p for p in logs.glob("*.log") if any(not r.get("ok") and str(p) == r.get("log") for r in results)]
        if not kept:
            shutil.rmtree(work, ignore_errors=True)
    width = max(len(t) for t, _ in cells)
    print(f"\n{'torch':<{width}}  Python  result")
    for r in results:
        print(f"{r['torch']:<{width}}  {r['python']:<6}  {verdict(r)}")
    print("wheels: " + ", ".join(f"{w['file']} sha256 {w['sha256'][:16]}" for w in report["wheels"]))
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
