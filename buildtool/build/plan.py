"""What building a profile costs in CI, before pushing the tag: jobs, translation units, reused objects,
CPU-hours and wall time, for three ways of cutting the work.

- ``per-cell``: one job per cell (what wheels.yml did before cibuildwheel): every job compiles every TU.
- ``compile-groups``: one job per compile group (buildtool.build.groups): the CUDA TUs compile once per
  group, each Python adds its binding TU, the other Pythons reuse the device objects.
- ``groups+stable``: compile groups, with the stable-ABI track replacing the full-ABI cells it covers
  (one abi3 wheel per platform x CUDA major x package version: CUDA TUs + one binding TU).

Costs come from buildtool/data/build_costs.yaml (measured per-TU CPU-seconds, docs/bench/). Pure: the
kernel specs' TU counts are passed in.
"""

from __future__ import annotations

import fnmatch
import statistics
from collections.abc import Callable, Mapping, Sequence
from functools import cache

from packaging.version import Version

from buildtool.build.groups import compile_groups
from buildtool.errors import UserError
from buildtool.model import Frozen
from buildtool.spec import yamlsrc
from buildtool.spec.matrix import Cell

__all__ = ["BuildCosts", "PlanRow", "TuCounts", "load_costs", "plan_profile"]


class DeviceCost(Frozen):
    family: str
    cpu_s_per_tu_arch: float
    source: str


class StableProjection(Frozen):
    torch_floor: str
    packages: tuple[str, ...]


class BuildCosts(Frozen):
    machine: str
    binding_cpu_s: float
    binding_source: str
    device: tuple[DeviceCost, ...]
    stable_projection: StableProjection

    def per_tu_arch(self, spec_name: str) -> float:
        for row in self.device:
            if fnmatch.fnmatch(spec_name, row.family):
                return row.cpu_s_per_tu_arch
        raise UserError(f"build_costs.yaml has no device cost for kernel spec {spec_name}; families: "
                        + ", ".join(r.family for r in self.device))


@cache
def load_costs() -> BuildCosts:
    return yamlsrc.load_packaged(BuildCosts, "build_costs.yaml")


class TuCounts(Frozen):
    """A package version's translation units, per kernel spec: (spec name, CUDA TUs, binding TUs)."""

    specs: tuple[tuple[str, int, int], ...]


class PlanRow(Frozen):
    plan: str
    jobs: int
    wheels: int
    tus_compiled: int
    objects_reused: int
    cpu_s: float
    cpu_hours: float
    job_wall_min_median: float
    job_wall_min_max: float
    wall_hours: float  # the whole run with `concurrency` jobs at a time


def _archs(cell: Cell) -> int:
    return len(cell.archs) + (1 if cell.ptx else 0)


def _device(cell: Cell, tus: TuCounts, costs: BuildCosts) -> tuple[int, float]:
    """(CUDA TUs, CPU-seconds) of the cell's device code."""
    n = sum(cu for _, cu, _ in tus.specs)
    seconds = sum(cu * _archs(cell) * costs.per_tu_arch(name) for name, cu, _ in tus.specs)
    return n, seconds


def _binding(tus: TuCounts, costs: BuildCosts) -> tuple[int, float]:
    n = sum(b for _, _, b in tus.specs)
    return n, n * costs.binding_cpu_s


class _Job(Frozen):
    wheels: int
    tus: int
    reused: int
    cpu_s: float


def _summarise(name: str, jobs: Sequence[_Job], cores: int, concurrency: int) -> PlanRow:
    walls = [j.cpu_s / cores for j in jobs] or [0.0]
    total_cpu = sum(j.cpu_s for j in jobs)
    makespan = max(max(walls), sum(walls) / concurrency)
    return PlanRow(plan=name, jobs=len(jobs), wheels=sum(j.wheels for j in jobs), tus_compiled=sum(j.tus for j in jobs),
                   objects_reused=sum(j.reused for j in jobs), cpu_s=round(total_cpu, 1), cpu_hours=round(total_cpu / 3600, 1),
                   job_wall_min_median=round(statistics.median(walls) / 60, 1), job_wall_min_max=round(max(walls) / 60, 1),
                   wall_hours=round(makespan / 3600, 1))


def _stable_projected(cell: Cell, costs: BuildCosts) -> bool:
    proj = costs.stable_projection
    return (f"{cell.package}=={cell.version}" in proj.packages
            and Version(cell.torch_minor) >= Version(proj.torch_floor))


def plan_profile(cells: Sequence[Cell], tu_counts: Callable[[Cell], TuCounts], *, cores: int, concurrency: int,
                 stable_cells: Sequence[Cell] = (), costs: BuildCosts | None = None) -> list[PlanRow]:
    """The three plans for ``cells`` (full ABI) on runners with ``cores`` cores, ``concurrency`` jobs at a
    time. ``stable_cells``: the same profile expanded with the stable-ABI track on (matrix.expand(stable_abi=
    True)); while it has no stable cell, the track is projected from build_costs.yaml."""
    if cores < 1 or concurrency < 1:
        raise UserError(f"--cores and --concurrency must be at least 1 (got {cores}, {concurrency})")
    costs = costs or load_costs()

    def group_jobs(group_cells: Sequence[Cell]) -> list[_Job]:
        jobs = []
        for group in compile_groups(group_cells):
            cell = group.first
            tus = tu_counts(cell)
            dev_n, dev_s = _device(cell, tus, costs)
            bind_n, bind_s = _binding(tus, costs)
            pythons = 1 if group.abi == "stable" else len(group.cells)
            jobs.append(_Job(wheels=pythons, tus=dev_n + pythons * bind_n, reused=dev_n * (pythons - 1),
                             cpu_s=dev_s + pythons * bind_s))
        return jobs

    per_cell = []
    for cell in cells:
        tus = tu_counts(cell)
        dev_n, dev_s = _device(cell, tus, costs)
        bind_n, bind_s = _binding(tus, costs)
        per_cell.append(_Job(wheels=1, tus=dev_n + bind_n, reused=0, cpu_s=dev_s + bind_s))

    grouped = group_jobs(cells)
    if any(c.abi == "stable" for c in stable_cells):
        with_stable = group_jobs(stable_cells)  # the matrix's own stable track
    else:  # project the stable track onto the full-ABI cells it will replace
        keep = [c for c in cells if not _stable_projected(c, costs)]
        moved = [c for c in cells if _stable_projected(c, costs)]
        with_stable = group_jobs(keep) + _stable_groups(moved, tu_counts, costs)
    return [
        _summarise("per-cell", per_cell, cores, concurrency),
        _summarise("compile-groups", grouped, cores, concurrency),
        _summarise("groups+stable", with_stable, cores, concurrency),
    ]


def _stable_groups(cells: Sequence[Cell], tu_counts: Callable[[Cell], TuCounts], costs: BuildCosts) -> list[_Job]:
    """One job per (platform, CUDA major, package version): CUDA TUs once (the widest arch list of the
    cells it replaces), one binding TU, one abi3 wheel."""
    buckets: dict[tuple[str, str, str, str], list[Cell]] = {}
    for c in cells:
        buckets.setdefault((c.platform, c.cuda_major, c.package, c.version), []).append(c)
    jobs = []
    for members in buckets.values():
        cell = max(members, key=_archs)
        tus = tu_counts(cell)
        dev_n, dev_s = _device(cell, tus, costs)
        bind_n, bind_s = _binding(tus, costs)
        jobs.append(_Job(wheels=1, tus=dev_n + bind_n, reused=0, cpu_s=dev_s + bind_s))
    return jobs


def tu_counter(kernel_specs: Mapping[tuple[str, str, str], TuCounts]) -> Callable[[Cell], TuCounts]:
    """Look-up by (package, version, ABI track)."""
    def count(cell: Cell) -> TuCounts:
        try:
            return kernel_specs[(cell.package, cell.version, cell.abi)]
        except KeyError:
            raise UserError(f"no kernel specs known for {cell.package} {cell.version} ({cell.abi} ABI)") from None
    return count
