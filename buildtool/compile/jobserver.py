"""One GNU make jobserver per compile: a token pool that caps every compiler thread of the build at the
usable cores, shared by ninja (its jobs) and nvcc (its -split-compile and --threads workers).

Why: each nvcc may split its device compile over every core (sizing.default_split_compile), so ten Mamba TUs
put up to 160 threads on a 16-core host. The kernel's fair share then gives a TU in a serial phase (front end,
host compile, fatbinary) a sixth of a core while others run partitions, and the build ends with the serial
tails of several TUs on a few busy cores. With the pool, a thread runs only with a token: serial phases
always run at full speed and partitions fill the cores that are left.

Protocol: GNU make 4.4's named-pipe form (``MAKEFLAGS=... --jobserver-auth=fifo:PATH``), N-1 one-byte tokens
in the pipe, each process owning one implicit slot. Clients: ninja >= 1.13 (it ignores the pool when given
``-j``, so the build runs it without; memory still caps the compiles through a ninja pool) and nvcc >= 13.0
``--jobserver`` (cicc and ptxas take a token per worker beyond their own). POSIX only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from buildtool.compile.sizing import nvcc_at_least
from buildtool.spec.kernelspec import load_common_flags

#: ninja joins a jobserver from this version on (ninja 1.13.0 release notes: "automatically joins a GNU
#: Make jobserver as a client"; fifo style on POSIX).
NINJA_JOBSERVER_MIN = (1, 13)

TOKEN = b"+"


@dataclass(frozen=True)
class JobserverPlan:
    """Whether a compile runs under its own jobserver, and why (the cell log says it)."""

    enabled: bool
    reason: str
    slots: int = 0


def plan_jobserver(*, wanted: bool, windows: bool, cuda_version: str, ninja_version: tuple[int, ...] | None,
                   nvcc_workers: int, cores: int) -> JobserverPlan:
    """On where every client honours it and some nvcc runs more than one worker (``nvcc_workers``:
    -split-compile threads times --threads targets); ``slots``: the usable cores."""
    if not wanted:
        return JobserverPlan(False, "off (opt in with --jobserver)")
    if windows:
        return JobserverPlan(False, "off: POSIX only (make's fifo protocol)")
    if nvcc_workers <= 1:
        return JobserverPlan(False, "off: every nvcc runs one worker (no -split-compile, one target)")
    if not honours_jobserver(cuda_version):
        return JobserverPlan(False, f"off: nvcc {cuda_version} has no --jobserver "
                                    f"(from {load_common_flags().jobserver_min_cuda})")
    if ninja_version is None or ninja_version[:2] < NINJA_JOBSERVER_MIN:
        found = ".".join(map(str, ninja_version)) if ninja_version else "of unknown version"
        need = ".".join(map(str, NINJA_JOBSERVER_MIN))
        return JobserverPlan(False, f"off: ninja {found} does not join a jobserver (needs {need})")
    return JobserverPlan(True, f"on: {cores} slots shared by ninja and nvcc --jobserver", slots=max(1, cores))


def honours_jobserver(cuda_version: str) -> bool:
    """Whether this nvcc (and its cicc and ptxas) take --jobserver (compile_flags.yaml `jobserver_min_cuda`)."""
    return nvcc_at_least(cuda_version, load_common_flags().jobserver_min_cuda)


@dataclass(frozen=True)
class Jobserver:
    fifo: Path
    slots: int

    def environ(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with MAKEFLAGS naming this pool (any inherited jobserver is replaced: this build's pool is
        sized to the cores it may use)."""
        return {**env, "MAKEFLAGS": f" -j{self.slots} --jobserver-auth=fifo:{self.fifo}"}


@contextlib.contextmanager
def jobserver(slots: int) -> Iterator[Jobserver]:
    """A named pipe holding ``slots - 1`` tokens (the top process's implicit slot is the last), removed on
    exit. The pipe stays open here for reading and writing, so clients never see it closed."""
    if slots < 1:
        raise ValueError(f"a jobserver needs at least 1 slot, not {slots}")
    directory = Path(tempfile.mkdtemp(prefix="buildtool-jobserver-"))
    fifo = directory / "fifo"
    try:
        os.mkfifo(fifo, 0o600)
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        try:
            os.write(fd, TOKEN * (slots - 1))
            yield Jobserver(fifo, slots)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
