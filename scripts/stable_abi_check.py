"""Checks of a LibTorch stable-ABI op library and its Python shim, runnable with any torch (no buildtool).

    python scripts/stable_abi_check.py symbols LIB.so            # what the library needs; non-zero if it
                                                                 # needs ATen/c10/torch C++, Python or pybind11
    python scripts/stable_abi_check.py probe --path DIR --shim causal_conv1d_cuda [--json FILE]

``probe`` runs in the interpreter of the torch under test, with DIR holding the shim module and the package
directory with ``_C_stable.abi3.so``: it imports the shim (which loads the library), checks the ops are
registered, calls every shim function on CPU tensors (a GPU-less machine: the dispatcher must refuse with a
clear "no CUDA kernel for CPU" error, never an undefined symbol or a crash), calls them on meta tensors (the
fake kernels: output shapes and the shim's rebuilt return lists), and traces a function calling them with
``torch.compile(fullgraph=True)``. It prints one JSON object. Used by tests/test_stable_abi_port.py and the
``stable-abi-matrix`` nox session.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def _load_rules() -> Any:
    """buildtool/verify/stable_symbols.py, the one owner of what a stable-ABI library may import, loaded by
    path: it is standard library only, so this runs next to any torch without buildtool installed (and
    without putting the checkout on sys.path)."""
    path = Path(__file__).resolve().parents[1] / "buildtool" / "verify" / "stable_symbols.py"
    spec = importlib.util.spec_from_file_location("_buildtool_stable_symbols", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


classify = _load_rules().classify


def undefined_symbols(lib: Path) -> list[str]:
    out = subprocess.run(["nm", "-D", "--undefined-only", str(lib)], capture_output=True, text=True, check=True)
    return sorted({line.split()[-1].split("@")[0] for line in out.stdout.splitlines() if line.strip()})


# ------------------------------------------------------------------------------------------------ probe
# Everything below runs inside the torch under test.

_OPS = {"causal_conv1d_cuda": ("causal_conv1d", ("causal_conv1d_fwd", "causal_conv1d_bwd", "causal_conv1d_update")),
        "selective_scan_cuda": ("selective_scan", ("fwd", "bwd"))}


def _example_calls(shim: str) -> list[tuple[str, Any]]:
    """(label, callable taking a device) for each function of the shim, with upstream's argument lists."""
    import importlib

    import torch

    mod = importlib.import_module(shim)
    if shim == "causal_conv1d_cuda":
        def fwd(dev: str) -> Any:
            x, w = torch.randn(2, 64, 16, device=dev), torch.randn(64, 4, device=dev)
            out = torch.empty_like(x)
            return mod.causal_conv1d_fwd(x, w, torch.randn(64, device=dev), None, None, out, None, True), out

        def bwd(dev: str) -> Any:
            x, w = torch.randn(2, 64, 16, device=dev), torch.randn(64, 4, device=dev)
            dx, dw = torch.empty_like(x), torch.zeros_like(w)
            return mod.causal_conv1d_bwd(x, w, None, torch.randn_like(x), None, None, None, dx, dw, None, None,
                                         False), dx

        def update(dev: str) -> Any:
            x, state, w = torch.randn(2, 64, 1, device=dev), torch.randn(2, 64, 3, device=dev), torch.randn(64, 4,
                                                                                                          device=dev)
            out = torch.empty_like(x)
            return mod.causal_conv1d_update(x, state, w, None, out, True, None, None), out

        return [("causal_conv1d_fwd", fwd), ("causal_conv1d_bwd", bwd), ("causal_conv1d_update", update)]
    if shim == "selective_scan_cuda":
        def args(dev: str) -> dict[str, Any]:
            b, d, n, l_ = 2, 8, 4, 32
            return dict(u=torch.randn(b, d, l_, device=dev), delta=torch.rand(b, d, l_, device=dev),
                        A=-torch.rand(d, n, device=dev), B=torch.randn(b, 1, n, l_, device=dev),
                        C=torch.randn(b, 1, n, l_, device=dev), D=torch.randn(d, device=dev),
                        z=torch.randn(b, d, l_, device=dev), delta_bias=torch.randn(d, device=dev))

        def fwd(dev: str) -> Any:
            a = args(dev)
            return mod.fwd(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], a["delta_bias"], True)

        def fwd_plain(dev: str) -> Any:
            a = args(dev)
            return mod.fwd(a["u"], a["delta"], a["A"], a["B"], a["C"], None, None, None, False)

        def bwd(dev: str) -> Any:  # mamba_inner_fn's call: dz given, recompute_out_z
            a = args(dev)
            out, x, _ = mod.fwd(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], a["delta_bias"], True)
            dz = torch.empty_like(a["z"])
            res = mod.bwd(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], a["delta_bias"],
                          torch.randn_like(out), x, out, dz, True, True)
            assert res[7] is dz, "the shim must hand back the caller's dz"
            return res

        def bwd_plain(dev: str) -> Any:  # SelectiveScanFn's call: no D/z/delta_bias, no recompute
            a = args(dev)
            out, x = mod.fwd(a["u"], a["delta"], a["A"], a["B"], a["C"], None, None, None, False)
            return mod.bwd(a["u"], a["delta"], a["A"], a["B"], a["C"], None, None, None, torch.randn_like(out), x,
                           None, None, False, False)

        return [("fwd", fwd), ("fwd(no D/z/delta_bias)", fwd_plain), ("bwd(z, dz, recompute_out_z)", bwd),
                ("bwd(no D/z/delta_bias)", bwd_plain)]
    raise SystemExit(f"unknown shim {shim!r}: causal_conv1d_cuda or selective_scan_cuda")


def _shape(v: Any) -> Any:
    import torch

    if isinstance(v, torch.Tensor):
        return [list(v.shape), str(v.dtype).replace("torch.", "")]
    if isinstance(v, (list, tuple)):
        return [_shape(x) for x in v]
    return None if v is None else repr(v)


def _upstream_causal_conv1d(problems: list[str]) -> str:
    """Upstream's unpatched Python (causal_conv1d_fn -> its custom op -> the shim -> torch.ops) on CPU tensors."""
    import torch

    try:
        from causal_conv1d import causal_conv1d_fn

        causal_conv1d_fn(torch.randn(2, 64, 16), torch.randn(64, 4), torch.randn(64), activation="silu")
        problems.append("upstream causal_conv1d_fn ran on CPU tensors")
        return "ran"
    except NotImplementedError as exc:
        msg = str(exc).splitlines()[0]
        if "causal_conv1d::causal_conv1d_fwd" not in msg:
            problems.append(f"upstream causal_conv1d_fn: unexpected error {msg[:200]}")
        return msg[:160]
    except Exception as exc:
        problems.append(f"upstream causal_conv1d_fn: {type(exc).__name__}: {exc}")
        return f"{type(exc).__name__}: {str(exc)[:160]}"


def probe(path: Path, shim: str) -> dict[str, Any]:
    sys.path.insert(0, str(path))
    import torch

    report: dict[str, Any] = {"torch": torch.__version__, "python": sys.version.split()[0], "shim": shim}
    try:
        calls = _example_calls(shim)  # imports the shim: loads the library
    except Exception as exc:
        report.update(ok=False, stage="import", error=f"{type(exc).__name__}: {exc}")
        return report
    ns, ops = _OPS[shim]
    report["ops"] = {op: torch._C._dispatch_has_kernel_for_dispatch_key(f"{ns}::{op}", "CUDA") for op in ops}
    problems: list[str] = [f"{ns}::{op} has no CUDA kernel" for op, ok in report["ops"].items() if not ok]
    report["cpu"], report["meta"] = {}, {}
    for label, call in calls:
        try:
            call("cpu")
            problems.append(f"{label}: ran on CPU tensors (expected the dispatcher to refuse)")
            report["cpu"][label] = "ran"
        except NotImplementedError as exc:
            msg = str(exc).splitlines()[0]
            report["cpu"][label] = msg[:160]
            if "'CPU' backend" not in msg:
                problems.append(f"{label}: unexpected CPU error {msg[:200]}")
        except Exception as exc:
            problems.append(f"{label}: {type(exc).__name__}: {exc}")
            report["cpu"][label] = f"{type(exc).__name__}: {str(exc)[:160]}"
        try:
            report["meta"][label] = _shape(call("meta"))
        except Exception as exc:
            problems.append(f"{label} on meta tensors: {type(exc).__name__}: {exc}")
    if shim == "causal_conv1d_cuda" and importlib.util.find_spec("causal_conv1d") is not None:
        report["upstream"] = _upstream_causal_conv1d(problems)
    report["compile"] = {}
    for label, call in calls:
        graphs: list[Any] = []

        def backend(gm: Any, example_inputs: Any, graphs: list[Any] = graphs) -> Any:
            graphs.append(gm)
            return gm.forward

        torch._dynamo.reset()
        compiled = torch.compile(lambda call=call: call("cpu"), backend=backend, fullgraph=True)
        try:
            compiled()
            problems.append(f"{label}: compiled call ran on CPU tensors")
        except NotImplementedError:
            pass  # traced, then refused at run time: no GPU here
        except Exception as exc:
            problems.append(f"{label}: torch.compile: {type(exc).__name__}: {str(exc)[:300]}")
        traced = len(graphs) == 1 and f"torch.ops.{ns}." in graphs[0].code
        report["compile"][label] = "traced (1 graph)" if traced else f"{len(graphs)} graphs"
        if not traced:
            problems.append(f"{label}: torch.compile(fullgraph=True) did not capture one graph with torch.ops.{ns}.*")
    report["problems"] = problems
    report["ok"] = not problems
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("symbols")
    s.add_argument("lib", type=Path)
    p = sub.add_parser("probe")
    p.add_argument("--path", type=Path, required=True)
    p.add_argument("--shim", required=True)
    p.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.cmd == "symbols":
        groups = classify(undefined_symbols(args.lib))
        print(json.dumps(groups, indent=1))
        return 1 if groups["forbidden"] else 0
    report = probe(args.path, args.shim)
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
