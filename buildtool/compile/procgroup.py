"""Child process trees that die with buildtool, whatever kills it (SIGKILL included).

A compile runs as ninja -> /bin/sh -> nvcc -> cicc/ptxas. Killing buildtool must not leave that tree
compiling on (it would race the next build in the same work dir). Three layers:

* POSIX: the tree runs in its own process group (ninja is the leader), so one ``killpg`` reaches every
  compiler; Ctrl-C in a terminal reaches buildtool only, which stops the group itself.
* A watchdog process holds the read end of a pipe whose write end only buildtool holds. When buildtool
  exits for any reason the kernel closes that end; the watchdog reads EOF and SIGKILLs the group, then
  waits until the group is gone. On Linux ninja also gets ``PR_SET_PDEATHSIG`` (SIGKILL) through prctl,
  so the leader dies at once even before the watchdog runs.
* Windows: the tree is assigned to a job object with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE; the job handle
  is buildtool's only, so the kernel kills the tree when buildtool's handles close (any exit). That code
  path cannot run here (no Windows); it follows the documented Win32 API.

File descriptors registered with :func:`hold_in_children` (the work-dir lock) are inherited by the tree,
so an flock stays held until the last compiler is gone: a second build never starts beside orphans.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["GuardedProcess", "hold_in_children", "spawn_guarded"]

_HELD_FDS: set[int] = set()

# Runs in a separate interpreter: blocks until buildtool's end of the pipe closes, then kills the group
# unless buildtool said "done" first, and waits (up to 30 s) until no member of the group is left.
_WATCHDOG = """
import os, signal, sys, time
pgid = int(sys.argv[1])
data = os.read(0, 1)
if data != b"q":
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        sys.exit(0)
    for _ in range(3000):
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(0.01)
"""


@contextlib.contextmanager
def hold_in_children(fd: int) -> Iterator[None]:
    """While active, guarded child trees inherit ``fd`` (e.g. a locked file): it stays open until they end."""
    _HELD_FDS.add(fd)
    try:
        yield
    finally:
        _HELD_FDS.discard(fd)


def _linux_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


class GuardedProcess:
    """A started child tree plus its guard; ``finish()`` after a normal end, ``kill()`` to stop it."""

    def __init__(self, proc: subprocess.Popen[Any], guard_fd: int | None, watchdog: subprocess.Popen[bytes] | None,
                 job: Any = None) -> None:
        self.proc = proc
        self._guard_fd = guard_fd
        self._watchdog = watchdog
        self._job = job

    @property
    def pid(self) -> int:
        return self.proc.pid

    def terminate(self, grace: float = 10.0) -> None:
        """SIGTERM the whole group, SIGKILL what is left after ``grace`` seconds."""
        try:
            if os.name != "nt":
                os.killpg(self.proc.pid, signal.SIGTERM)
            else:
                self.proc.terminate()
            self.proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired, OSError):
            self.kill()
        self._release(kill_rest=True)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            if os.name != "nt":
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
        self._release(kill_rest=True)

    def finish(self) -> None:
        """The leader exited normally: stand the watchdog down (nothing of the group is left to kill)."""
        self._release(kill_rest=False)

    def _release(self, *, kill_rest: bool) -> None:
        if self._guard_fd is not None:
            with contextlib.suppress(OSError):
                if not kill_rest:
                    os.write(self._guard_fd, b"q")
                os.close(self._guard_fd)
            self._guard_fd = None
            if self._watchdog is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._watchdog.wait(timeout=35)
        if self._job is not None:
            _close_job(self._job)
            self._job = None


def spawn_guarded(argv: Sequence[str], *, env: Mapping[str, str], **popen: Any) -> GuardedProcess:
    """Start ``argv`` as a process tree that cannot outlive this process (see the module docstring)."""
    if os.name == "nt":  # pragma: no cover - Windows only
        proc = subprocess.Popen(list(argv), env=dict(env), creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200),
                                **popen)
        return GuardedProcess(proc, None, None, job=_windows_job_for(proc))
    preexec = _linux_pdeathsig if sys.platform.startswith("linux") else None
    proc = subprocess.Popen(list(argv), env=dict(env), start_new_session=True, preexec_fn=preexec,
                            pass_fds=tuple(sorted(_HELD_FDS)), **popen)
    read_end, write_end = os.pipe()  # both close-on-exec: only the watchdog (as stdin) gets the read end
    try:
        watchdog = subprocess.Popen([sys.executable, "-I", "-c", _WATCHDOG, str(proc.pid)], stdin=read_end,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
    except OSError:
        os.close(write_end)
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    finally:
        os.close(read_end)
    return GuardedProcess(proc, write_end, watchdog)


# ------------------------------------------------------------------------------------------- Windows
def _windows_job_for(proc: subprocess.Popen[Any]) -> Any:  # pragma: no cover - Windows only
    """A job object that kills its processes when its last handle closes; ``proc`` is assigned to it.
    Children that ninja starts later join the job automatically (job membership is inherited)."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]

    class _BasicLimits(ctypes.Structure):
        _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64), ("PerJobUserTimeLimit", ctypes.c_int64),
                    ("LimitFlags", wintypes.DWORD), ("MinimumWorkingSetSize", ctypes.c_size_t),
                    ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", wintypes.DWORD),
                    ("Affinity", ctypes.c_size_t), ("PriorityClass", wintypes.DWORD),
                    ("SchedulingClass", wintypes.DWORD)]

    class _IoCounters(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint64) for name in ("ReadOperationCount", "WriteOperationCount",
                                                         "OtherOperationCount", "ReadTransferCount",
                                                         "WriteTransferCount", "OtherTransferCount")]

    class _ExtendedLimits(ctypes.Structure):
        _fields_ = [("BasicLimitInformation", _BasicLimits), ("IoInfo", _IoCounters),
                    ("ProcessMemoryLimit", ctypes.c_size_t), ("JobMemoryLimit", ctypes.c_size_t),
                    ("PeakProcessMemoryUsed", ctypes.c_size_t), ("PeakJobMemoryUsed", ctypes.c_size_t)]

    job_object_limit_kill_on_job_close = 0x2000
    job_object_extended_limit_information = 9
    job = kernel32.CreateJobObjectW(None, None)
    if not job:
        return None
    info = _ExtendedLimits()
    info.BasicLimitInformation.LimitFlags = job_object_limit_kill_on_job_close
    kernel32.SetInformationJobObject(job, job_object_extended_limit_information, ctypes.byref(info),
                                     ctypes.sizeof(info))
    kernel32.AssignProcessToJobObject(job, wintypes.HANDLE(proc._handle))  # type: ignore[attr-defined]
    return job


def _close_job(job: Any) -> None:  # pragma: no cover - Windows only
    import ctypes

    ctypes.WinDLL("kernel32").CloseHandle(job)  # type: ignore[attr-defined]
