"""What the stable-ABI track does to a matrix selection: cells and compile groups with the track off and on,
and how many cells the next torch minor would add either way (the track's point: zero)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from packaging.version import Version

from buildtool.errors import UserError
from buildtool.spec.matrix import Cell, Matrix


@dataclass(frozen=True)
class TrackCounts:
    cells: int
    compile_groups: int
    stable_cells: int

    @classmethod
    def of(cls, cells: list[Cell]) -> TrackCounts:
        return cls(cells=len(cells), compile_groups=len({c.compile_group for c in cells}),
                   stable_cells=sum(1 for c in cells if c.abi == "stable"))


@dataclass(frozen=True)
class TrackSummary:
    profile: str | None
    full_only: TrackCounts
    with_stable: TrackCounts
    next_torch: str
    next_torch_adds_full_only: int
    next_torch_adds_with_stable: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "full_abi_only": vars(self.full_only), "with_stable_abi": vars(self.with_stable),
            "next_torch": self.next_torch,
            "next_torch_adds": {"full_abi_only": self.next_torch_adds_full_only,
                                "with_stable_abi": self.next_torch_adds_with_stable},
        }


def _selected(matrix: Matrix, profile: str | None, stable: bool) -> list[Cell]:
    """The profile's cells with the track on, or without it (its explicit stable include cells left out too)."""
    cells = matrix.select(matrix.expand(stable_abi=stable), profile)
    return cells if stable else [c for c in cells if c.abi == "full"]


def with_new_torch(matrix: Matrix, minor: str | None = None) -> tuple[Matrix, str]:
    """The matrix with one more torch minor on its axes (default: the one after the newest known), assumed
    to ship like the newest known one (same CUDA builds, Pythons, platforms): what a new torch costs."""
    newest_key = max(matrix.compat.torch, key=Version)
    newest = matrix.compat.torch[newest_key]
    if minor is None:
        v = Version(newest_key)
        minor = f"{v.major}.{v.minor + 1}"
    if minor in matrix.compat.torch:
        raise UserError(f"torch {minor} is already in the compatibility data: pass a minor it does not know")
    release = f"{minor}.0"
    compat = matrix.compat.model_copy(update={"torch": {**matrix.compat.torch,
                                                        minor: newest.model_copy(update={"release": release})}})
    axes = matrix.spec.axes.model_copy(update={"torch": (*matrix.spec.axes.torch, release)})
    spec = matrix.spec.model_copy(update={"axes": axes})
    return replace(matrix, spec=spec, compat=compat), minor


def summarize(matrix: Matrix, profile: str | None = None, new_torch: str | None = None) -> TrackSummary:
    full = TrackCounts.of(_selected(matrix, profile, False))
    stable = TrackCounts.of(_selected(matrix, profile, True))
    bigger, minor = with_new_torch(matrix, new_torch)
    full_next = TrackCounts.of(_selected(bigger, profile, False))
    stable_next = TrackCounts.of(_selected(bigger, profile, True))
    return TrackSummary(profile=profile, full_only=full, with_stable=stable, next_torch=minor,
                        next_torch_adds_full_only=full_next.cells - full.cells,
                        next_torch_adds_with_stable=stable_next.cells - stable.cells)
