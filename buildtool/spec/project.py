"""Where the project's data lives: matrix.yaml, recipes/, patches/, kernels/."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from buildtool.errors import UserError

_MARKERS = ("matrix.yaml", "recipes")


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def matrix_file(self) -> Path:
        return self.root / "matrix.yaml"

    @property
    def recipes_dir(self) -> Path:
        return self.root / "recipes"

    @property
    def patches_dir(self) -> Path:
        return self.root / "patches"

    @property
    def kernels_dir(self) -> Path:
        return self.root / "kernels"

    @property
    def dist_dir(self) -> Path:
        return self.root / "dist"

    @property
    def build_dir(self) -> Path:
        return self.root / "build"


def _is_root(path: Path) -> bool:
    return all((path / m).exists() for m in _MARKERS)


def find_project(start: Path | None = None) -> Project:
    """$BUILDTOOL_ROOT, else the nearest ancestor of ``start`` (cwd) holding matrix.yaml and recipes/,
    else the checkout this package was imported from."""
    env = os.environ.get("BUILDTOOL_ROOT")
    if env:
        root = Path(env).resolve()
        if not _is_root(root):
            raise UserError(f"BUILDTOOL_ROOT={env} does not contain matrix.yaml and recipes/")
        return Project(root)
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if _is_root(candidate):
            return Project(candidate)
    checkout = Path(__file__).resolve().parents[2]
    if _is_root(checkout):
        return Project(checkout)
    raise UserError(
        "no project found: no matrix.yaml and recipes/ in the current directory or its parents",
        hint="run inside the builder's checkout or set BUILDTOOL_ROOT",
    )
