"""host: the machine's platform name and the user cache dir, the one place every stage asks."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from buildtool import host
from buildtool.spec.compat import load_compat


def test_this_machine_is_a_matrix_platform() -> None:
    """Where the suite runs (Linux x86_64 CI, Windows CI) the name is one compat.yaml knows."""
    assert host.host_platform() in load_compat().platforms


@pytest.mark.parametrize("sys_platform, machine, expected", [
    ("linux", "x86_64", "linux-x86_64"),
    ("linux", "aarch64", "linux-aarch64"),
    ("win32", "AMD64", "windows-x86_64"),
    ("win32", "ARM64", "windows-aarch64"),
    ("darwin", "arm64", "darwin-aarch64"),  # not a matrix platform, and never mistaken for linux
])
def test_platform_name_simulated(monkeypatch: pytest.MonkeyPatch, sys_platform: str, machine: str,
                                 expected: str) -> None:
    monkeypatch.setattr(sys, "platform", sys_platform)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert host.host_platform() == expected


def test_cache_dir_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    assert host.default_cache_dir({"BUILDTOOL_CACHE_DIR": str(tmp_path / "bt")}) == tmp_path / "bt"
    assert host.default_cache_dir({"XDG_CACHE_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "buildtool"
    assert host.default_cache_dir({}) == Path.home() / ".cache" / "buildtool"


def test_cache_dir_windows_simulated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    assert host.default_cache_dir({"LOCALAPPDATA": str(tmp_path)}) == tmp_path / "buildtool" / "cache"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert host.default_cache_dir({}) == Path.home() / "Library" / "Caches" / "buildtool"


def test_every_stage_uses_the_same_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Sources, toolchains, build envs and compiled objects live under one root (XDG honoured by all)."""
    from buildtool.source.fetch import default_cache_dir as sources_dir

    monkeypatch.delenv("BUILDTOOL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert sources_dir() == host.default_cache_dir() / "sources" == tmp_path / "buildtool" / "sources"
