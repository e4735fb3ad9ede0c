"""Doctor data: the catalogue entry (from data/doctor.yaml), a check's finding, and the report."""

from __future__ import annotations

from enum import Enum
from typing import Any

from buildtool.model import Frozen


class Status(str, Enum):
    ok = "ok"
    skip = "skip"
    info = "info"
    warn = "warn"
    fail = "fail"

    @property
    def rank(self) -> int:
        return ("ok", "skip", "info", "warn", "fail").index(self.value)


# Exit code by worst status: nothing to act on -> 0, warnings -> 1, failures -> 2.
EXIT_CODES = {Status.ok: 0, Status.skip: 0, Status.info: 0, Status.warn: 1, Status.fail: 2}


class Entry(Frozen):
    """One row of the catalogue: which failure it diagnoses, with which check function, and the fix."""

    id: str
    failures: tuple[str, ...]
    check: str
    title: str
    fix: str


class Catalogue(Frozen):
    version: int
    checks: tuple[Entry, ...]


class Finding(Frozen):
    """What a check function returns: status, the evidence it saw, and optionally a more specific fix."""

    status: Status
    evidence: str
    fix: str | None = None


class Result(Frozen):
    id: str
    failures: tuple[str, ...]
    title: str
    status: Status
    evidence: str
    fix: str


class Report(Frozen):
    environment: dict[str, Any]
    results: tuple[Result, ...]

    @property
    def worst(self) -> Status:
        return max((r.status for r in self.results), key=lambda s: s.rank, default=Status.ok)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.worst]

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for r in self.results:
            out[r.status.value] += 1
        return out
