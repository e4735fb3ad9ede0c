"""The GPU verification record: `buildtool verify` writes one per wheel whose GPU checks ran and whose every
check passed, ``<cache>/verified/<wheel sha256>.json``; `buildtool build` reads it to report a wheel with
the same bytes as ``verified`` instead of ``verified-static``. Keyed by sha256, so a rebuilt wheel with
identical bytes is verified too and one with any other byte is not."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from buildtool import __version__
from buildtool.host import default_cache_dir
from buildtool.model import Frozen
from buildtool.source.fetch import file_sha256
from buildtool.verify.models import CheckResult, Report

# How far a wheel `buildtool build` wrote or resumed was verified.
Verification = Literal["verified-static", "verified"]

RECORDS_SUBDIR = "verified"


class GpuRun(Frozen):
    """One wheel group's GPU run: the wheels (file names) it installed and the rows the worker returned."""

    label: str
    wheels: tuple[str, ...]
    rows: tuple[CheckResult, ...]


class VerifiedRecord(Frozen):
    """A wheel whose GPU checks ran on ``gpu`` and, with every other check, did not fail."""

    schema_version: Literal[1] = 1
    wheel: str
    sha256: str
    verified_at: str
    gpu: str | None
    gpu_arch: str | None
    driver: str | None
    torch: str | None
    torch_cuda: str | None
    host_python: str
    platform: str
    buildtool: str
    counts: dict[str, int]  # pass / fail / skip over the wheel's rows (its group's rows included)


def records_dir(cache: Path | None = None) -> Path:
    return (cache if cache is not None else default_cache_dir()) / RECORDS_SUBDIR


def wheel_rows(wheel: str, report: Report, run: GpuRun) -> list[CheckResult]:
    """Every row about ``wheel``: its own and its group's (a group's smoke test exercises all its wheels)."""
    return [r for r in report.results if r.wheel in (wheel, run.label)]


def verified_record(wheel: str, sha256: str, report: Report, run: GpuRun) -> VerifiedRecord | None:
    """The record for ``wheel`` when the GPU run passed at least one of its checks (not all skipped) and no
    row about it failed; else None."""
    rows = wheel_rows(wheel, report, run)
    gpu_passed = any(r.result == "pass" and r.wheel in (wheel, run.label) for r in run.rows)
    if wheel not in run.wheels or not gpu_passed or any(r.failed for r in rows):
        return None
    counts = {"pass": 0, "fail": 0, "skip": 0}
    for r in rows:
        counts[r.result] += 1
    env = report.environment
    return VerifiedRecord(wheel=wheel, sha256=sha256, verified_at=env.date, gpu=env.gpu, gpu_arch=env.gpu_arch,
                          driver=env.driver, torch=env.torch, torch_cuda=env.torch_cuda, host_python=env.host_python,
                          platform=env.platform, buildtool=__version__, counts=counts)


def write_records(report: Report, runs: Sequence[GpuRun], wheels: Sequence[Path], directory: Path) -> list[Path]:
    """Write a record for each of ``wheels`` that passed on the GPU (atomic replace); the paths written."""
    by_name = {w.name: w for w in wheels}
    written: list[Path] = []
    for run in runs:
        for name in run.wheels:
            path = by_name.get(name)
            if path is None:
                continue
            record = verified_record(name, file_sha256(path), report, run)
            if record is None:
                continue
            directory.mkdir(parents=True, exist_ok=True)
            target = directory / f"{record.sha256}.json"
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".partial-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(json.dumps(record.model_dump(mode="json"), indent=2) + "\n")
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            written.append(target)
    return written


def read_record(sha256: str, directory: Path | None = None) -> VerifiedRecord | None:
    """The record for a wheel with these bytes; None when there is none (or it is unreadable: a wheel is
    then reported as verified-static, never as verified on a record nobody can read)."""
    path = (directory if directory is not None else records_dir()) / f"{sha256}.json"
    try:
        record = VerifiedRecord.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None
    return record if record.sha256 == sha256 else None


def verification_status(checks: Mapping[str, str] | None, sha256: str | None,
                         record: VerifiedRecord | None) -> Verification | None:
    """How far a wheel was verified: None without static checks; ``verified`` when a GPU record exists for
    the same bytes; else ``verified-static``."""
    if checks is None:
        return None
    if record is not None and sha256 is not None and record.sha256 == sha256:
        return "verified"
    return "verified-static"
