"""Machine code of buildtool's wheel against upstream's: the same kernels, instruction for instruction?

    python benchmarks/sass_compare.py OURS.whl UPSTREAM.whl [--json FILE] [--pair OURS_SO=UPSTREAM_SO]

Each extension module (the same file name in both wheels) is disassembled with ``cuobjdump -sass`` (the
toolkit's, or triton's copy) and compared per arch and kernel, the address comments and fatbin headers
left out. `--pair` compares modules of different names (a stable-ABI wheel's `_C_stable.abi3.so` against
the full-ABI `selective_scan_cuda.cpython-312-x86_64-linux-gnu.so`). Identical SASS means identical kernel speed whatever a timing run says, so this backs the
kernel speed comparison (benchmarks/kernel_speed.py) where timings are noisy. No GPU needed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from buildtool.verify.static import find_cuobjdump, sass_by_kernel  # noqa: E402


def _modules(wheel: Path, into: Path) -> dict[str, Path]:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith((".so", ".pyd"))]
        for n in names:
            zf.extract(n, into)
    return {Path(n).name: into / n for n in names}


def text_by_kernel(cuobjdump: str, binary: Path, work: Path) -> dict[str, bytes]:
    """Each kernel's machine code as bytes, keyed like sass_by_kernel (``sm_90:kernel``): the ``.text.<kernel>``
    section of every cubin that ``cuobjdump -xelf all`` unpacks. Seconds instead of the disassembler's hours on a
    multi-arch wheel; byte-identical code is identical SASS (the converse needs sass_by_kernel)."""
    from elftools.elf.elffile import ELFFile

    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([cuobjdump, "-xelf", "all", str(binary.resolve())], cwd=work, check=True, capture_output=True)
    kernels: dict[str, bytes] = {}
    for cubin in sorted(work.glob("*.cubin")):
        arch = cubin.name.rsplit(".", 2)[-2]  # <module>.<n>.sm_90.cubin
        with cubin.open("rb") as f:
            for section in ELFFile(f).iter_sections():
                if section.name.startswith(".text."):
                    kernels[f"{arch}:{section.name[len('.text.'):]}"] = section.data()
        cubin.unlink()
    return kernels


def compare(ours: Path, upstream: Path, cuobjdump: str, pairs: dict[str, str] | None = None,
            archs: Sequence[str] = (), method: str = "sass") -> dict[str, Any]:
    """Kernel by kernel, per module; ``archs`` (e.g. ``sm_90``): one arch at a time, which bounds memory;
    ``method``: ``sass`` (disassembled, address comments dropped) or ``text`` (the cubins' code bytes)."""
    report: dict[str, Any] = {"ours": ours.name, "upstream": upstream.name, "modules": {}}
    with tempfile.TemporaryDirectory() as tmp:
        mine, theirs = _modules(ours, Path(tmp) / "ours"), _modules(upstream, Path(tmp) / "upstream")
        for our_name, their_name in (pairs or {}).items():
            if our_name in mine and their_name in theirs:  # compared under the upstream module's name
                mine[their_name] = mine.pop(our_name)
        for name in sorted(set(mine) | set(theirs)):
            if name not in mine or name not in theirs:
                report["modules"][name] = {"only_in": "ours" if name in mine else "upstream"}
                continue
            # how much identical code: SASS lines (sass_by_kernel's lists) or bytes (text_by_kernel's), by len()
            amount = "sass_lines" if method == "sass" else "code_bytes"
            m: dict[str, Any] = {"method": method, "kernels_ours": 0, "kernels_upstream": 0, "identical": 0,
                                 amount: 0, "differing": [], "only_ours": [], "only_upstream": []}
            for arch in (archs or [None]) if method == "sass" else [None]:
                if method == "text":
                    a = text_by_kernel(cuobjdump, mine[name], Path(tmp) / "ours-cubins")
                    b = text_by_kernel(cuobjdump, theirs[name], Path(tmp) / "upstream-cubins")
                else:
                    a = sass_by_kernel(cuobjdump, mine[name], arch)
                    b = sass_by_kernel(cuobjdump, theirs[name], arch)
                same = [k for k in a if k in b and a[k] == b[k]]
                m["kernels_ours"] += len(a)
                m["kernels_upstream"] += len(b)
                m["identical"] += len(same)
                m[amount] += sum(len(a[k]) for k in same)
                m["differing"] += sorted(k for k in a if k in b and a[k] != b[k])
                m["only_ours"] += sorted(set(a) - set(b))
                m["only_upstream"] += sorted(set(b) - set(a))
                for each in sorted({k.split(":", 1)[0] for k in [*a, *b]}) if (arch or method == "text") else []:
                    m.setdefault("per_arch", {})[each] = {
                        "kernels_ours": sum(k.startswith(each + ":") for k in a),
                        "kernels_upstream": sum(k.startswith(each + ":") for k in b),
                        "identical": sum(k.startswith(each + ":") for k in same)}
            report["modules"][name] = m
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ours", type=Path)
    ap.add_argument("upstream", type=Path)
    ap.add_argument("--json", type=Path, metavar="FILE")
    ap.add_argument("--pair", action="append", default=[], metavar="OURS_SO=UPSTREAM_SO",
                    help="compare two extension modules of different file names (repeatable)")
    ap.add_argument("--arch", action="append", default=[], metavar="sm_XY",
                    help="compare these archs, one at a time (repeatable; default: all at once)")
    ap.add_argument("--method", choices=("sass", "text"), default="sass",
                    help="sass: disassembled kernels; text: the cubins' code bytes per kernel (fast)")
    args = ap.parse_args()
    pairs = dict(p.split("=", 1) for p in args.pair)
    tool = find_cuobjdump()
    if tool is None:
        print("no cuobjdump: set BUILDTOOL_CUOBJDUMP, put the CUDA toolkit's bin/ on PATH or install triton",
              file=sys.stderr)
        return 2
    report = compare(args.ours, args.upstream, tool, pairs, args.arch, args.method)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    same = True
    for name, m in report["modules"].items():
        if "only_in" in m:
            print(f"{name}: only in {m['only_in']}'s wheel")
            same = False
            continue
        ok = not (m["differing"] or m["only_ours"] or m["only_upstream"])
        same = same and ok
        amount = f"{m['sass_lines']} SASS lines" if "sass_lines" in m else f"{m['code_bytes']} bytes of code"
        print(f"{name}: {m['identical']} of {m['kernels_ours']} kernels identical ({amount}); "
              f"{len(m['differing'])} differ, {len(m['only_ours'])} only ours, {len(m['only_upstream'])} only upstream's")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
