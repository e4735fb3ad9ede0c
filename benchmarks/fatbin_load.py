"""On a GPU: what loading device code costs per fatbin compression mode, and what a GPU without native SASS
pays when it gets PTX instead (the driver's JIT): load time, and the JIT's machine code against nvcc's.

    python benchmarks/fatbin_load.py --work DIR_OF_fatbin_size.py --stem selective_scan_bwd_bf16_real \
        --sm 90 --out load.json

DIR holds what `fatbin_size.py --work DIR` left: <stem>.sm_90.cubin, <stem>.sm_90.{default,size}.fatbin and
<stem>.compute_90.ptx / .{default,size}.fatbin. Each measurement runs in a fresh process (the driver's module
loading mode is read at cuInit) through the CUDA driver API (ctypes, libcuda.so.1):
- eager: CUDA_MODULE_LOADING=EAGER, cuModuleLoadData of the fatbin: unpack + load every kernel;
- lazy: the default loading, cuModuleLoadData then cuModuleGetFunction of every kernel (what the first
  launch of each kernel pays);
- PTX with CUDA_CACHE_DISABLE=1: the JIT every time (as on a GPU's first run, before the driver caches it).
The JIT's own cubin (cuLinkCreate/AddData/Complete) is compared kernel by kernel with nvcc's sm_XX cubin.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _cuda() -> Any:
    lib = ctypes.CDLL("libcuda.so.1")

    def call(name: str, *args: Any) -> None:
        rc = getattr(lib, name)(*args)
        if rc != 0:
            msg = ctypes.c_char_p()
            lib.cuGetErrorString(rc, ctypes.byref(msg))
            raise RuntimeError(f"{name}: CUresult {rc} {msg.value.decode() if msg.value else ''}")

    call("cuInit", 0)
    dev = ctypes.c_int()
    call("cuDeviceGet", ctypes.byref(dev), 0)
    ctx = ctypes.c_void_p()
    call("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
    call("cuCtxSetCurrent", ctx)
    return lib, call


def child(mode: str, path: Path, reps: int, names_file: Path) -> dict[str, Any]:
    """Runs inside the measuring process: load ``path`` ``reps`` times, seconds per load (and per function)."""
    names = json.loads(names_file.read_text())
    _, call = _cuda()
    data = path.read_bytes()
    buf = ctypes.create_string_buffer(data, len(data))
    times = []
    for _ in range(reps):
        mod = ctypes.c_void_p()
        t0 = time.perf_counter()
        call("cuModuleLoadData", ctypes.byref(mod), buf)
        if mode == "lazy":
            fn = ctypes.c_void_p()
            for name in names:
                call("cuModuleGetFunction", ctypes.byref(fn), mod, name.encode())
        call("cuCtxSynchronize")
        times.append(time.perf_counter() - t0)
        call("cuModuleUnload", mod)
    version = ctypes.c_int()
    call("cuDriverGetVersion", ctypes.byref(version))
    return {"seconds": times, "driver": version.value}


def jit_cubin(ptx: Path, out: Path) -> float:
    """The driver's own cubin for this GPU from PTX; seconds the JIT took."""
    _, call = _cuda()
    state = ctypes.c_void_p()
    call("cuLinkCreate_v2", 0, None, None, ctypes.byref(state))
    data = ptx.read_bytes() + b"\0"
    t0 = time.perf_counter()
    call("cuLinkAddData_v2", state, 1, ctypes.c_char_p(data), ctypes.c_size_t(len(data)), b"jit.ptx", 0, None, None)  # 1: PTX
    cubin, size = ctypes.c_void_p(), ctypes.c_size_t()
    call("cuLinkComplete", state, ctypes.byref(cubin), ctypes.byref(size))
    seconds = time.perf_counter() - t0
    out.write_bytes(ctypes.string_at(cubin, size.value))
    call("cuLinkDestroy", state)
    return seconds


def measure(label: str, path: Path, mode: str, reps: int, names: list[str], extra_env: dict[str, str]) -> dict[str, Any]:
    env = dict(os.environ, **extra_env)
    env["CUDA_MODULE_LOADING"] = "EAGER" if mode == "eager" else "LAZY"
    names_file = path.with_suffix(".names.json")
    names_file.write_text(json.dumps(names))
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(path), str(reps), str(names_file)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"label": label, "error": proc.stderr[-1500:]}
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    seconds = data["seconds"]
    return {"label": label, "mode": mode, "bytes": path.stat().st_size, "first_s": round(seconds[0], 4),
            "median_s": round(statistics.median(seconds), 4), "reps": reps, "driver": data["driver"], **extra_env}


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        mode, path, reps, names = sys.argv[2:6]
        print(json.dumps(child(mode, Path(path), int(reps), Path(names))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--stem", action="append", required=True)
    ap.add_argument("--sm", default="90")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cuda-home", default=os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import fatbin_size

    fatbin_size.CUOBJDUMP = fatbin_size.find_cuobjdump(args.cuda_home)
    result: dict[str, Any] = {"loads": [], "jit_sass": {}}
    for stem in args.stem:
        cubin = args.work / f"{stem}.sm_{args.sm}.cubin"
        offline = fatbin_size.sass_by_kernel(cubin)
        kernel_names = sorted(offline)
        for mode in ("eager", "lazy"):
            for comp in ("default", "size"):
                result["loads"].append({"tu": stem, **measure(f"sm_{args.sm} {comp}", args.work / f"{stem}.sm_{args.sm}.{comp}.fatbin",
                                                              mode, args.reps, kernel_names, {})})
        ptx = args.work / f"{stem}.compute_{args.sm}.ptx"
        if ptx.is_file():
            result["loads"].append({"tu": stem, **measure(f"compute_{args.sm} PTX (JIT, no cache)",
                                                          args.work / f"{stem}.compute_{args.sm}.size.fatbin", "eager",
                                                          max(2, args.reps // 2), kernel_names, {"CUDA_CACHE_DISABLE": "1"})})
            jitted = args.work / f"{stem}.jit_sm_{args.sm}.cubin"
            seconds = jit_cubin(ptx, jitted)
            jit = fatbin_size.sass_by_kernel(jitted)
            same = sum(1 for k, v in offline.items() if jit.get(k) == v)
            result["jit_sass"][stem] = {"kernels": len(offline), "identical_to_nvcc": same, "jit_s": round(seconds, 2)}
        print(json.dumps(result["loads"][-5:], indent=1), flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["jit_sass"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
