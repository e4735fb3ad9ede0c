"""Known-bad dependency pairs (data/known_bad.yaml): recipes bound them, the doctor reports them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from buildtool.spec.knownbad import installed_breaks, load_known_bad, unbounded
from buildtool.spec.recipe import load_recipes
from buildtool.user.doctor import Context, diagnose
from buildtool.user.doctor.model import Status
from buildtool.user.envinfo import DistInfo, Environment, HostInfo, probe_python

REPO = Path(__file__).resolve().parents[1]


def test_every_recipe_bounds_what_is_known_to_break() -> None:
    recipes = load_recipes(REPO / "recipes")
    checked = 0
    for recipe in recipes.values():
        for version in recipe.versions:
            assert unbounded(version.requires) == [], (recipe.name, version.version)
            checked += 1
    assert checked >= 8


def test_tilelang_pair_is_the_measured_one() -> None:
    (pair,) = [p for p in load_known_bad().pairs if p.package == "tilelang"]
    assert pair.newest_working == "0.1.11" and pair.broken_range("0.1.15.post2") is not None
    assert pair.broken_range("0.1.12") is not None and pair.broken_range("0.1.11") is None
    measured = REPO / pair.measured.split(":")[0]
    assert measured.exists(), measured


@pytest.mark.parametrize(("requires", "open_"), [
    (["tilelang==0.1.8"], True),                                     # tilelang's own ~=0.1 lets 0.1.15 in
    (["tilelang==0.1.8", "apache-tvm-ffi<=0.1.12"], True),           # 0.1.12 is broken too
    (["tilelang==0.1.8", "apache-tvm-ffi>=0.1.2,<=0.1.11"], False),
    (["tilelang==0.1.8; sys_platform != 'win32'", "apache-tvm-ffi<=0.1.9; sys_platform != 'win32'"], False),
    (["tilelang==0.1.9"], False),                                    # the pair is about 0.1.8
    (["einops"], False),
])
def test_unbounded(requires: list[str], open_: bool) -> None:
    assert bool(unbounded(requires)) is open_


def test_installed_breaks() -> None:
    (msg,) = installed_breaks({"tilelang": "0.1.8", "apache-tvm-ffi": "0.1.15.post2"})
    assert "ValueError" in msg and "state-spaces/mamba#986" in msg
    assert installed_breaks({"tilelang": "0.1.8", "apache-tvm-ffi": "0.1.11"}) == []
    assert installed_breaks({"apache-tvm-ffi": "0.1.15.post2"}) == []


@pytest.mark.parametrize(("tvm", "status"), [("0.1.15.post2", Status.fail), ("0.1.12", Status.fail),
                                              ("0.1.11", Status.ok)])
def test_doctor_known_bad_pairs_fixture(tmp_path: Path, tvm: str, status: Status) -> None:
    """Recorded versions (installing tilelang's real 43 MB wheel and its z3 dependency is the measurement's
    job, scripts/measure_known_bad.py, not the unit suite's)."""
    base = probe_python(sys.executable, with_torch=False)
    dists = {"tilelang": DistInfo(version="0.1.8", location="/nowhere"),
             "apache-tvm-ffi": DistInfo(version=tvm, location="/nowhere")}
    ctx = Context(env=Environment(python=base.model_copy(update={"dists": dists}), host=HostInfo()), cwd=tmp_path)
    (r,) = diagnose(ctx, {"known-bad-pairs"}).results
    assert r.status == status, r.evidence
