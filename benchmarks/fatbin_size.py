"""Device-code size per target and fatbin compression mode, measured with the real nvcc on chosen TUs, and
the SASS each target gets (does sm_80 code equal sm_87 code?). Used by `nox -s bench` for the nine-arch
wheel estimate when a full nine-arch build is too expensive for the machine.

    python benchmarks/fatbin_size.py --tree PREPARED_TREE --spec selective_scan_cuda-2.3 \
        --unit csrc/selective_scan/selective_scan_fwd_bf16.cu --unit csrc/selective_scan/selective_scan_bwd_bf16_real.cu \
        --sass 7.5,8.0,8.7,9.0,10.0,10.3,11.0,12.0,12.1 --ptx 12.0 --buildenv BUILDENV_JSON --out out.json

Per TU and target: `nvcc -cubin` (SASS) or `nvcc -ptx` with the kernel spec's own flags for the cell, then
`fatbinary` (the tool nvcc runs for -Xfatbin) packs each image alone with `-compress-all` in the default mode
and in `-compress-mode=size`. Bytes are the fatbin files' sizes. `--extrapolate WHEEL_JSON` scales a measured
nine-arch wheel's per-target device code (docs/bench/local-2core-mamba-9arch-size.json) by the measured
ratios, and names what it assumed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CUOBJDUMP = "cuobjdump"  # set from --cuda-home in main
MODES = {"default": ["--compress-all"], "size": ["--compress-all", "--compress-mode=size"]}


def find_cuobjdump(cuda_home: str) -> str:
    """The toolkit's cuobjdump, else buildtool's search (PATH, CUDA_HOME, triton's copy in this Python)."""
    from buildtool.verify.static import find_cuobjdump as search

    own = Path(cuda_home) / "bin" / "cuobjdump"
    return str(own) if own.is_file() else (search() or "cuobjdump")


def _xy(arch: str) -> str:
    return arch.replace(".", "")


def nvcc_argv(tree: Path, spec_name: str, unit: str, buildenv: dict[str, Any], cuda_home: str) -> list[str]:
    """The spec's nvcc flags for a CUDA 13 linux cell, without -gencode and --threads (set per target)."""
    from buildtool.compile.units import resolve
    from buildtool.spec import kernelspec

    spec = next(s for s in kernelspec.load_kernel_specs(tree / ".buildtool" / "kernels", [spec_name]))
    facts = kernelspec.TargetFacts(platform="linux-x86_64", torch=buildenv["torch_version"].split("+")[0],
                                   cuda="13.0", cxx_std="20", cxx11_abi=bool(buildenv["cxx11_abi"]),
                                   archs=("9.0",), ptx=False, compiler="gcc", cuda_home=cuda_home)
    resolved = resolve(spec.model_copy(update={"split": ()}), facts)
    cu = next(u for u in resolved.units if u.source == unit)
    flags, skip = [], False
    for f in cu.flags:
        if skip:
            skip = False
            continue
        if f in ("-gencode", "--threads"):
            skip = True
            continue
        if f.startswith("-Xfatbin"):
            continue
        flags.append(f)
    includes = [str(tree / d) for d in cu.include_dirs] + [str((tree / unit).parent), f"{cuda_home}/include"]
    includes += [d for d in buildenv["include_dirs"] if not re.search(r"/include/python3\.\d+$", d)]
    includes += buildenv.get("cuda_library_include_dirs", [])
    return [f"{cuda_home}/bin/nvcc", *flags, *(f"-I{d}" for d in includes), str(tree / unit)]


def sass_by_kernel(cubin: Path) -> dict[str, str]:
    """Kernel name -> its instructions (cuobjdump -sass without addresses, encodings and the arch header)."""
    out = subprocess.run([CUOBJDUMP, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    kernels: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = m.group(1)
            kernels[current] = []
            continue
        if current is None or ".headerflags" in line:
            continue
        code = re.sub(r"/\*[^*]*\*/", "", line).strip().rstrip(";").strip()
        if code:
            kernels[current].append(code)
    return {k: "\n".join(v) for k, v in kernels.items()}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    buildenv = json.loads(Path(args.buildenv).read_text())
    cuda_home = args.cuda_home
    work = args.work or Path(tempfile.mkdtemp(prefix="fatbin-size-"))
    work.mkdir(parents=True, exist_ok=True)
    sass_targets = [a for a in args.sass.split(",") if a]
    ptx_targets = [a for a in (args.ptx or "").split(",") if a]
    result: dict[str, Any] = {"units": {}, "targets": {}, "nvcc": subprocess.run(
        [f"{cuda_home}/bin/nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]}
    jobs = []
    for unit in args.unit:
        base = nvcc_argv(args.tree, args.spec, unit, buildenv, cuda_home)
        for kind, targets in (("sm", sass_targets), ("compute", ptx_targets)):
            jobs += [(unit, base, kind, arch) for arch in targets]

    def one(job: tuple[str, list[str], str, str]) -> tuple[str, str, dict[str, Any]]:
        unit, base, kind, arch = job
        name = f"{kind}_{_xy(arch)}"
        image = work / f"{Path(unit).stem}.{name}.{'cubin' if kind == 'sm' else 'ptx'}"
        argv = [*base, "-gencode", f"arch=compute_{_xy(arch)},code={name}", "-cubin" if kind == "sm" else "-ptx"]
        t0 = time.perf_counter()
        if not image.is_file():  # --work keeps images: an interrupted run goes on where it stopped
            proc = subprocess.run([*argv, "-o", f"{image}.tmp"], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"nvcc failed for {unit} {name}:\n{proc.stderr[-3000:]}")
            os.replace(f"{image}.tmp", image)
        seconds = time.perf_counter() - t0
        sizes: dict[str, Any] = {"image": image.stat().st_size}
        for mode, flags in MODES.items():
            fatbin = image.with_suffix(f".{mode}.fatbin")
            img = f"--image3=kind={'elf' if kind == 'sm' else 'ptx'},sm={_xy(arch)},file={image}"
            subprocess.run([f"{cuda_home}/bin/fatbinary", "--64", f"--create={fatbin}", img, *flags], check=True)
            sizes[mode] = fatbin.stat().st_size
            if kind == "sm":  # the fatbin holds the same machine code, whatever the compression
                sizes[f"{mode}_same_sass"] = sass_by_kernel(fatbin) == sass_by_kernel(image)
        print(f"{unit} {name}: image {sizes['image']} B, default {sizes['default']} B, size {sizes['size']} B "
              f"({seconds:.0f} s)", flush=True)
        return unit, name, {**sizes, "compile_s": round(seconds, 1)}

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for unit, name, sizes in pool.map(one, jobs):
            result["units"].setdefault(unit, {})[name] = sizes
    # Sums over the measured TUs, per target.
    for unit_sizes in result["units"].values():
        for name, s in unit_sizes.items():
            t = result["targets"].setdefault(name, {"image": 0, "default": 0, "size": 0})
            for k in ("image", "default", "size"):
                t[k] += s[k]
            for k in ("default_same_sass", "size_same_sass"):
                if k in s:
                    t[k] = t.get(k, True) and s[k]
    for t in result["targets"].values():
        t["size_over_default"] = round(t["size"] / t["default"], 4)
    # Same machine code? Each SASS target against the native-lower one of its major (sm_87 vs sm_80 ...).
    pairs = [(lo, hi) for lo in sass_targets for hi in sass_targets
             if lo.split(".")[0] == hi.split(".")[0] and float(lo) < float(hi)]
    result["same_sass"] = {}
    for lo, hi in pairs:
        same = total = lo_n = hi_n = 0
        for unit in args.unit:
            stem = Path(unit).stem
            if not (work / f"{stem}.sm_{_xy(lo)}.cubin").is_file():
                continue
            a = sass_by_kernel(work / f"{stem}.sm_{_xy(lo)}.cubin")
            b = sass_by_kernel(work / f"{stem}.sm_{_xy(hi)}.cubin")
            total += len(a)
            same += sum(1 for k in a if b.get(k) == a[k])
            lo_n += sum(v.count("\n") + 1 for v in a.values())
            hi_n += sum(v.count("\n") + 1 for k, v in b.items() if k in a)
        result["same_sass"][f"sm_{_xy(lo)} vs sm_{_xy(hi)}"] = {"kernels": total, "identical": same,
                                                                 "instructions": [lo_n, hi_n]}
    result["dryrun_fatbinary"] = _dryrun_fatbinary(cuda_home)
    return result


def _dryrun_fatbinary(cuda_home: str) -> str:
    """The fatbinary line nvcc runs for `-Xfatbin=-compress-all -Xfatbin=-compress-mode=size`: the flags reach
    fatbinary unchanged, so packing images with fatbinary measures what nvcc would produce."""
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.cu"
        src.write_text("__global__ void k() {}\n")
        out = subprocess.run([f"{cuda_home}/bin/nvcc", "--dryrun", "-c", str(src), "-gencode", "arch=compute_90,code=sm_90",
                              "-Xfatbin=-compress-all", "-Xfatbin=-compress-mode=size", "-o", str(Path(d) / "k.o")],
                             capture_output=True, text=True).stderr
    return next((line.split("#$ ", 1)[-1] for line in out.splitlines() if "fatbinary" in line), "")


def extrapolate(measured: dict[str, Any], wheel: dict[str, Any], sass: list[str], ptx: list[str]) -> dict[str, Any]:
    """A wheel with ``sass`` + ``ptx`` targets: its per-target device code (measured, default mode) scaled by the
    measured size/default ratio of each target; a SASS target not measured takes the mean of the measured
    ones (listed under ``assumed``); PTX is scaled from sm_<same arch> by the measured PTX/SASS ratio."""
    dev = wheel["device_code_compressed"]
    host = wheel["so_bytes"] - sum(dev.values())
    zip_ratio = wheel["wheel_bytes"] / wheel["so_bytes"]
    t = measured["targets"]
    sass_ratios = [v["size"] / v["default"] for k, v in t.items() if k.startswith("sm_")]
    mean = sum(sass_ratios) / len(sass_ratios)
    out: dict[str, Any] = {"host_bytes": host, "zip_ratio": round(zip_ratio, 4), "targets": {}, "assumed": []}
    for mode in ("default", "size"):
        total = host
        for arch in sass:
            name = f"sm_{_xy(arch)}"
            if name in t:
                ratio = t[name][mode] / t[name]["default"]
            else:
                ratio = 1.0 if mode == "default" else mean
                if mode == "size":
                    out["assumed"].append(f"{name}: size/default {mean:.4f}, the mean of the measured targets")
            b = dev[name] * ratio
            out["targets"].setdefault(name, {})[mode] = round(b)
            total += b
        for arch in ptx:
            name, ref = f"compute_{_xy(arch)}", f"sm_{_xy(arch)}"
            if name not in t or ref not in t:
                out["assumed"].append(f"{name}: not measured, left out")
                continue
            b = dev[ref] * (t[name][mode] / t[ref]["default"])
            out["targets"].setdefault(name, {})[mode] = round(b)
            total += b
        out[f"so_bytes_{mode}"] = round(total)
        out[f"wheel_bytes_{mode}"] = round(total * zip_ratio)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, required=True, help="a tree from `buildtool prepare`")
    ap.add_argument("--spec", required=True)
    ap.add_argument("--unit", action="append", required=True)
    ap.add_argument("--sass", default="7.5,8.0,8.7,9.0,10.0,10.3,11.0,12.0,12.1")
    ap.add_argument("--ptx", default="12.0")
    ap.add_argument("--buildenv", required=True, help="buildtool-buildenv.json of the cell's torch build env")
    ap.add_argument("--cuda-home", default=os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    ap.add_argument("--extrapolate", type=Path, metavar="WHEEL_JSON")
    ap.add_argument("--policy", action="append", default=[], metavar="LABEL=SASS[+PTX]",
                    help="a target set to extrapolate, e.g. 'coverage=7.5,8.0,9.0,10.0,11.0,12.0+12.0'")
    ap.add_argument("--measured", type=Path, help="reuse an earlier --out instead of compiling again")
    ap.add_argument("--jobs", type=int, default=1, help="nvcc processes at once")
    ap.add_argument("--work", type=Path, help="keep the compiled images here (reused when present)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    global CUOBJDUMP
    CUOBJDUMP = find_cuobjdump(args.cuda_home)
    measured = json.loads(args.measured.read_text())["measured"] if args.measured else measure(args)
    result: dict[str, Any] = {"measured": measured, "tree_units": args.unit, "spec": args.spec,
                              "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
                              "machine": {"cores": len(os.sched_getaffinity(0)), "load": os.getloadavg()[0]}}
    if args.extrapolate:
        wheel = json.loads(args.extrapolate.read_text())
        result["wheel_basis"] = str(args.extrapolate.relative_to(REPO) if args.extrapolate.is_relative_to(REPO)
                                    else args.extrapolate)
        result["estimates"] = {}
        for item in args.policy:
            label, _, targets = item.partition("=")
            sass, _, ptx = targets.partition("+")
            result["estimates"][label] = extrapolate(measured, wheel, sass.split(","), [p for p in ptx.split(",") if p])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result.get("estimates", {}), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
