"""Static checks of a stable-ABI wheel (`cp310-abi3`, label `cu<major>stable`): what makes one file serve
every torch >= the floor and every CPython >= 3.10.

- torch only through the C shim, no pybind11, no CPython API, no NEEDED libtorch_python / libpython
  (the rules: ``buildtool.verify.stable_symbols``);
- ``abi3audit`` (PyPI) finds no limited-API violation, where it is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from buildtool.spec.abitrack import is_stable_library
from buildtool.verify.models import CheckResult, failed, passed, skipped
from buildtool.verify.stable_symbols import by_kind, forbidden_needed
from buildtool.verify.static import OpenedWheel


def is_stable_wheel(wc: OpenedWheel) -> bool:
    return bool(wc.name.label and wc.name.label.stable) or wc.name.abi_tag == "abi3"


def stable_libraries(wc: OpenedWheel) -> list[str]:
    return [n for n in wc.elves if is_stable_library(n.rsplit("/", 1)[-1])]


def check_stable_symbols(wc: OpenedWheel) -> CheckResult:
    check = "stable ABI symbols"
    if not is_stable_wheel(wc):
        return skipped(wc.label, check, "full-ABI wheel")
    libs = stable_libraries(wc)
    if not libs:
        return failed(wc.label, check, "a stable-ABI wheel without a _C_stable library")
    problems: list[str] = []
    shim_symbols = 0
    for name in libs:
        info = wc.elves[name]
        base = name.rsplit("/", 1)[-1]
        if not base.endswith(".abi3.so"):
            problems.append(f"{base}: a stable-ABI library is named *.abi3.so")
        bad_needed = forbidden_needed(info.needed)
        if bad_needed:
            problems.append(f"{base} needs {', '.join(bad_needed)}")
        kinds = by_kind(info.undefined)
        cxx = kinds["torch_cxx"]
        if cxx:
            problems.append(f"{base} uses {len(cxx)} torch C++ symbol(s), e.g. {cxx[0]} (only the C shim is stable)")
        if kinds["pybind11"]:
            problems.append(f"{base} uses pybind11 ({kinds['pybind11'][0]}): ops are registered with "
                            "STABLE_TORCH_LIBRARY, not bound")
        if kinds["python"]:
            problems.append(f"{base} uses the CPython API ({', '.join(kinds['python'][:3])}): it is loaded by torch, "
                            "not imported")
        shim_symbols += len(kinds["c_shim"])
    if problems:
        return failed(wc.label, check, "; ".join(problems))
    return passed(wc.label, check, f"{len(libs)} librar{'y' if len(libs) == 1 else 'ies'}: torch reached only through "
                  f"{shim_symbols} C-shim symbols; no libtorch_python, no libpython", c_shim_symbols=shim_symbols)


def find_abi3audit() -> str | None:
    here = Path(sys.executable).parent / "abi3audit"
    return str(here) if here.is_file() else shutil.which("abi3audit")


def check_abi3audit(wc: OpenedWheel, tool: str | None) -> CheckResult:
    check = "abi3audit"
    if not is_stable_wheel(wc):
        return skipped(wc.label, check, "full-ABI wheel")
    if tool is None:
        return skipped(wc.label, check, "abi3audit is not installed (pip install abi3audit)")
    proc = subprocess.run([tool, "--report", str(wc.path)], capture_output=True, text=True, timeout=300, check=False)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return failed(wc.label, check, f"abi3audit exited {proc.returncode} without a report: {tail[:300]}")
    # {"specs": {path: {"kind": "wheel", "wheel": [{"name": so, "result": {"is_abi3", "non_abi3_symbols",
    #  "is_abi3_baseline_compatible", ...}}]}}} (abi3audit 0.0.2x)
    entries = [e for spec in report.get("specs", {}).values() if isinstance(spec, dict)
               for e in spec.get("wheel") or [] if isinstance(e, dict)]
    results = [e.get("result") or {} for e in entries]
    scanned = len(results)
    violations = sum(len(r.get("non_abi3_symbols") or []) for r in results)
    mismatches = sum(1 for r in results if r.get("is_abi3_baseline_compatible") is False)
    not_abi3 = [e.get("name", "?") for e, r in zip(entries, results, strict=True) if r.get("is_abi3") is False]
    if scanned == 0:
        return failed(wc.label, check, "abi3audit scanned no extension (is the library named *.abi3.so?)")
    if proc.returncode != 0 or violations or mismatches or not_abi3:
        return failed(wc.label, check, f"abi3audit: {violations} limited-API violation(s), {mismatches} version "
                      f"mismatch(es) (exit {proc.returncode})", violations=violations, mismatches=mismatches)
    return passed(wc.label, check, f"abi3audit: {scanned} extension(s) scanned, no violation", scanned=scanned)

