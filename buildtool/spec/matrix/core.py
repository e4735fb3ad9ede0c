"""Matrix: a loaded, checked matrix.yaml and the questions asked of it (expand, select, explain)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from buildtool.spec import yamlsrc
from buildtool.spec.abitrack import AbiTrack
from buildtool.spec.compat import Compat, load_compat
from buildtool.spec.matrix import checks, expand, explain
from buildtool.spec.matrix.base import MatrixBase
from buildtool.spec.matrix.cell import Cell
from buildtool.spec.matrix.expand import Expansion
from buildtool.spec.matrix.schema import MatrixFile
from buildtool.spec.recipe import Recipe


@dataclass(frozen=True)
class Matrix(MatrixBase):
    @classmethod
    def load(cls, path: Path, recipes: Mapping[str, Recipe], compat: Compat | None = None) -> Matrix:
        doc = yamlsrc.load(path)
        spec: MatrixFile = yamlsrc.validate(MatrixFile, doc)
        matrix = cls(spec=spec, doc=doc, recipes=recipes, compat=compat or load_compat())
        checks.check_references(matrix)
        return matrix

    def expand(self, *, stable_abi: bool | None = None) -> Expansion:
        """All cells; ``stable_abi`` overrides the file's switch (the summary's "before" numbers)."""
        return expand.expand(self, stable_abi=stable_abi)

    def stable_build_targets(self, platform: str, major: str, floor: str) -> list[tuple[str, str, str]]:
        return expand.stable_build_targets(self, platform, major, floor)

    def stable_build_target(self, platform: str, major: str, floor: str) -> tuple[str, str, str] | None:
        return expand.stable_build_target(self, platform, major, floor)

    def track_of(self, package: str, version: str) -> tuple[AbiTrack, str]:
        return explain.track_of(self, package, version)

    def select(self, expansion: Expansion, profile: str | None = None, filters: Sequence[str] = ()) -> list[Cell]:
        return explain.select(self, expansion, profile, filters)

    def explain(self, cell_id: str, expansion: Expansion) -> tuple[bool, list[str]]:
        """(is_built, reasons) for a cell id; unknown ids raise with a did-you-mean."""
        return explain.explain(self, cell_id, expansion)

    def gpu_code(self, cell: Cell) -> list[str]:
        return explain.gpu_code(self, cell)


def load_matrix(project_root: Path, matrix_path: Path | None = None) -> Matrix:
    from buildtool.spec.recipe import load_recipes

    recipes = load_recipes(project_root / "recipes")
    return Matrix.load(matrix_path or project_root / "matrix.yaml", recipes)
