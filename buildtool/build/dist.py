"""Publishing a built wheel into dist/: copy to a partial file, fsync, rename; older wheels of the same
cell are removed; partial files of dead processes are swept."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from buildtool.wheel.name import WheelName


# ---------------------------------------------------------------- publishing
def _sweep_partials(dist: Path) -> None:
    """Remove .partial-<pid>-* files left by builds that no longer run (e.g. killed with SIGKILL)."""
    for path in dist.glob(".partial-*"):
        pid = path.name.split("-")[1] if path.name.count("-") >= 2 else ""
        if pid.isdigit() and _alive(int(pid)):
            continue
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(wheel: Path, dist: Path) -> Path:
    """Copy ``wheel`` into ``dist`` atomically: a hidden partial file, fsync, then rename."""
    dist.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".partial-{os.getpid()}-", suffix=".whl", dir=dist)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as dst, wheel.open("rb") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(tmp, 0o644)
        target = dist / wheel.name
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def existing_wheels(dist: Path, name: WheelName) -> list[Path]:
    """Wheels in ``dist`` for the same distribution, full version and Python (any platform tag)."""
    prefix = f"{name.dist}-{name.full_version}-{name.python_tag}-{name.abi_tag}-"
    return sorted(p for p in dist.glob(f"{prefix}*.whl") if not p.name.startswith("."))
