"""`buildtool plan`: the cost model on a hand-computed case, and the release profile's plans from the CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest

from buildtool.build.plan import BuildCosts, TuCounts, load_costs, plan_profile
from buildtool.cli import main
from buildtool.errors import UserError
from buildtool.spec.matrix import Cell

COSTS = BuildCosts.model_validate({
    "machine": "test", "binding_cpu_s": 5.0, "binding_source": "-",
    "device": [{"family": "k*", "cpu_s_per_tu_arch": 10.0, "source": "-"}],
    "stable_projection": {"torch_floor": "2.10", "packages": ["p==1.0"]},
})


def _cell(python: str, torch: str = "2.9.1", version: str = "1.0") -> Cell:
    return Cell(platform="linux-x86_64", python=python, cuda="12.6", torch=torch, package="p", version=version,
                cxx11_abi=True, cxx_std="17", archs=("8.0", "9.0"), ptx=False, triton=None)


def _tus(cell: Cell) -> TuCounts:
    return TuCounts(specs=(("k1", 2, 1),))  # 2 CUDA TUs, 1 binding TU


def test_hand_computed_plans() -> None:
    cells = [_cell(py) for py in ("3.10", "3.11", "3.12")]
    per_cell, groups, stable = plan_profile(cells, _tus, cores=1, concurrency=1, costs=COSTS)
    # per cell: 3 x (2 TUs x 2 archs x 10 s + 5 s) = 135 s; groups: 40 s once + 3 x 5 s = 55 s
    assert (per_cell.jobs, per_cell.tus_compiled, per_cell.objects_reused) == (3, 9, 0)
    assert per_cell.cpu_s == 135 and per_cell.job_wall_min_max == round(45 / 60, 1)
    assert (groups.jobs, groups.tus_compiled, groups.objects_reused, groups.wheels) == (1, 5, 4, 3)
    assert groups.cpu_s == 55 and groups.job_wall_min_max == round(55 / 60, 1)
    # torch 2.9 is below the floor: nothing moves to the stable track
    assert stable.model_dump(exclude={"plan"}) == groups.model_dump(exclude={"plan"})


def test_stable_projection_replaces_cells_above_the_floor() -> None:
    cells = [_cell(py, torch) for py in ("3.10", "3.11", "3.12") for torch in ("2.9.1", "2.11.0", "2.14.1")]
    per_cell, groups, stable = plan_profile(cells, _tus, cores=1, concurrency=1, costs=COSTS)
    assert (per_cell.jobs, groups.jobs) == (9, 3)
    # the torch 2.9 group stays; torch 2.11 + 2.14 (6 cells) become one abi3 job: 2 CUDA TUs + 1 binding
    assert (stable.jobs, stable.wheels, stable.tus_compiled) == (2, 4, 5 + 3)
    assert stable.cpu_s == 55 + 45
    with pytest.raises(UserError, match="at least 1"):
        plan_profile(cells, _tus, cores=0, concurrency=1, costs=COSTS)


def test_release_plan_from_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--profile", "release", "--json", "--cores", "4"]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    plans = {p["plan"]: p for p in data["plans"]}
    n = data["cells"]
    assert n > 500 and plans["per-cell"]["jobs"] == n and 100 < plans["compile-groups"]["jobs"] < n / 3
    assert plans["per-cell"]["wheels"] == plans["compile-groups"]["wheels"] == n
    assert plans["per-cell"]["cpu_hours"] > plans["compile-groups"]["cpu_hours"] > plans["groups+stable"]["cpu_hours"]
    assert plans["compile-groups"]["objects_reused"] > 0 == plans["per-cell"]["objects_reused"]
    assert data["costs_machine"] == load_costs().machine
