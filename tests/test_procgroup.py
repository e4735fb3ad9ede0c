"""Process safety: SIGKILL a build mid-compile (real ninja, a slow stand-in compiler), then check that no
compiler is left, that the work-dir lock was held by the compilers while they lived and is free after,
and that the next run reuses every object the killed one finished (and redoes the half-written ones)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buildtool.build.lock import CellLock
from buildtool.errors import BuildError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; POSIX process groups")

UNITS = 6

# The stand-in compiler: one process whose command line carries the test's marker; it writes half the
# object, waits, then the whole object and a depfile, like a compiler killed mid-write would leave it.
SLOWCC = """
import sys, time
marker, src, out = sys.argv[1:4]
with open(marker + ".calls", "a") as f:
    f.write("start " + out + "\\n")
time.sleep(1.0)
with open(out, "w") as f:
    f.write("half")
time.sleep(0.8)
with open(out, "w") as f:
    f.write("object of " + open(src).read())
with open(out + ".d", "w") as f:
    f.write(out + ": " + src + "\\n")
with open(marker + ".calls", "a") as f:
    f.write("done " + out + "\\n")
"""

# The build process under test: takes the cell lock, runs ninja through the same NinjaProgress.run as
# compile_modules (rule shape as compile.write_build_ninja writes it: start marker, depfile, deps=gcc).
DRIVER = """
import os, sys
from pathlib import Path
from buildtool.build.lock import CellLock
from buildtool.compile.ninja import ninja_binary
from buildtool.compile.progress import NinjaProgress
work, marker, slowcc = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = CellLock(work)
objs = work / "objects"
objs.mkdir(exist_ok=True)
lines = ["rule cc", f"  command = : > $out.start && {sys.executable} {slowcc} {marker} $in $out",
         "  depfile = $out.d", "  deps = gcc", ""]
units = {}
for i in range(UNITS_PLACEHOLDER):
    src = work / f"unit{i}.cu"
    if not src.exists():  # a rerun must not touch the sources (ninja would rebuild everything)
        src.write_text(f"unit {i}\\n")
    out = objs / f"unit{i}.o"
    lines.append(f"build {out}: cc {src}")
    units[str(out)] = f"unit{i}"
(objs / "build.ninja").write_text("\\n".join(lines) + "\\n")
with open(work / "compile.log", "a") as log:
    progress = NinjaProgress(units=units, log=log, quiet=True, title="stand-in")
    code = progress.run([ninja_binary(os.environ), "-C", str(objs), "-j", "2"], dict(os.environ))
lock.close()
sys.exit(code)
""".replace("UNITS_PLACEHOLDER", str(UNITS))


def _alive_with(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (zombies excluded: they compute nothing)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _calls(marker: str) -> list[str]:
    path = Path(marker + ".calls")
    return path.read_text().splitlines() if path.is_file() else []


def _start(tmp_path: Path, work: Path, marker: str) -> subprocess.Popen[bytes]:
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / "slowcc.py").write_text(SLOWCC)
    return subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(work), marker,
                             str(tmp_path / "slowcc.py")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_of_the_build_kills_every_compiler_and_resume_keeps_finished_objects(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    marker = str(tmp_path / "slowcc-marker")
    driver = _start(tmp_path, work, marker)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            calls = _calls(marker)
            done = [c for c in calls if c.startswith("done ")]
            running = {c[6:] for c in calls if c.startswith("start ")} - {c[5:] for c in done}
            if len(done) >= 2 and running:
                break
            assert driver.poll() is None, driver.stderr.read() if driver.stderr else ""
            time.sleep(0.05)
        else:
            pytest.fail("the stand-in compiles never got going")
        # a live build's lock is respected, even from this (different) process
        with pytest.raises(BuildError, match="is being built by pid"):
            CellLock(work)
        assert _alive_with(marker), "compilers should be running now"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    deadline = time.monotonic() + 30
    while _alive_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive_with(marker) == [], "compilers outlived the SIGKILLed build"
    # finished = recorded by ninja (its .ninja_log is the commit record: a compile that ended in the instant
    # between the kill and ninja's record is not known to be whole, and is redone)
    log = (work / "objects" / ".ninja_log").read_text().splitlines()[1:]
    finished = {line.split("\t")[3] for line in log}
    assert 2 <= len(finished) < UNITS, log
    # the lock is free again, and the new holder learns that the last build was killed
    lock = CellLock(work)
    assert lock.previous == f"pid {driver.pid}"
    lock.close()

    Path(marker + ".calls").unlink()
    resumed = _start(tmp_path, work, marker)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()
    second = {c[6:] for c in _calls(marker) if c.startswith("start ")}
    assert not second & finished, f"recompiled finished objects: {sorted(second & finished)}"
    assert len(second) == UNITS - len(finished)
    for i in range(UNITS):  # half-written objects of the killed run were redone
        assert (work / "objects" / f"unit{i}.o").read_text() == f"object of unit {i}\n"
    assert _alive_with(marker) == []
