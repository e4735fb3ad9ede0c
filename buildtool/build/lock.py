"""One build per cell at a time: an exclusive lock on the cell's work directory."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from buildtool.errors import BuildError


class CellLock:
    """An exclusive flock on the cell's work dir (two builds of one cell would clobber each other's tree and
    objects). The compile tree inherits the locked descriptor (``procgroup.hold_in_children``), so the lock
    is held until the last compiler is gone, even when buildtool itself was killed; the kernel drops it with
    the last holder, so a lock left by a dead build is never stale. ``previous`` names the holder of a lock
    found free but not released cleanly (a killed build), for the log."""

    def __init__(self, work: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.path = work / ".lock"
        self.handle = self.path.open("a+", encoding="utf-8")
        self.previous = ""
        self._held: contextlib.ExitStack = contextlib.ExitStack()
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks through fcntl; CI runs one build per job there
            return
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise BuildError(f"{work} is being built by {holder} (or by compilers it started, still running)",
                             hint="wait for it, or use another build dir") from None
        self.handle.seek(0)
        self.previous = self.handle.read().strip()  # a clean release empties the file
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()}\n")
        self.handle.flush()
        from buildtool.compile.procgroup import hold_in_children

        self._held.enter_context(hold_in_children(self.handle.fileno()))

    def close(self) -> None:
        self._held.close()
        if not self.handle.closed:
            with contextlib.suppress(OSError):
                self.handle.seek(0)
                self.handle.truncate()
            self.handle.close()


def lock_cell(work: Path) -> CellLock:
    return CellLock(work)
