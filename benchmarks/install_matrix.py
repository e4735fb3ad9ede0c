"""Measure every documented install command: installer x (channel alone, channel + PyPI) x (torch matching,
torch one minor off) -> torch before/after, what was installed, import result. Writes docs/install-matrix.md.

    nox -s install-matrix            # or: python benchmarks/install_matrix.py --out docs/install-matrix.md

Real parts: real wheels (a compiled CPython extension, METADATA with the label and `Requires-Dist:
torch==A.B.*` + `einops` from PyPI) for torch 2.13 and 2.14, `buildtool index` served on 127.0.0.1, fresh venvs
that see a real torch (2.14.1+cu130: the default cell's build env; 2.13.0+cpu: pip-installed once from the
machine's wheel store) linked in by a .pth with its dist-info copied (pip and uv see it as installed; an
install that replaces it puts a new torch into the venv, which the "after" column then shows), real pip and uv
against real PyPI. The commands are the ones `buildtool resolve --explain`, the picker page and
docs/user-guide.md print (buildtool.publish.commands), with the channel of torch 2.14.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from fixture_wheels import (  # noqa: E402
    clean_env,
    compile_extension,
    find_torch_site,
    label,
    make_venv,
    make_wheel,
    serve,
    uv_bin,
)

from buildtool.publish.commands import channel_command  # noqa: E402

PKG = "tiny-kernel"
IMPORT = "import torch, tiny_kernel; tiny_kernel.touch(); print('import ok')"


def _versions(python: Path) -> dict[str, str]:
    code = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip().splitlines()
    return json.loads(out[-1]) if out else {}


def _torch(python: Path) -> str:
    """torch.__version__ as imported (what runs) with the distribution's version if it differs."""
    code = "import torch, importlib.metadata as m; v, d = torch.__version__, m.version('torch'); print(v if v == d else f'{v} (dist {d})')"
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "import fails"


def _torch_dist(python: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('torch'))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip()


def _last_error(text: str) -> str:
    """The line that says why: pip's ERROR, uv's `Because ...` explanation, buildtool's reason line."""
    lines = [ln.strip().lstrip("╰─▶ ").strip() for ln in text.splitlines() if ln.strip()]
    for key in ("Because ", "ERROR: Cannot install", "ERROR: Could not find", "ERROR: ", "error: "):
        hit = [ln for ln in lines if ln.startswith(key)]
        if hit:
            reason = hit[0]
            if reason.startswith("error: no wheel of"):   # buildtool: the first rejection reason follows
                idx = lines.index(reason)
                reason += " " + (lines[idx + 1] if idx + 1 < len(lines) else "")
            return reason[:200]
    return (lines[-1] if lines else "?")[:200]


def build_site(work: Path) -> Path:
    dist = work / "dist"
    so_name, so = compile_extension(work / "ext", "tiny_kernel_ext")
    for minor in ("2.13", "2.14"):
        make_wheel(dist, PKG, f"1.0.0+{label(minor)}",
                   files={"tiny_kernel/__init__.py": "from tiny_kernel_ext import touch\n", so_name: so},
                   requires=(f"torch=={minor}.*", "einops"))
    site = work / "site"
    subprocess.run([sys.executable, "-m", "buildtool", "index", str(dist), "--out", str(site)], check=True,
                   capture_output=True, env=clean_env())
    return site


def torch_sites(cache: Path) -> dict[str, Path]:
    """torch 2.14.1+cu130 (the default cell's build env) and torch 2.13.0+cpu (pip --target, once)."""
    sites = {"2.14": find_torch_site(cache)}
    cpu = cache / "torch-2.13-cpu"
    if not (cpu / "torch" / "__init__.py").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(cpu), "torch==2.13.0+cpu"],
                       check=True)
    sites["2.13"] = cpu
    return sites


def measure_one(argv: list[str], python: Path, env: dict[str, str]) -> dict[str, object]:
    before_versions = _versions(python)
    torch_before = _torch(python)
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    seconds = time.monotonic() - t0
    after_versions = _versions(python)
    torch_after = _torch(python)
    added = sorted(f"{k} {v}" for k, v in after_versions.items() if before_versions.get(k) != v)
    imp = subprocess.run([str(python), "-c", IMPORT], capture_output=True, text=True)
    return {
        "exit": proc.returncode, "seconds": round(seconds, 1), "torch_before": torch_before, "torch_after": torch_after,
        "installed": added, "import": "ok" if imp.returncode == 0 else _last_error(imp.stderr),
        "error": "" if proc.returncode == 0 else _last_error(proc.stdout + "\n" + proc.stderr),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "install-matrix.md")
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "install-matrix.json")
    ap.add_argument("--pypi", default="https://pypi.org/simple")
    args = ap.parse_args()
    uv = uv_bin()
    if uv is None:
        print("uv is not installed (pip install uv)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="install-matrix-"))
    rows: list[dict[str, object]] = []
    try:
        site = build_site(work)
        sites = torch_sites(Path.home() / ".cache" / "buildtool" / "install-matrix")
        with serve(site) as url:
            channel = f"{url}/channels/cu130-torch2.14/"
            cases: list[tuple[str, str, bool, list[str]]] = []
            for installer in ("pip", "uv"):
                for with_pypi in (False, True):
                    cmd = channel_command(installer, PKG, channel, torch=None, with_pypi=with_pypi, pypi=args.pypi)
                    cases.append((installer, cmd.line().replace(url, "URL"), with_pypi, list(cmd.argv)))
            cases.append(("buildtool", f"buildtool install {PKG} --index URL", True,
                          [sys.executable, "-m", "buildtool", "install", PKG, "--index", url, "--no-host"]))
            own = f"{url}/channels/cu130-torch2.13/"
            own_cases = [(i, channel_command(i, PKG, own, torch=None, pypi=args.pypi).line().replace(url, "URL"), True,
                          list(channel_command(i, PKG, own, torch=None, pypi=args.pypi).argv)) for i in ("pip", "uv")]
            for torch_minor, case, todo in (("2.14", "matching", cases), ("2.13", "one minor off", cases),
                                            ("2.13", "2.13, its own channel", own_cases)):
                for installer, shown, with_pypi, argv in todo:
                    venv = work / f"venv-{len(rows)}"
                    python = make_venv(venv, sites[torch_minor], with_pip=installer == "pip")
                    torch_version = _torch_dist(python)
                    real = [a.replace("@@TORCH@@", torch_version) for a in argv]
                    if installer == "pip":
                        real = [str(python), "-m", *real]
                    elif installer == "uv":
                        real = [uv, *real[1:]]
                    env = clean_env(VIRTUAL_ENV=str(venv), UV_CACHE_DIR=str(work / "uv-cache"),
                                    PIP_CACHE_DIR=str(work / "pip-cache"))
                    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
                    result = measure_one(real, python, env)
                    row = {"command": shown, "installer": installer, "indexes": "channel + PyPI" if with_pypi
                           else "channel alone", "torch": case, **result}
                    if installer == "buildtool":
                        row["indexes"] = "all-in-one index + PyPI"
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    shutil.rmtree(venv, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(rows, args.out, args.json)
    changed = [r for r in rows if r["torch_before"] != r["torch_after"]]
    return 1 if changed else 0


def write(rows: list[dict[str, object]], out: Path, json_out: Path) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        "# Install matrix: what every documented command does to an environment",
        "",
        "Generated by `nox -s install-matrix` (`benchmarks/install_matrix.py`); do not edit by hand.",
        f"Machine: {machine}, no GPU, PyPI reachable. Index: `buildtool index` of two real wheels of a fixture",
        "kernel package (`tiny-kernel` 1.0.0, a compiled CPython extension; `+cu130torch2.13cxx11abiTRUE` and",
        "`+cu130torch2.14cxx11abiTRUE`, each `Requires-Dist: torch==A.B.*`, `einops`) served on 127.0.0.1.",
        "Every command is run as documented, with the channel of torch 2.14 (`URL/channels/cu130-torch2.14/`),",
        "in a fresh venv whose torch is 2.14.1+cu130 (matching) or 2.13.0+cpu (one minor off); the last rows",
        "give the 2.13 environment the channel `buildtool resolve --explain` prints for it (`cu130-torch2.13`).",
        "The CPU build of torch 2.13.0 stands in for the CUDA one (only the CPU build is on this machine's disk;",
        "pip and uv compare versions, and the fixture extension needs no CUDA).",
        "`\"torch==$(python ...)\"` is the installed torch distribution's version.",
        "",
        "| command | installer | indexes | torch | exit | torch before | torch after | installed | import |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        installed = ", ".join(r["installed"]) if r["installed"] else "nothing"  # type: ignore[arg-type]
        result = "ok" if r["exit"] == 0 else f"refused: {r['error']}"
        cmd = str(r["command"]).replace("|", "\\|")
        lines.append(f"| `{cmd}` | {r['installer']} | {r['indexes']} | {r['torch']} | {r['exit']} | "
                     f"{r['torch_before']} | {r['torch_after']} | {installed}; {result} | {r['import']} |")
    same = all(r["torch_before"] == r["torch_after"] for r in rows)
    lines += ["", f"torch unchanged in every row: **{'yes' if same else 'NO'}** ({len(rows)} rows)."]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    json_out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
