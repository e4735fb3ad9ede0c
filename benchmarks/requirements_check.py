"""The declared-requirements check of `buildtool verify` on real wheels, in a fresh venv with PyPI's torch.
Merges its rows into docs/declared-requirements.json and rewrites docs/declared-requirements.md.

    nox -s requirements-check -- --wheels DIR --python 3.12 --torch 2.11.0
    python benchmarks/requirements_check.py --wheels DIR [--python 3.11 --torch 2.14.1]

Real parts: a fresh CPython venv with PyPI's torch (CUDA build; uv, shared cache) is the verifying
interpreter; `buildtool verify WHEELS --static-only --python VENV` then runs, per wheel, the check itself
(buildtool/verify/requirements.py: another fresh venv seeing only that torch, `pip install WHEEL` with its
requirements resolved from PyPI as pip does today next to a `torch==<installed>` constraint, sibling wheels of
the directory for kernel requirements, every public module imported; no GPU). The static checks run too and
are counted. Rows are keyed by (wheel, Python, torch), so runs on different wheelhouses add up in one table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixture_wheels import clean_env  # noqa: E402
from install_matrix import Venvs, uv_and_wheels  # noqa: E402

CHECK = "declared requirements"
# (what the doc calls it, the wheel file name's start); Vim's fork is the distribution mamba_ssm 1.1.1
FAMILIES = (("causal-conv1d", "causal_conv1d-"), ("mamba-ssm 2.2.2", "mamba_ssm-2.2.2"),
            ("mamba-ssm 2.3.2.post1", "mamba_ssm-2.3.2.post1"), ("Vim's fork (mamba-ssm-vim 1.1.1)", "mamba_ssm-1.1.1"),
            ("VMamba's selective_scan 0.0.2", "selective_scan-0.0.2"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", type=Path, action="append", default=[], help="a wheel or a directory (repeatable)")
    ap.add_argument("--python", default="3.11", help="CPython X.Y of the verifying venv")
    ap.add_argument("--torch", default="2.14.1", help="torch from PyPI (CUDA build) for the verifying venv")
    ap.add_argument("--pypi", default="https://pypi.org/simple")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "declared-requirements.md")
    ap.add_argument("--note", default="", help="a note shown with these rows (where the wheels come from)")
    ap.add_argument("--rewrite", action="store_true", help="rewrite the table from the JSON beside --out (no run)")
    args = ap.parse_args()
    if args.rewrite:
        write(json.loads(args.out.with_suffix(".json").read_text())["rows"], args.out)
        return 0
    found = uv_and_wheels(args.wheels)
    if found is None:
        return 2
    uv, wheels = found
    work = Path(tempfile.mkdtemp(prefix="requirements-check-"))
    env = clean_env()
    try:
        venv = work / "torch-venv"
        python = Venvs(uv, args.python, args.pypi, env).make(venv, args.torch, with_pip=False)
        report = work / "verify.json"
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "buildtool", "verify", *map(str, wheels), "--static-only",
                               "--python", str(python), "--json-out", str(report)],
                              capture_output=True, text=True, env=env)
        seconds = round(time.monotonic() - t0, 1)
        if not report.exists():
            print(proc.stdout[-2000:] + proc.stderr[-2000:], file=sys.stderr)
            return 2
        data = json.loads(report.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = data["results"]
    date = datetime.now(timezone.utc).date().isoformat()
    new_rows = []
    for whl in wheels:
        mine = [r for r in results if r["wheel"] == whl.name]
        req = next((r for r in mine if r["check"] == CHECK), None)
        static = [r for r in mine if r["check"] != CHECK and r["result"] != "skip"]
        new_rows.append({
            "wheel": whl.name, "python": args.python, "torch": args.torch, "date": date,
            "result": req["result"] if req else "missing", "detail": req["detail"] if req else "no row",
            "modules": (req or {}).get("numbers", {}).get("modules"),
            "static": f"{sum(r['result'] == 'pass' for r in static)} pass, {sum(r['result'] == 'fail' for r in static)} fail",
            "static_failures": [f"{r['check']}: {r['detail'][:200]}" for r in static if r["result"] == "fail"],
            "note": args.note,
        })
        print(json.dumps(new_rows[-1]), flush=True)
    print(f"buildtool verify: {seconds} s for {len(wheels)} wheels", flush=True)
    json_out = args.out.with_suffix(".json")
    old = json.loads(json_out.read_text())["rows"] if json_out.exists() else []
    keys = {(r["wheel"], r["python"], r["torch"]) for r in new_rows}
    rows = [r for r in old if (r["wheel"], r["python"], r["torch"]) not in keys] + new_rows
    write(rows, args.out)
    return 0 if all(r["result"] == "pass" for r in new_rows) else 1


def write(rows: list[dict[str, object]], out: Path) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, no GPU"
    lines = [
        "# Declared requirements, verified on real wheels",
        "",
        "Generated by `nox -s requirements-check -- --wheels DIR --python X.Y --torch VER`",
        "(`benchmarks/requirements_check.py`); do not edit by hand. What it runs is the `declared requirements`",
        "check of `buildtool verify` (docs/verification.md), with a fresh venv holding PyPI's CUDA torch as the",
        "verifying interpreter: in another fresh venv that sees only that torch (constraint `torch==<installed>`),",
        "`pip install WHEEL` resolves the wheel's requirements from PyPI as pip does that day (kernel requirements",
        "from the wheel's own directory: `--only-binary` for the kernel projects), then torch and every public",
        "module of the wheel are imported; the CUDA extensions load without a GPU.",
        f"Machine: {machine}, PyPI reachable. \"static\" counts the other checks of `buildtool verify --static-only`",
        "on the same wheel (metadata, RECORD, libraries, glibc, archs, stable-ABI symbols).",
        "",
        "| wheel | Python | torch (PyPI) | result | public modules | what pip resolved / why not | static | date |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (str(r["wheel"]), str(r["python"]), str(r["torch"]))):
        detail = str(r["detail"]).replace("|", "/").replace("\n", " ") + (f" ({r['note']})" if r.get("note") else "")
        lines.append(f"| `{r['wheel']}` | {r['python']} | {r['torch']} | **{r['result']}** | {r['modules'] or '-'} | "
                     f"{detail} | {r['static']} | {r['date']} |")
    green = [r for r in rows if r["result"] == "pass"]
    lines += ["", f"{len(green)} of {len(rows)} rows pass."]
    covered = [name for name, prefix in FAMILIES if any(str(r["wheel"]).startswith(prefix) for r in green)]
    missing = [name for name, _ in FAMILIES if name not in covered]
    lines += ["", f"Families with a passing row: {', '.join(covered) or 'none'}."]
    if missing:
        lines += [f"Not measured yet (no wheel of them on the measuring machine): {', '.join(missing)}. Their",
                  "full-ABI wheels come from the GPU machine's cells (Python 3.12, torch 2.11, CUDA 13.0);",
                  "`nox -s requirements-check -- --wheels DIR --python 3.12 --torch 2.11.0` adds their rows."]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n",
                                        encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
