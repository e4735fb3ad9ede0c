"""The machine buildtool runs on: its platform name (as compat.yaml spells platforms) and the user cache
directory. The one owner of both; every stage asks here."""

from __future__ import annotations

import os
import platform as _platform
import sys
from collections.abc import Mapping
from pathlib import Path

# platform.machine() spellings -> the machine part of a platform name
_MACHINES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}

CACHE_ENV = "BUILDTOOL_CACHE_DIR"


def host_os() -> str:
    """windows, linux, or Python's name for anything else (darwin, freebsd...)."""
    if sys.platform == "win32":
        return "windows"
    if sys.platform.startswith("linux"):
        return "linux"
    return sys.platform


def host_platform() -> str:
    """This machine as a compat.yaml platform name: linux-x86_64, windows-x86_64, linux-aarch64, ...
    (a machine no matrix knows gets a name of the same shape, e.g. darwin-aarch64)."""
    machine = _platform.machine().lower()
    return f"{host_os()}-{_MACHINES.get(machine, machine)}"


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """$BUILDTOOL_CACHE_DIR, else the user cache dir: $XDG_CACHE_HOME/buildtool or ~/.cache/buildtool
    (Linux), %LOCALAPPDATA%\\buildtool\\cache (Windows), ~/Library/Caches/buildtool (macOS)."""
    e = os.environ if env is None else env
    if e.get(CACHE_ENV):
        return Path(e[CACHE_ENV]).expanduser()
    if sys.platform == "win32" and e.get("LOCALAPPDATA"):
        return Path(e["LOCALAPPDATA"]) / "buildtool" / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "buildtool"
    return Path(e.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "buildtool"
