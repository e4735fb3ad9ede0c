"""Wheel compatibility tags, through `packaging.tags` (the code pip and uv's rules follow).

One owner for "does this wheel's tag set run on that interpreter/platform": the resolver, install, the
index and doctor all ask here, so abi3 (`cp310-abi3` runs on every CPython >= 3.10), `py3-none-any` and
compressed tag sets (`manylinux_2_27_x86_64.manylinux_2_28_x86_64`) are handled one way everywhere.
The environment is described by the project's names (python tag `cp311`, platform `linux-x86_64`), not by
the running interpreter, so a resolve for another machine gets that machine's tags.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from packaging.tags import Tag, compatible_tags, cpython_tags, parse_tag
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from buildtool.errors import UserError

# Highest glibc minor assumed when the platform rule must not depend on glibc (the glibc rule says that).
_ANY_GLIBC_MINOR = 99
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_PYTHON_TAG = re.compile(r"^cp(?P<major>\d)(?P<minor>\d+)$")


def python_version(python_tag: str) -> tuple[int, int]:
    """(3, 11) from 'cp311'."""
    m = _PYTHON_TAG.match(python_tag)
    if not m:
        raise UserError(f'python tag "{python_tag}" is not like cp311')
    return int(m["major"]), int(m["minor"])


def wheel_tags(filename: str) -> frozenset[Tag]:
    """Every tag a wheel file name declares (compressed tag sets expanded)."""
    try:
        return parse_wheel_filename(filename.rsplit("/", 1)[-1])[3]
    except InvalidWheelFilename as exc:
        raise UserError(f"{filename}: not a valid wheel file name: {exc}") from None


def platform_tags(platform: str, glibc: str | None = None) -> list[str]:
    """The platform tags an installer accepts on a project platform (`linux-x86_64`), most specific first.
    Linux: manylinux_2_Y for every Y up to the system's glibc (every Y when ``glibc`` is None), the legacy
    aliases, then plain `linux_<machine>`."""
    os_name, _, machine = platform.partition("-")
    if os_name == "windows":
        return {"x86_64": ["win_amd64"], "aarch64": ["win_arm64"]}.get(machine, [f"win_{machine}"])
    if os_name == "macos":
        return [f"macosx_11_0_{machine}"]
    if os_name != "linux":
        return [platform]
    top = int(glibc.split(".")[1]) if glibc else _ANY_GLIBC_MINOR
    floor = 5 if machine in ("x86_64", "i686") else 17
    out = [f"manylinux_2_{minor}_{machine}" for minor in range(top, floor - 1, -1)]
    out += [f"{legacy}_{machine}" for legacy, (_, minor) in _LEGACY_MANYLINUX.items() if minor <= top and minor >= floor]
    out.append(f"linux_{machine}")
    return out


def supported_tags(python_tag: str, platform: str, glibc: str | None = None) -> list[Tag]:
    """Every tag an installer accepts for CPython ``python_tag`` on ``platform``, most preferred first
    (cp311-cp311, cp311-abi3, cp310-abi3, ..., py3-none-any): `packaging.tags`' own order."""
    version = python_version(python_tag)
    plats = platform_tags(platform, glibc)
    return [*cpython_tags(version, abis=[python_tag], platforms=plats), *compatible_tags(version, python_tag, plats)]


def python_fits(tags: Iterable[Tag], python_tag: str) -> bool:
    """Some tag's interpreter + ABI runs on this CPython (platform not considered)."""
    version = python_version(python_tag)
    ok = {(t.interpreter, t.abi) for t in (*cpython_tags(version, abis=[python_tag], platforms=["any"]),
                                           *compatible_tags(version, python_tag, ["any"]))}
    return any((t.interpreter, t.abi) in ok for t in tags)


def platform_fits(tags: Iterable[Tag], platform: str) -> bool:
    """Some tag's platform runs on this OS/machine, whatever the glibc (the glibc rule checks that)."""
    ok = set(platform_tags(platform)) | {"any"}
    return any(t.platform in ok for t in tags)


def rank(tags: Iterable[Tag], python_tag: str, platform: str, glibc: str | None = None) -> int | None:
    """Position of the wheel's best tag in the environment's preference order (lower is better; None: no fit)."""
    order = {t: i for i, t in enumerate(supported_tags(python_tag, platform, glibc))}
    found = [order[t] for t in tags if t in order]
    return min(found) if found else None


def parse_tag_line(text: str) -> frozenset[Tag]:
    """Tags from a WHEEL file's `Tag:` value (may itself be compressed)."""
    return parse_tag(text.strip())


def is_abi3(tags: Iterable[Tag]) -> bool:
    return any(t.abi == "abi3" for t in tags)


def python_of_tag(python_tag: str) -> str:
    """'3.11' from 'cp311' (for markers and messages)."""
    major, minor = python_version(python_tag)
    return f"{major}.{minor}"


_LINUX_PLATFORM = re.compile(r"^(?:manylinux_(?P<glibc>\d+_\d+)|linux)_(?P<machine>x86_64|aarch64|i686|ppc64le|s390x)$")
_WINDOWS_MACHINE = {"win_amd64": "x86_64", "win_arm64": "aarch64"}


def platform_of(tags: Iterable[Tag]) -> tuple[str, str | None]:
    """The project's platform name ('linux-x86_64', 'windows-x86_64', 'any') and, for manylinux, the lowest
    glibc of the tag set (`manylinux_2_27_x86_64.manylinux_2_28_x86_64` runs from glibc 2.27)."""
    found: list[tuple[str, str | None]] = []
    for tag in tags:
        plat = tag.platform
        for legacy, (major, minor) in _LEGACY_MANYLINUX.items():
            if plat.startswith(legacy + "_"):
                plat = f"manylinux_{major}_{minor}_" + plat[len(legacy) + 1:]
        if plat == "any":
            found.append(("any", None))
        elif plat in _WINDOWS_MACHINE:
            found.append((f"windows-{_WINDOWS_MACHINE[plat]}", None))
        elif m := _LINUX_PLATFORM.match(plat):
            found.append((f"linux-{m['machine']}", m["glibc"].replace("_", ".") if m["glibc"] else None))
    if not found:
        return ".".join(sorted({t.platform for t in tags})), None
    glibcs = [g for _, g in found if g]
    return sorted(found)[0][0], (min(glibcs, key=lambda g: tuple(int(x) for x in g.split("."))) if glibcs else None)
