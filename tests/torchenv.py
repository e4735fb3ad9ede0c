"""The torch the tests build and run against, decided in one place: `nox -s tests` provisions the default cell's
build env and exports BUILDTOOL_TEST_TORCH_ENV / BUILDTOOL_TORCH_PYTHON; without them, the running interpreter."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# A path that exists nowhere: what callers see (and skip on) when no torch environment is known.
NO_TORCH_ENV = Path("no-torch-env--set-BUILDTOOL_TEST_TORCH_ENV")


def torch_env() -> Path:
    """The environment (prefix) holding torch: $BUILDTOOL_TEST_TORCH_ENV, else the running interpreter's if it has
    torch, else NO_TORCH_ENV."""
    env = os.environ.get("BUILDTOOL_TEST_TORCH_ENV")
    if env:
        return Path(env)
    return Path(sys.prefix) if importlib.util.find_spec("torch") is not None else NO_TORCH_ENV


def torch_python() -> Path | None:
    """An interpreter with torch: $BUILDTOOL_TORCH_PYTHON, else the running one if it has torch, else the env's."""
    env = os.environ.get("BUILDTOOL_TORCH_PYTHON")
    if env:
        return Path(env)
    if importlib.util.find_spec("torch") is not None:
        return Path(sys.executable)
    cand = torch_env() / "bin" / "python"
    return cand if cand.is_file() else None
