"""Measure every documented install command: installer x (channel alone, channel + PyPI) x (torch matching,
torch one minor off) -> torch before/after, what was installed, import result. Writes docs/install-matrix.md.

    nox -s install-matrix -- --wheels DIR [--python 3.11 --torch 2.14.1 --torch-off 2.13.0]
    python benchmarks/install_matrix.py --wheels DIR

Real parts: the project's real kernel wheels (DIR: e.g. the stable-ABI causal-conv1d and mamba-ssm wheels of
`nox -s build-local-stable`), `buildtool index` of them served on 127.0.0.1, real pip and uv against real PyPI,
and in every row a fresh venv with PyPI's torch (CUDA build) installed by uv from a shared cache (hard links, so
a row costs seconds and no disk). The commands are the ones `buildtool resolve --explain`, the picker page and
docs/user-guide.md print (buildtool.publish.commands), with the channel `resolve` prints for the matching
torch; the "one minor off" rows run the same command in a venv whose torch is one minor older. The import check
imports torch and every public module of the wheel (buildtool.verify.requirements.public_modules), no GPU.
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
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from fixture_wheels import clean_env, serve, uv_bin  # noqa: E402

from buildtool.publish.commands import channel_command  # noqa: E402
from buildtool.verify.requirements import public_modules  # noqa: E402

IMPORT_ALL = r"""
import importlib, json, sys
errors = {}
import torch
for m in json.loads(sys.argv[1]):
    try:
        importlib.import_module(m)
    except BaseException as e:
        errors[m] = (type(e).__name__ + ": " + str(e)).splitlines()[0][:200]
print("IMPORTS" + json.dumps(errors))
"""


def _versions(python: Path) -> dict[str, str]:
    code = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip().splitlines()
    return json.loads(out[-1]) if out else {}


def _torch(python: Path) -> str:
    """torch.__version__ as imported (what runs) with the distribution's version if it differs."""
    code = "import torch, importlib.metadata as m; v, d = torch.__version__, m.version('torch'); print(v if v == d else f'{v} (dist {d})')"
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "import fails"


def _last_error(text: str) -> str:
    """The line that says why: pip's ERROR, uv's `Because ...` explanation, buildtool's reason line."""
    lines = [ln.strip().lstrip("╰─▶×│ ").strip() for ln in text.splitlines() if ln.strip()]
    for key in ("Because ", "ERROR: Cannot install", "ERROR: Could not find", "ERROR: ", "error: "):
        hit = [ln[ln.index(key):] for ln in lines if key in ln]
        if hit:
            reason = hit[0]
            if reason.startswith("error: no wheel of"):   # buildtool: the first rejection reason follows
                idx = lines.index(reason)
                reason += " " + (lines[idx + 1] if idx + 1 < len(lines) else "")
            return reason[:240]
    return (lines[-1] if lines else "?")[:240]


def _import_check(python: Path, modules: list[str]) -> str:
    proc = subprocess.run([str(python), "-c", IMPORT_ALL, json.dumps(modules)], capture_output=True, text=True,
                          timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("IMPORTS")), None)
    if line is None:
        return _last_error(proc.stderr)
    errors: dict[str, str] = json.loads(line[len("IMPORTS"):])
    if not errors:
        return f"ok ({len(modules)} modules)"
    first = next(iter(errors.items()))
    return f"{len(errors)} of {len(modules)} fail; {first[0]}: {first[1]}"


def build_site(wheels: list[Path], work: Path) -> tuple[Path, dict[str, list[str]]]:
    """`buildtool index` of copies of the wheels; {project: public modules} for the import check."""
    dist = work / "dist"
    dist.mkdir(parents=True)
    modules: dict[str, list[str]] = {}
    for whl in wheels:
        shutil.copy2(whl, dist / whl.name)
        project = whl.name.split("-", 1)[0].replace("_", "-").lower()
        modules.setdefault(project, [])
        modules[project] = sorted(set(modules[project]) | set(public_modules(zipfile.ZipFile(whl).namelist())))
    site = work / "site"
    subprocess.run([sys.executable, "-m", "buildtool", "index", str(dist), "--out", str(site)], check=True,
                   capture_output=True, env=clean_env())
    return site, modules


def channel_for(url: str, project: str, torch: str, python: str) -> str:
    """The channel `buildtool resolve --explain` prints for an environment with this torch (CUDA 13.0, Linux)."""
    proc = subprocess.run([sys.executable, "-m", "buildtool", "resolve", project, "--index", url, "--torch", torch,
                           "--cuda", "13.0", "--abi", "TRUE", "--python-tag", "cp" + python.replace(".", ""),
                           "--platform", "linux-x86_64", "--gpu-arch", "9.0", "--json"],
                          capture_output=True, text=True, env=clean_env())
    data = json.loads(proc.stdout)
    channel = data.get("channel_url")
    if not channel:
        raise SystemExit(f"resolve found no channel for {project} with torch {torch}: {proc.stdout[-400:]}")
    return str(channel)


def interpreter(version: str) -> str:
    """CPython X.Y as a path uv can use: pyenv's build when present (its shims only run the global version)."""
    if os.sep in version:
        return version
    pyenv = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    found = str(pyenv[-1]) if pyenv else shutil.which(f"python{version}")
    if not found:
        raise SystemExit(f"no CPython {version} on this machine")
    return found


class Venvs:
    """Fresh venvs with PyPI's torch, installed by uv from a shared cache (hard links: seconds, no new disk)."""

    def __init__(self, uv: str, python: str, pypi: str, env: dict[str, str]) -> None:
        self.uv, self.python, self.pypi, self.env = uv, interpreter(python), pypi, env

    def make(self, path: Path, torch: str, *, with_pip: bool) -> Path:
        subprocess.run([self.uv, "venv", "-q", *(["--seed"] if with_pip else []), "--python", self.python, str(path)],
                       check=True, env=self.env)
        py = path / "bin" / "python"
        if with_pip:   # today's pip, as a user who upgrades gets it
            subprocess.run([self.uv, "pip", "install", "-q", "--python", str(py), "--index-url", self.pypi, "-U", "pip"],
                           check=True, env=self.env)
        subprocess.run([self.uv, "pip", "install", "-q", "--python", str(py), "--index-url", self.pypi,
                        f"torch=={torch}"], check=True, env=self.env)
        return py


def measure_one(argv: list[str], python: Path, modules: list[str], env: dict[str, str]) -> dict[str, object]:
    before_versions = _versions(python)
    torch_before = _torch(python)
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.monotonic() - t0
    after_versions = _versions(python)
    torch_after = _torch(python)
    added = sorted(f"{k} {v}" for k, v in after_versions.items() if before_versions.get(k) != v)
    return {
        "exit": proc.returncode, "seconds": round(seconds, 1), "torch_before": torch_before, "torch_after": torch_after,
        "installed": added, "import": _import_check(python, modules),
        "error": "" if proc.returncode == 0 else _last_error(proc.stdout + "\n" + proc.stderr),
        "output_tail": (proc.stdout + proc.stderr).strip().splitlines()[-12:],
    }



def uv_and_wheels(paths: list[Path]) -> tuple[str, list[Path]] | None:
    """uv and the wheel files named (files, or directories of them); None, said on stderr, when either is missing."""
    uv = uv_bin()
    if uv is None:
        print("uv is not installed (pip install uv)", file=sys.stderr)
        return None
    wheels = sorted(w for p in paths for w in ([p] if p.is_file() else p.glob("*.whl")))
    if not wheels:
        print(f"no wheels in {', '.join(map(str, paths))}", file=sys.stderr)
        return None
    return uv, wheels

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", type=Path, action="append", default=[],
                    help="a kernel wheel or a directory of them (repeatable)")
    ap.add_argument("--python", default="3.11", help="CPython X.Y of the venvs")
    ap.add_argument("--torch", default="2.14.1", help="the matching torch (PyPI, CUDA build)")
    ap.add_argument("--torch-off", default="2.13.0", help="torch one minor off (PyPI, CUDA build)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "install-matrix.md")
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "install-matrix.json")
    ap.add_argument("--pypi", default="https://pypi.org/simple")
    ap.add_argument("--only", help="one project (e.g. causal-conv1d)")
    ap.add_argument("--installers", nargs="+", choices=("pip", "uv", "buildtool", "buildtool-uv"),
                    help="only these rows; with --merge the others stay as the JSON has them")
    ap.add_argument("--merge", action="store_true", help="replace matching rows of the existing JSON, keep the rest")
    ap.add_argument("--from-json", type=Path, help="rewrite the table from a previous run's JSON (no measuring)")
    args = ap.parse_args()
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        write(data["rows"], data["setup"], args.out, args.json)
        return 0
    found = uv_and_wheels(args.wheels)
    if found is None:
        return 2
    uv, wheels = found
    work = Path(tempfile.mkdtemp(prefix="install-matrix-"))
    # pip and uv share the user's caches (torch is several GB); nothing of this machine's pip config applies
    env = clean_env()
    venvs = Venvs(uv, args.python, args.pypi, env)
    rows: list[dict[str, object]] = []
    pip_version = ""
    try:
        site, modules = build_site(wheels, work)
        projects = [p for p in modules if not args.only or p == args.only]
        with serve(site) as url:
            for project in projects:
                channel = channel_for(url, project, args.torch, args.python)
                cases: list[tuple[str, str, str, list[str]]] = []
                for installer in ("pip", "uv"):
                    for with_pypi in (False, True):
                        cmd = channel_command(installer, project, channel, torch=None, with_pypi=with_pypi,
                                              pypi=args.pypi)
                        cases.append((installer, cmd.line().replace(url, "URL"),
                                      "channel + PyPI" if with_pypi else "channel alone", list(cmd.argv)))
                cases.append(("buildtool", f"buildtool install {project} --index URL", "all-in-one index + PyPI",
                              [sys.executable, "-m", "buildtool", "install", project, "--index", url, "--no-host"]))
                cases.append(("buildtool-uv", f"buildtool install {project} --index URL --installer uv",
                              "all-in-one index + PyPI", [sys.executable, "-m", "buildtool", "install", project,
                                                          "--index", url, "--no-host", "--installer", "uv"]))
                cases = [c for c in cases if not args.installers or c[0] in args.installers]
                for torch, case in ((args.torch, "matching"), (args.torch_off, "one minor off")):
                    for installer, shown, indexes, argv in cases:
                        venv = work / f"venv-{len(rows)}"
                        python = venvs.make(venv, torch, with_pip=installer == "pip")
                        real = [a.replace("@@TORCH@@", torch) for a in argv]
                        if installer == "pip":
                            real = [str(python), "-m", *real]
                            pip_version = pip_version or subprocess.run(
                                [str(python), "-m", "pip", "--version"], capture_output=True, text=True).stdout.split()[1]
                        elif installer == "uv":
                            real = [uv, *real[1:]]
                        row_env = dict(env, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
                        result = measure_one(real, python, modules[project], row_env)
                        row = {"package": project, "command": shown, "installer": installer, "indexes": indexes,
                               "torch": case, "channel": channel.replace(url, "URL"), **result}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        shutil.rmtree(venv, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    uv_version = subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.split()[1]
    setup = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU", "python": args.python,
             "torch": args.torch, "torch_off": args.torch_off, "pip": pip_version, "uv": uv_version,
             "wheels": [{"file": w.name, "bytes": w.stat().st_size} for w in wheels]}
    if args.merge and args.json.exists():
        def key(r: dict[str, object]) -> tuple[str, ...]:
            return (str(r["package"]), str(r["installer"]), str(r["indexes"]), str(r["torch"]))
        new = {key(r): r for r in rows}
        previous = json.loads(args.json.read_text())
        setup["pip"] = setup["pip"] or previous["setup"].get("pip", "")   # no pip row ran this time
        old = previous["rows"]
        merged = [new.pop(key(r), r) for r in old]
        rows = merged + list(new.values())
        order = {n: i for i, n in enumerate(("pip", "uv", "buildtool", "buildtool-uv"))}
        rows.sort(key=lambda r: (str(r["package"]), str(r["torch"]) != "matching", order.get(str(r["installer"]), 9)))
    write(rows, setup, args.out, args.json)
    changed = [r for r in rows if r["torch_before"] != r["torch_after"]]
    return 1 if changed else 0


def summary(rows: list[dict[str, object]]) -> list[str]:
    """Counts and the distinct reasons for refusals, for the reader who does not read 24 wide rows."""
    ok = [r for r in rows if r["exit"] == 0 and str(r["import"]).startswith("ok")]
    refused = [r for r in rows if r["exit"] != 0]
    lines = [f"**{len(ok)} of {len(rows)} rows install and import; {len(refused)} are refused with torch untouched"
             f"{'' if len(ok) + len(refused) == len(rows) else '; the rest install but do not import'}.**"]
    reasons: dict[str, list[str]] = {}
    for r in refused:
        reasons.setdefault(str(r["error"])[:160], []).append(f"{r['package']} / {r['installer']} / {r['indexes']} / "
                                                             f"{r['torch']}")
    for reason, where in reasons.items():
        lines.append(f"- refused ({len(where)}x: {'; '.join(where)}): `{reason}`")
    if refused and all(r["indexes"] == "channel alone" for r in refused):
        lines.append("Every refusal is the channel-alone form, whose other requirements must already be installed "
                     "(docs/user-guide.md says so); the same command with PyPI added installs.")
    return lines


def write(rows: list[dict[str, object]], setup: dict[str, object], out: Path, json_out: Path) -> None:
    wheels = setup["wheels"]
    assert isinstance(wheels, list)
    lines = [
        "# Install matrix: what every documented command does to an environment",
        "",
        "Generated by `nox -s install-matrix -- --wheels DIR` (`benchmarks/install_matrix.py`); do not edit by hand.",
        f"Machine: {setup['machine']}, PyPI reachable; pip {setup['pip']} in each pip venv, uv {setup['uv']}.",
        "Index: `buildtool index` of the project's real wheels, served on 127.0.0.1:",
        *[f"`{w['file']}` ({int(w['bytes']) / 1e6:.1f} MB)," for w in wheels],
        "nvcc builds for sm_90 against the torch stable ABI (`Requires-Dist: torch>=2.10`), so `resolve` gives the",
        "channel `URL/channels/cu13-stable/` for every torch >= 2.10 with CUDA 13.",
        f"Every row is a fresh CPython {setup['python']} venv with PyPI's CUDA 13.0 torch: {setup['torch']} (matching:",
        "the torch the wheels' headers came from) or",
        f"{setup['torch_off']} (one minor off), installed before the command; then the command as documented,",
        "`\"torch==$(python ...)\"` being the installed torch distribution's version. \"installed\" lists every",
        "distribution the command added or changed; \"import\" imports torch and every public module of the wheel",
        "in the venv (no GPU here: the extensions load, nothing launches). A pip venv is `uv venv --seed` (pip,",
        "setuptools, wheel and its requirement packaging) with pip upgraded; a uv venv has nothing but torch and",
        "its requirements. `buildtool install` drives its own pip (or uv with `--installer uv`) with `--python`.",
        *(["Full-ABI wheels (one channel per CUDA x torch minor, `Requires-Dist: torch==A.B.*`) are not in this run;",
           "tests/test_index.py runs pip through such a channel with wheels built for two torch minors (the",
           "channel's pin holds where the all-in-one index would hand pip the highest label)."]
          if all("stable" in str(w["file"]) for w in wheels) else []),
        "",
        *summary(rows),
        "",
        "| package | command | installer | indexes | torch | exit | s | torch before | torch after | installed | import |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        installed = ", ".join(r["installed"]) if r["installed"] else "nothing"  # type: ignore[arg-type]
        result = "ok" if r["exit"] == 0 else f"refused: {r['error']}"
        cmd = str(r["command"]).replace("|", "\\|")
        lines.append(f"| {r['package']} | `{cmd}` | {r['installer']} | {r['indexes']} | {r['torch']} | {r['exit']} | "
                     f"{r['seconds']} | {r['torch_before']} | {r['torch_after']} | {installed}; {result} | "
                     f"{str(r['import']).replace('|', '/')} |")
    same = all(r["torch_before"] == r["torch_after"] for r in rows)
    lines += ["", f"torch unchanged in every row: **{'yes' if same else 'NO'}** ({len(rows)} rows)."]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    json_out.write_text(json.dumps({"setup": setup, "rows": rows}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
