"""How wide to compile on this machine: parallel jobs sized to usable cores and free memory, and nvcc
-split-compile threads. Scheduling knobs only: none of them changes the kernels' machine code."""

from __future__ import annotations

import heapq
import os
from collections.abc import Sequence

from packaging.version import InvalidVersion, Version

from buildtool.spec.kernelspec import load_common_flags

GIB = 1024**3


#: nvcc's peak memory per gencode target on the heavy Mamba TUs (measured 2.5-4 GB); sizes -j.
NVCC_BYTES_PER_THREAD = 4 * GIB


#: nvcc -split-compile optimises and assembles partitions of one TU in parallel (the nvcc versions that honour it:
#: compile_flags.yaml `split_compile_min_cuda`). For targets older than sm_100 each kernel's SASS is identical
#: to the unsplit compile (tests/test_compile.py, real nvcc), so, like -j, it is a scheduling knob: it stays out
#: of cache keys and provenance. It changes Blackwell's code, so a build with such a target never splits
#: (split_compile_keeps_code). Measured on mamba's selective_scan_bwd_fp32_real.cu,
#: sm_90: 0.66 GB peak unsplit, 0.90 GB with 8 partitions, hence the factor that sizes -j.
SPLIT_COMPILE_MEMORY_FACTOR = 1.4


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _usable_cores() -> int:
    """CPUs this process may run on (a container's affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_jobs(nvcc_threads: int, cores: int | None = None, memory: int | None = None, *,
                 split_compile: int = 1) -> int:
    """Parallel compile jobs: one per core, fewer when free memory cannot hold that many nvcc processes."""
    cores = cores or _usable_cores()
    if memory is None:
        return cores
    per_job = NVCC_BYTES_PER_THREAD * max(1, nvcc_threads) * (SPLIT_COMPILE_MEMORY_FACTOR if split_compile > 1 else 1)
    return max(1, min(cores, int(memory // per_job)))


def default_split_compile(cuda_version: str, cores: int | None = None) -> int:
    """Threads for nvcc -split-compile: every usable core (1 = off, and off for an nvcc older than
    compile_flags.yaml's `split_compile_min_cuda`, which does not honour it).

    A job count alone leaves cores idle once fewer TUs than cores remain, which on a 16-core host is most of a
    Mamba build: its wall time is the slowest TU. With every nvcc allowed all cores, the tail TUs spread over
    the cores the finished ones freed; while many TUs run, the kernel's scheduler shares the cores among them.
    """
    return max(1, cores or _usable_cores()) if honours_split_compile(cuda_version) else 1


def lpt_makespan(costs: Sequence[float], slots: int) -> float:
    """When the last of ``costs`` ends if each starts, costliest first, on the first of ``slots`` free workers
    (what ninja does with build.ninja's costliest-first order and ``-j slots``)."""
    ends = [0.0] * max(1, slots)
    for cost in sorted(costs, reverse=True):
        heapq.heapreplace(ends, ends[0] + cost)
    return max(ends)


def split_compile_pays(costs: Sequence[float], jobs: int, cores: int | None = None,
                       overhead: float | None = None) -> bool:
    """Whether nvcc -split-compile should be on for TUs of these estimated ``costs``: only where, compiled
    unsplit on ``jobs`` parallel jobs, they would end later than their work spread over every core plus
    -split-compile's extra CPU (compile_flags.yaml `split_compile_cpu_overhead`). One TU, or fewer TUs than
    cores, or one TU far costlier than the rest: on. Many even TUs per core: off, the cores are busy anyway."""
    if not costs:
        return False
    cores = cores or _usable_cores()
    if overhead is None:
        overhead = load_common_flags().split_compile_cpu_overhead
    spread = sum(costs) / max(1, cores)
    return lpt_makespan(costs, jobs) > (1 + overhead) * spread


def split_compile_keeps_code(archs: Sequence[str]) -> bool:
    """Whether -split-compile leaves every target's machine code unchanged: only while all archs (PTX, if
    embedded, is of one of them) are older than compile_flags.yaml's `split_compile_below_arch` (Blackwell's
    code changes with it)."""
    below = Version(load_common_flags().split_compile_below_arch)
    return all(Version(a.rstrip("af")) < below for a in archs)


def honours_split_compile(cuda_version: str) -> bool:
    """Whether this nvcc splits (compile_flags.yaml `split_compile_min_cuda`); an older one only warns per TU."""
    return nvcc_at_least(cuda_version, load_common_flags().split_compile_min_cuda)


def nvcc_at_least(cuda_version: str, floor: str) -> bool:
    """Whether a toolkit's version reaches a feature's floor from compile_flags.yaml (False if unreadable)."""
    try:
        return Version(cuda_version) >= Version(floor)
    except InvalidVersion:
        return False
