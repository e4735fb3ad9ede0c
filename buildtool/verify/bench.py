"""Kernel timing: CUDA events around each call, warm-up first, the median of the repetitions."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_ms(fn: Callable[[], object], *, warmup: int = 3, reps: int = 20) -> float:
    """Median milliseconds per call. CUDA: events on the current stream; CPU (tests): perf_counter."""
    for _ in range(warmup):
        fn()
    samples = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(samples))
