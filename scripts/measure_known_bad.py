"""Measure which versions of a dependency break an import, for buildtool/data/known_bad.yaml.

    python scripts/measure_known_bad.py --torch-site SITE --package tilelang==0.1.8 \
        --dependency apache-tvm-ffi --versions 0.1.9 0.1.10 ... --import tilelang --out result.json

A fresh venv that sees a real torch (linked from SITE by a .pth, its dist-info copied so pip treats torch as
installed and never replaces it), the package installed with its requirements resolved from PyPI as pip does
today, then for each dependency version: `pip install DEP==V` and `python -c "import MODULE"` in a subprocess.
Prints a table and writes JSON (version -> ok / the error's last line).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_")) and k != "VIRTUAL_ENV"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=clean_env())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-site", required=True, type=Path)
    ap.add_argument("--package", required=True)
    ap.add_argument("--dependency", required=True)
    ap.add_argument("--versions", nargs="+", required=True)
    ap.add_argument("--import", dest="module", required=True)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="known-bad-"))
    try:
        subprocess.run([args.python, "-m", "venv", str(work / "venv")], check=True)
        py = str(work / "venv" / "bin" / "python")
        site = Path(run([py, "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
        (site / "zz_torch_site.pth").write_text(str(args.torch_site) + "\n")
        for info in args.torch_site.glob("*.dist-info"):
            if info.name.split("-")[0].lower() != "pip":
                shutil.copytree(info, site / info.name, dirs_exist_ok=True)
        torch_before = run([py, "-c", "import torch;print(torch.__version__)"]).stdout.strip()
        t0 = time.monotonic()
        proc = run([py, "-m", "pip", "install", "-q", args.package])
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        resolved = run([py, "-c", f"import importlib.metadata as m;print(m.version({args.dependency!r}))"]).stdout.strip()
        results: dict[str, str] = {}
        for version in [resolved, *args.versions]:
            if version in results:
                continue
            proc = run([py, "-m", "pip", "install", "-q", f"{args.dependency}=={version}"])
            if proc.returncode != 0:
                results[version] = "install failed: " + proc.stderr.strip().splitlines()[-1]
                continue
            imp = run([py, "-c", f"import {args.module}"])
            last = (imp.stderr.strip().splitlines() or ["?"])[-1]
            results[version] = "ok" if imp.returncode == 0 else last
            print(f"{args.dependency}=={version:<14} {results[version][:150]}", flush=True)
        torch_after = run([py, "-c", "import torch;print(torch.__version__)"]).stdout.strip()
        out = {"package": args.package, "dependency": args.dependency, "resolved_today": resolved,
               "module": args.module, "torch_before": torch_before, "torch_after": torch_after,
               "python": run([py, "-c", "import sys;print(sys.version.split()[0])"]).stdout.strip(),
               "seconds": round(time.monotonic() - t0, 1), "results": results}
        if args.out:
            args.out.write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(out, indent=1))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
