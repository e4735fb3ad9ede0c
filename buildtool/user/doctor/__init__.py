"""`buildtool doctor`: the failure catalogue (data/doctor.yaml) run against an environment."""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path

from buildtool.errors import UserError, allowed_list
from buildtool.spec import yamlsrc
from buildtool.user.doctor.checks import CHECKS
from buildtool.user.doctor.context import Context, pip_cache_wheels
from buildtool.user.doctor.model import Catalogue, Finding, Report, Result, Status
from buildtool.user.envinfo import Environment, detect

__all__ = ["Catalogue", "Context", "Report", "Status", "diagnose", "load_catalogue", "run_doctor"]


@cache
def load_catalogue() -> Catalogue:
    text = resources.files("buildtool.data").joinpath("doctor.yaml").read_text(encoding="utf-8")
    doc = yamlsrc.parse(text, "buildtool/data/doctor.yaml")
    catalogue: Catalogue = yamlsrc.validate(Catalogue, doc)
    for i, entry in enumerate(catalogue.checks):
        if entry.check not in CHECKS:
            raise UserError(f'check "{entry.check}" is not a doctor check; known: {allowed_list(CHECKS)}',
                            location=doc.location(("checks", i, "check")))
    return catalogue


def diagnose(ctx: Context, only: set[str] | None = None) -> Report:
    results = []
    for entry in load_catalogue().checks:
        if only and entry.id not in only and not (set(entry.failures) & only):
            continue
        try:
            finding = CHECKS[entry.check](ctx)
        except Exception as exc:  # a broken probe must not hide the other checks
            finding = Finding(status=Status.warn, evidence=f"check crashed: {type(exc).__name__}: {exc}")
        results.append(Result(id=entry.id, failures=entry.failures, title=entry.title, status=finding.status,
                              evidence=finding.evidence, fix=finding.fix or entry.fix))
    return Report(environment=ctx.env.summary(), results=tuple(results))


def run_doctor(python: str | None = None, *, cwd: Path | None = None, env: dict[str, str] | None = None,
               only: set[str] | None = None, environment: Environment | None = None) -> Report:
    environment = environment or detect(python, env=env)
    ctx = Context(env=environment, cwd=cwd or Path.cwd(), pip_cache_wheels=pip_cache_wheels(env or dict(os.environ)))
    return diagnose(ctx, only)
