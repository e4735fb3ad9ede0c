"""matrix.yaml: the declarative build matrix, expanded into deterministic, legal cells.

The package's modules, in the order a matrix is used: ``schema`` (the file's models), ``cell`` (one wheel
to build), ``base`` and ``checks`` (loading: references checked), ``expand``, ``rules`` (exclude rules,
profiles, --filter), ``explain`` (selection, explain, GPU code), ``github`` (CI output), ``core`` (Matrix,
the facade). The names most of the code needs are here; the rest are imported from their module."""

from buildtool.spec.matrix.cell import Cell
from buildtool.spec.matrix.core import Matrix, load_matrix

__all__ = ["Cell", "Matrix", "load_matrix"]
