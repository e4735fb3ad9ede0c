"""Measure `buildtool env create`: time, disk, what the user sees, and every failure path ending cleanly.
Writes docs/env-create.md (+ .json).

    nox -s env-create-measure -- --wheels DIR          # or: python benchmarks/envcreate_measure.py --wheels DIR

Real parts: `buildtool env create DIR --profile local --python 3.11` as a user runs it (a subprocess on a
pseudo-terminal, so env create passes the installer's own progress through as on a terminal), the project's
matrix.yaml, PyPI's CUDA torch (`--torch-index https://pypi.org/simple`: download.pytorch.org is not reachable
from the measuring machine; PyPI's torch 2.14.1 is the CUDA 13.0 build), everything else from PyPI, the real
kernel wheels of DIR served by `buildtool index` on 127.0.0.1. Installer caches start empty (their own
directories) and are shared between the runs, as a user's are. Ctrl-C is a real SIGINT to the process group
during the torch step.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import platform
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixture_wheels import clean_env, serve  # noqa: E402

PYPI = "https://pypi.org/simple"
STEPS = (("venv", "1/5 venv", "2/5 torch"), ("torch", "2/5 torch", "3/5 "), ("kernels", "3/5 ", "4/5 doctor"),
         ("doctor", "4/5 doctor", "5/5 import"), ("import check", "5/5 import", "activate: "))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][AB0-2]")


def du(path: Path) -> int:
    """Bytes of the files under path (hard links to a cache count in full: that is what the user sees in du)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) if path.exists() else 0


def run(argv: list[str], env: dict[str, str], *, interrupt_on: str | None = None) -> dict[str, object]:
    """Run on a pseudo-terminal (120x40); record each chunk of output with its time."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    t0 = time.monotonic()
    # A terminal's Ctrl-C: SIGINT to the whole process group (SIGINT's default disposition restored: a harness
    # started in the background would otherwise pass SIG_IGN down and the signal would do nothing).
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=dict(env, TERM="xterm", COLUMNS="120"),
                            cwd=REPO, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(slave)
    chunks: list[tuple[float, str]] = []
    text = ""
    sent_at: float | None = None
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        now = time.monotonic() - t0
        piece = data.decode("utf-8", "replace")
        chunks.append((now, piece))
        text += piece
        if interrupt_on and sent_at is None and interrupt_on in ANSI.sub("", text):
            sent_at = now
        if sent_at is not None and now - sent_at >= 8 and proc.poll() is None and interrupt_on:
            os.killpg(proc.pid, signal.SIGINT)   # 8 s into the step: the download is under way
            interrupt_on = None
    os.close(master)
    code = proc.wait()
    return {"exit": code, "seconds": round(time.monotonic() - t0, 1), "chunks": chunks}


def screen_lines(chunks: list[tuple[float, str]]) -> list[str]:
    """What stays on the screen: ANSI stripped, a carriage-return redraw keeps its last state."""
    text = ANSI.sub("", "".join(c for _, c in chunks)).replace("\r\n", "\n")
    return [ln.split("\r")[-1].rstrip() for ln in text.split("\n") if ln.split("\r")[-1].strip()]


def step_view(chunks: list[tuple[float, str]], start: str, end: str) -> dict[str, object]:
    """During the torch step: seconds, longest gap between screen updates, a few distinct progress states."""
    times = [t for t, _ in chunks]
    joined = ""
    t_start = t_end = None
    for t, c in chunks:
        joined += ANSI.sub("", c)
        if t_start is None and start in joined:
            t_start = t
        if t_start is not None and t_end is None and end in joined[joined.index(start):]:
            t_end = t
    if t_start is None:
        return {}
    t_end = t_end if t_end is not None else times[-1]
    inside = [t for t in times if t_start <= t <= t_end]
    gaps = [b - a for a, b in itertools.pairwise(inside)]
    states: list[str] = []
    for t, c in chunks:
        if t_start <= t <= t_end:
            for part in ANSI.sub("", c).replace("\n", "\r").split("\r"):
                part = part.strip()
                if part and any(k in part for k in ("MiB", "GiB", "KiB", "MB", "eta", "Downloading", "Prepared",
                                                    "Installed", "Resolved")) and part not in states:
                    states.append(part[:150])
    pick = states[:2] + states[len(states) // 2:len(states) // 2 + 1] + states[-2:] if len(states) > 5 else states
    return {"seconds": round(t_end - t_start, 1), "updates": len(inside), "longest_silence_s": round(max(gaps, default=0), 1),
            "progress_samples": list(dict.fromkeys(pick))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", type=Path, action="append", help="kernel wheels or a directory (repeatable)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "env-create.md")
    ap.add_argument("--torch-index", default=PYPI)
    ap.add_argument("--pypi", default=PYPI)
    ap.add_argument("--from-json", type=Path, help="rewrite the table from a previous run's JSON (no measuring)")
    args = ap.parse_args()
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        write(data["rows"], data["setup"], args.out)
        return 0
    wheels = sorted(w for p in args.wheels or [] for w in ([p] if p.is_file() else p.glob("*.whl")))
    if not wheels:
        print("pass the kernel wheels: --wheels DIR", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="envcreate-measure-"))
    rows: list[dict[str, object]] = []
    try:
        (work / "dist").mkdir()
        for w in wheels:
            shutil.copy2(w, work / "dist" / w.name)
        subprocess.run([sys.executable, "-m", "buildtool", "index", str(work / "dist"), "--out", str(work / "site")],
                       check=True, capture_output=True, env=clean_env())
        (work / "a-file").write_text("x")
        (work / "full").mkdir()
        (work / "full" / "keep.txt").write_text("x")
        uv_cache, pip_cache = work / "uv-cache", work / "pip-cache"
        env = clean_env(UV_CACHE_DIR=str(uv_cache), PIP_CACHE_DIR=str(pip_cache))
        with serve(work / "site") as url:
            def create(target: Path, *extra: str, python: str = "3.11", with_: str = "mamba", index: str = url,
                       torch_index: str = args.torch_index) -> list[str]:
                return [sys.executable, "-m", "buildtool", "env", "create", str(target), "--profile", "local",
                        "--python", python, "--with", with_, "--index", index, "--torch-index", torch_index,
                        "--pypi-index", args.pypi, *extra]
            cases: list[tuple[str, list[str], Path, str | None]] = [
                ("no wheel for a requested package (--with vim: mamba-ssm-vim)", create(work / "e1", with_="vim"),
                 work / "e1", None),
                ("no cell/wheel for the requested Python (3.12)", create(work / "e2", python="3.12"), work / "e2", None),
                ("torch index unreachable", create(work / "e3", torch_index="http://127.0.0.1:9/simple"),
                 work / "e3", None),
                ("kernel index unreachable", create(work / "e3", index="http://127.0.0.1:9/"), work / "e3", None),
                ("DIR is a regular file", create(work / "a-file"), work / "a-file", None),
                ("DIR exists and is not empty", create(work / "full"), work / "full", None),
                ("Ctrl-C during the torch step (uv, empty cache)", create(work / "e4"), work / "e4", "2/5 torch"),
                ("created (uv; re-run after Ctrl-C)", create(work / "e4"), work / "e4", None),
                ("created again into a new DIR (uv, warm cache)", create(work / "e5"), work / "e5", None),
                ("created (pip, empty pip cache)", create(work / "e6", "--installer", "pip"), work / "e6", None),
            ]
            for name, argv, target, interrupt in cases:
                result = run(argv, env, interrupt_on=interrupt)
                chunks = result.pop("chunks")
                assert isinstance(chunks, list)
                lines = screen_lines(chunks)
                gaps = [b[0] - a[0] for a, b in itertools.pairwise(chunks)]
                row = {"case": name, **result, "dir_after": ("exists" if target.exists() else "absent"),
                       "dir_bytes": du(target) if target.is_dir() and name.startswith("created") else 0,
                       "uv_cache_bytes": du(uv_cache), "pip_cache_bytes": du(pip_cache),
                       "first_output_s": round(chunks[0][0], 1) if chunks else None,
                       "longest_silence_s": round(max(gaps, default=0.0), 1),
                       "torch_step": step_view(chunks, "2/5 torch", "3/5 "),
                       "steps": {name: step_view(chunks, start, end) for name, start, end in STEPS},
                       "output": [ln for ln in lines if not ln.startswith("  | ")][-7:]}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if name.startswith("created"):
                    shutil.rmtree(target, ignore_errors=True)   # ~5 GB each
    finally:
        shutil.rmtree(work, ignore_errors=True)
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    setup = {"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), no GPU",
             "uv": subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip(),
             "wheels": [w.name for w in wheels], "torch_index": args.torch_index}
    write(rows, setup, args.out)
    return 0


def write(rows: list[dict[str, object]], setup: dict[str, object], out: Path) -> None:
    wheels = setup["wheels"]
    assert isinstance(wheels, list)
    lines = [
        "# `buildtool env create`: measured",
        "",
        "Generated by `nox -s env-create-measure -- --wheels DIR` (`benchmarks/envcreate_measure.py`); do not edit",
        f"by hand. Machine: {setup['machine']}; {setup['uv']}. The documented flow",
        "`buildtool env create DIR --profile local --python 3.11 --index URL` (the default `--with mamba`), with",
        f"`--torch-index {setup['torch_index']}` (PyPI's torch 2.14.1 is the CUDA 13.0 build, ~3 GB of wheels with",
        "its CUDA libraries) and the project's real kernel wheels served by `buildtool index` on 127.0.0.1:",
        ", ".join(f"`{w}`" for w in wheels) + ".",
        "Profile `local` builds causal-conv1d only; mamba-ssm (asked for by `--with mamba`) is taken from the",
        "index, whose stable-ABI wheel fits torch 2.14.1. Each run is on a pseudo-terminal, as a user's is, so",
        "env create passes the installer's own progress (bytes, rate) straight through; \"torch step\" gives its",
        "seconds, screen updates, the longest time the screen stood still, and progress lines it showed.",
        "The uv and pip caches start empty and are shared by the runs in order. \"DIR after: exists\" in the",
        "two DIR cases is the user's own file or directory, left untouched. DIR size counts uv's hard links",
        "into its cache in full (the disk they take is the cache's).",
        "",
        "| case | exit | seconds | first output (s) | torch step: s / updates / longest still (s) | DIR after | DIR size | uv cache | pip cache | last lines the user sees |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def mb(n: object) -> str:
        return f"{int(n) / 1e6:,.0f} MB" if n else "-"  # type: ignore[call-overload]

    def local(text: str) -> str:
        """No paths of the measuring machine in the doc: its temporary root and its buildtool venv."""
        return re.sub(r"/tmp/envcreate-measure-\w+", "/tmp/m", re.sub(r"\S+/\.venv/bin/", "", text))

    for r in rows:
        seen = "<br>".join(local(str(x)).replace("|", "\\|")[:170] for x in r["output"])  # type: ignore[attr-defined]
        step = r.get("torch_step") or {}
        assert isinstance(step, dict)
        torch_step = f"{step['seconds']} / {step['updates']} / {step['longest_silence_s']}" if step else "-"
        lines.append(f"| {r['case']} | {r['exit']} | {r['seconds']} | {r['first_output_s']} | {torch_step} | "
                     f"{r['dir_after']} | {mb(r['dir_bytes'])} | {mb(r['uv_cache_bytes'])} | {mb(r['pip_cache_bytes'])} | "
                     f"{seen} |")
    timed = [r for r in rows if r.get("steps") and any(r["steps"].values())]  # type: ignore[union-attr]
    if timed:
        lines += ["", "Each step of the runs that got past the plan: seconds / screen updates / longest time the screen",
                  "stood still (s).", "", "| case | " + " | ".join(n for n, _, _ in STEPS) + " |",
                  "|---|" + "---|" * len(STEPS)]
        for r in timed:
            st = r["steps"]
            assert isinstance(st, dict)
            cells = [f"{st[n]['seconds']} / {st[n]['updates']} / {st[n]['longest_silence_s']}" if st.get(n) else "-"
                     for n, _, _ in STEPS]
            lines.append(f"| {r['case']} | " + " | ".join(cells) + " |")
    created = [r for r in rows if str(r["case"]).startswith("created")]
    if created and all(r["exit"] == 1 and any("cuda-home" in str(x) for x in r["output"])  # type: ignore[attr-defined]
                       and not any("import check failed" in str(x) for x in r["output"]) for r in created):  # type: ignore[attr-defined]
        lines += ["", "Every created run exits 1 (created with problems) for one doctor warning about the measuring",
                  "machine, not the environment: `nvcc` on PATH is a wrapper in /usr/local/bin, so CUDA_HOME resolves",
                  "to /usr/local, which has no CUDA headers (docs/doctor-example.txt). Imports are ok in every run."]
    if any(r["case"] for r in created):
        lines += ["", "Where the screen stands still: uv prints nothing while it links the ~6 GB into the venv; pip",
                  "prints nothing while it unpacks and installs what it downloaded (its torch and kernels steps'",
                  "\"longest still\"), which is pip's own output passed through as it is. doctor and the import check",
                  "(a minute each on this busy 2-core machine: they import torch and every kernel module) show env",
                  "create's spinner with the elapsed seconds."]
    pip_rows = [r for r in rows if "(pip" in str(r["case"]) and str(r["case"]).startswith("created")]
    if pip_rows and not any(r["pip_cache_bytes"] for r in pip_rows):
        lines += ["", "The pip cache stayed empty: the venv's pip (23.2.1, from `python -m venv`) wrote nothing under",
                  "PIP_CACHE_DIR on this machine, so a pip re-run downloads again; with uv (the default when installed)",
                  "the cache is what makes the re-run after Ctrl-C and the second environment cheap."]
    samples = [(r["case"], (r.get("torch_step") or {}).get("progress_samples")) for r in rows]  # type: ignore[union-attr]
    shown = [(c, s) for c, s in samples if s]
    if shown:
        lines += ["", "What the torch step showed on the terminal (a few of its progress lines, ANSI stripped):", ""]
        for case, s in shown:
            lines.append(f"- {case}:")
            lines += [f"  - `{x}`" for x in s]  # type: ignore[union-attr]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
