"""Which TUs first and how nice: the cost of each TU (measured seconds from earlier builds, else an estimate
from its size and includes), build.ninja ordered costliest first, and the opt-in nice levels (--priorities)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from buildtool.compile.plan import BuildContext, PlannedUnit

# ------------------------------------------------------------------------------------------ scheduling
#: ninja starts ready edges in manifest order, so build.ninja lists the costliest TUs first (longest
#: processing time first: the last TUs to start are the short ones, and no core idles behind a long tail).
#: Costs are the seconds each TU took in earlier builds (``unit-seconds.json`` next to the object cache) or,
#: for a TU never timed, an estimate from its size: a fixed start-up (nvcc's header-only TU: 3 s; g++ parsing
#: torch/extension.h: 10 s) plus seconds per KiB of the TU and the tree headers it includes, per GPU target
#: (mamba's bwd TU: 70 KiB of local headers, 38 s for sm_90 on the 2-core machine, docs/performance.md).
UNIT_COST_BASE = {"cuda": 3.0, "cxx": 10.0}


UNIT_COST_PER_KIB = {"cuda": 0.5, "cxx": 0.05}


UNIT_SECONDS_FILE = "unit-seconds.json"


_INCLUDE_RE = re.compile(rb'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)


def _local_include_bytes(source: Path, text: bytes, search: Sequence[Path]) -> int:
    """Bytes of the TU plus every header it includes with quotes, transitively, found in the tree."""
    seen: set[Path] = set()
    total = len(text)
    stack = [(source.parent, text)]
    while stack:
        here, body = stack.pop()
        for name in _INCLUDE_RE.findall(body):
            rel = name.decode(errors="replace")
            for d in (here, *search):
                path = (d / rel).resolve()
                if path in seen or not path.is_file():
                    continue
                seen.add(path)
                data = path.read_bytes()
                total += len(data)
                stack.append((path.parent, data))
                break
    return total


def unit_history_key(planned: PlannedUnit, targets: int) -> str:
    return f"{planned.spec.name}|{planned.unit.name}|{targets}"


def estimate_unit_seconds(language: str, include_bytes: int, targets: int) -> float:
    """Seconds a TU costs, estimated from its size (see UNIT_COST_BASE)."""
    per_target = 1 if language == "cxx" else max(1, targets)
    return UNIT_COST_BASE[language] + UNIT_COST_PER_KIB[language] * include_bytes / 1024 * per_target


def order_by_cost(units: Sequence[PlannedUnit], costs: Mapping[str, float]) -> list[PlannedUnit]:
    """The host C++ TUs first, then the CUDA TUs costliest first; ties keep the spec's order. A C++ TU never
    spreads over the cores (no -split-compile) and its cost is torch's headers, which the size estimate does
    not see (estimated 11 s, measured 24-30 s for causal-conv1d's binding on 2 cores): started last, it runs
    alone while the other cores idle. A CUDA TU that starts last is a short one or, with -split-compile, uses
    the cores the others freed."""
    return sorted(units, key=lambda u: (u.unit.language == "cuda", -costs[u.label]))


def unit_costs(ctx: BuildContext, units: Sequence[PlannedUnit], history: Mapping[str, float]) -> dict[str, float]:
    targets = len(ctx.facts.archs) + (1 if ctx.facts.ptx else 0)
    costs: dict[str, float] = {}
    for u in units:
        known = history.get(unit_history_key(u, targets))
        if known is not None:
            costs[u.label] = known
            continue
        search = [ctx.tree / d for d in u.unit.include_dirs if not Path(d).is_absolute()]
        search.append((ctx.tree / u.unit.source).parent)
        size = _local_include_bytes(ctx.tree / u.unit.source, u.source_path.read_bytes(), search)
        costs[u.label] = estimate_unit_seconds(u.unit.language, size, targets)
    return costs


#: CFS gives each nice step 1.25x less CPU weight. With ``priorities``, a TU estimated at 1/r of the costliest
#: runs at nice log(r)/log(1.25), so TUs sharing the cores progress in proportion to their work and finish
#: together instead of the costliest finishing last, alone. From the estimates only (not the measured
#: history), so the commands, and with them ninja's up-to-date check, stay the same from build to build.
NICE_STEP = 1.25


MAX_NICE = 19


def nice_levels(estimated: Mapping[str, float]) -> dict[str, int]:
    top = max(estimated.values(), default=0.0)
    if top <= 0:
        return dict.fromkeys(estimated, 0)
    return {label: min(MAX_NICE, round(math.log(top / max(cost, 1e-3)) / math.log(NICE_STEP)))
            for label, cost in estimated.items()}


def read_unit_history(cache_root: Path | None) -> dict[str, float]:
    if cache_root is None:
        return {}
    try:
        data = json.loads((cache_root / UNIT_SECONDS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}


def write_unit_history(cache_root: Path | None, measured: Mapping[str, float]) -> None:
    """Merge this build's per-TU seconds into the history (atomic replace; a lost race loses one build's times)."""
    if cache_root is None or not measured:
        return
    merged = {**read_unit_history(cache_root), **{k: round(v, 2) for k, v in measured.items()}}
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = cache_root / f"{UNIT_SECONDS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(merged, indent=0, sort_keys=True), encoding="utf-8")
    os.replace(tmp, cache_root / UNIT_SECONDS_FILE)


# ------------------------------------------------------------------------------------- fair share per TU
#: Linux's autogroup scheduler shares the CPU between sessions first, then between the threads of a session.
#: A compile started in its own session (`setsid -w`) therefore gets an equal share per TU, however many
#: -split-compile threads it runs: a TU in a serial phase (front end, host compile) keeps a whole core while
#: others split, instead of a sixteenth of one.
AUTOGROUP_SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")


def session_per_compile_available(switch: Path = AUTOGROUP_SWITCH) -> str | None:
    """The `setsid` to start each compile with, where the kernel's autogroup is on; else None."""
    import shutil

    try:
        enabled = switch.read_text(encoding="ascii").strip() == "1"
    except OSError:
        return None
    return shutil.which("setsid") if enabled else None
