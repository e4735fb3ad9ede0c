"""Simulated hosts for tests: this machine with some tools taken off PATH."""

from __future__ import annotations

from pathlib import Path


def path_without(tools: tuple[str, ...], dest: Path) -> str:
    """A PATH of one directory holding links to every executable on today's PATH except ``tools``: a host without
    them (e.g. without apt-get, so the debian toolchain provider is unavailable), deterministically."""
    import os

    dest.mkdir(parents=True, exist_ok=True)
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        d = Path(entry)
        if not d.is_dir():
            continue
        for exe in d.iterdir():
            link = dest / exe.name
            if exe.name in tools or link.exists() or link.is_symlink() or not os.access(exe, os.X_OK):
                continue
            link.symlink_to(exe)
    return str(dest)
