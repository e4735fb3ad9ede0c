"""Is a wheel file a whole, readable zip archive? Checked before anything reads or installs it.

A damaged or truncated wheel must end in a clear error (which file, what is wrong), never a `BadZipFile`
traceback, and must never reach pip: pip can die half way through extracting it and leave a package
without its dist-info behind (an import of it then dies with SIGBUS).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

from buildtool.errors import UserError

# What the zip reader raises on damaged data besides BadZipFile: zlib.error and EOFError (truncated deflate
# streams), OSError and ValueError (bad headers, offsets), NotImplementedError (a compression method
# zipfile cannot decode, e.g. a member whose method field was damaged).
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, ValueError)


class DamagedWheel(UserError):
    """A wheel archive that cannot be read as a whole."""


def damage(path: Path) -> str | None:
    """What is wrong with the archive at ``path`` (None when every member reads back with its CRC)."""
    if not path.is_file():
        return "does not exist" if not path.exists() else "is not a regular file"
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            for entry in zf.infolist():
                try:
                    with zf.open(entry) as member:   # reading to the end checks the member's CRC
                        while member.read(1 << 20):
                            pass
                except _READ_ERRORS as exc:
                    return (f"member {entry.filename} cannot be read back ({type(exc).__name__}: {exc}); "
                            "the file is truncated or damaged")
    except zipfile.BadZipFile as exc:
        size = path.stat().st_size
        return f"is not a zip archive ({exc}; {size} bytes): truncated or not a wheel"
    except _READ_ERRORS as exc:
        return f"cannot be read ({type(exc).__name__}: {exc})"
    infos = {n.split("/", 1)[0] for n in names if re.fullmatch(r"[^/]+\.dist-info/[^/]+", n)}
    if len(infos) != 1:
        return f"needs exactly one .dist-info directory, has {sorted(infos) or 'none'}"
    info = infos.pop()
    missing = [m for m in ("METADATA", "WHEEL", "RECORD") if f"{info}/{m}" not in names]
    if missing:
        return f"{info} lacks {', '.join(missing)}"
    return None


def check_wheel_archive(path: Path) -> None:
    """Raise DamagedWheel naming the file and the problem."""
    problem = damage(path)
    if problem is not None:
        raise DamagedWheel(f"{path}: not a readable wheel (damaged): {problem}",
                           hint="rebuild it, or download it again; it was not used")
