"""Kernel speed of buildtool-built wheels against upstream-built ones, on one GPU, in one run.

    python benchmarks/kernel_speed.py --ours DIR --upstream DIR --out FILE.json [--rounds 7] [--reps 200]

Each wheel is installed with ``pip install --no-deps --target`` into a directory of its own; torch is the
interpreter's. Every round times each side in a fresh subprocess (the order alternates between rounds, so
clock and thermal drift hit both sides alike) with CUDA events, ``reps`` calls after a warm-up; a side's
time is the median over rounds. Shapes: DESIGN.md's selective_scan shapes (``scan_bench`` in
buildtool/data/verify.yaml) fwd and fwd+bwd, and causal_conv1d fwd, fwd+bwd and update. The ratio is
ours / upstream (below 1: ours is faster). Needs a GPU; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# distribution name in the wheel file -> the extension module in it
EXTENSIONS = {"mamba_ssm": "selective_scan_cuda", "causal_conv1d": "causal_conv1d_cuda"}


# ------------------------------------------------------------------------------------------ worker side
def _time(fn: Any, reps: int) -> float:
    from buildtool.verify.bench import time_ms

    return time_ms(fn, warmup=10, reps=reps)


def _scan_shapes(mod: Any, reps: int) -> dict[str, float]:
    import torch

    from buildtool.verify import kernels
    from buildtool.verify.policy import load_policy

    impl = kernels.mamba_scan_impl(mod)
    out: dict[str, float] = {}
    for bench in load_policy().scan_bench:
        fwd, fwd_bwd = kernels.scan_speed_calls(impl, "cuda", **{k: getattr(bench, k) for k in kernels.SCAN_SHAPE_FIELDS})
        with torch.no_grad():
            out[f"selective_scan fwd {bench.name}"] = _time(fwd, reps)
        out[f"selective_scan fwd+bwd {bench.name}"] = _time(fwd_bwd, reps)
    return out


def _conv_shapes(reps: int) -> dict[str, float]:
    import importlib

    import torch

    from buildtool.verify import kernels

    package = importlib.import_module("causal_conv1d")
    conv, update = kernels.causal_conv1d_impl(package), kernels.causal_conv1d_update_impl(package)
    out: dict[str, float] = {}
    for batch, dim, seqlen, width in ((4, 2048, 4096, 4), (8, 4096, 2048, 4)):
        x = torch.randn(batch, dim, seqlen, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(dim, width, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(dim, device="cuda", dtype=torch.bfloat16)
        name = f"B{batch} D{dim} L{seqlen} W{width} bf16 silu"
        with torch.no_grad():
            out[f"causal_conv1d fwd {name}"] = _time(lambda x=x, w=w, b=b: conv(x, w, b, True), reps)
        leaves = [t.requires_grad_() for t in (x, w, b)]

        def fwd_bwd(x: Any = x, w: Any = w, b: Any = b, leaves: list[Any] = leaves) -> object:
            y = conv(x, w, b, True)
            return torch.autograd.grad(y, leaves, torch.ones_like(y))
        out[f"causal_conv1d fwd+bwd {name}"] = _time(fwd_bwd, reps)
    x = torch.randn(256, 4096, device="cuda", dtype=torch.bfloat16)
    state = torch.randn(256, 4096, 4, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(4096, 4, device="cuda", dtype=torch.bfloat16)
    out["causal_conv1d_update B256 D4096 W4 bf16 silu"] = _time(lambda: update(x, state, w, None, True), reps)
    return out


def worker(dist: str, reps: int) -> dict[str, float]:
    import importlib

    import torch

    torch.manual_seed(0)
    if dist == "mamba_ssm":  # the extension itself: `import mamba_ssm` needs triton, einops, transformers
        return _scan_shapes(importlib.import_module(EXTENSIONS[dist]), reps)
    return _conv_shapes(reps)


# ------------------------------------------------------------------------------------------ driver side
def _dist_name(wheel: Path) -> str:
    return wheel.name.split("-", 1)[0].lower()


def _wheels(path: Path) -> dict[str, Path]:
    files = sorted(path.glob("*.whl")) if path.is_dir() else [path]
    return {_dist_name(w): w for w in files if _dist_name(w) in EXTENSIONS}


def _install(wheel: Path, target: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target",
                    str(target), str(wheel)], check=True)


def _run_side(dist: str, target: Path, reps: int) -> dict[str, float]:
    # the wheel first, then this repo (buildtool.verify), then whatever the caller had (carried packages)
    paths = [str(target), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    proc = subprocess.run([sys.executable, __file__, "--worker", dist, "--reps", str(reps)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"timing {dist} from {target} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def compare(ours: Path, upstream: Path, rounds: int, reps: int) -> dict[str, Any]:
    import torch

    mine, theirs = _wheels(ours), _wheels(upstream)
    common = sorted(set(mine) & set(theirs))
    if not common:
        raise SystemExit(f"no package with a wheel in both {ours} ({sorted(mine)}) and {upstream} ({sorted(theirs)})")
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                              "rounds": rounds, "reps": reps, "packages": {}}
    with tempfile.TemporaryDirectory(prefix="kernel-speed-") as tmp:
        for dist in common:
            sides = {"ours": mine[dist], "upstream": theirs[dist]}
            targets = {}
            for side, wheel in sides.items():
                targets[side] = Path(tmp) / dist / side
                _install(wheel, targets[side])
            samples: dict[str, dict[str, list[float]]] = {"ours": {}, "upstream": {}}
            for i in range(rounds):
                order = ("ours", "upstream") if i % 2 == 0 else ("upstream", "ours")
                for side in order:
                    for shape, ms in _run_side(dist, targets[side], reps).items():
                        samples[side].setdefault(shape, []).append(ms)
            rows = []
            for shape in samples["ours"]:
                o, u = statistics.median(samples["ours"][shape]), statistics.median(samples["upstream"][shape])
                rows.append({"shape": shape, "ours_ms": round(o, 4), "upstream_ms": round(u, 4),
                             "ratio": round(o / u, 3),
                             "ours_spread": round((max(samples["ours"][shape]) - min(samples["ours"][shape])) / o, 3),
                             "upstream_spread": round((max(samples["upstream"][shape]) - min(samples["upstream"][shape])) / u, 3)})
            report["packages"][dist] = {"ours": sides["ours"].name, "upstream": sides["upstream"].name, "rows": rows}
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"{report['gpu']}, torch {report['torch']}, {report['rounds']} alternating rounds x {report['reps']} "
             "timed calls; ms = median over rounds of each round's median", ""]
    for dist, pkg in report["packages"].items():
        lines += [f"**{dist}**: `{pkg['ours']}` vs upstream's `{pkg['upstream']}`", "",
                  "| kernel, shape | ours ms | upstream ms | ours / upstream | spread ours / upstream |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['shape']} | {r['ours_ms']} | {r['upstream_ms']} | **{r['ratio']:.3f}** | "
                  f"{r['ours_spread']:.1%} / {r['upstream_spread']:.1%} |" for r in pkg["rows"]]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", type=Path, help="buildtool's wheels (a directory or one wheel)")
    ap.add_argument("--upstream", type=Path, help="upstream-built wheels (a directory or one wheel)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--worker", choices=sorted(EXTENSIONS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.reps)))
        return 0
    if not (args.ours and args.upstream and args.out):
        ap.error("--ours, --upstream and --out are required")
    report = compare(args.ours, args.upstream, args.rounds, args.reps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
