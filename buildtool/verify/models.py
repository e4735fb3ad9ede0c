"""The verification report: one row per (wheel, check), plus the machine it ran on."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from buildtool.model import Frozen

Outcome = Literal["pass", "fail", "skip"]


class CheckResult(Frozen):
    wheel: str = Field(description="wheel file name, or a group label such as 'mamba-ssm 2.3.2.post1 + causal-conv1d 1.7.0'")
    check: str
    result: Outcome
    detail: str = ""
    numbers: dict[str, Any] = Field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.result == "fail"


def passed(wheel: str, check: str, detail: str = "", **numbers: Any) -> CheckResult:
    return CheckResult(wheel=wheel, check=check, result="pass", detail=detail, numbers=numbers)


def failed(wheel: str, check: str, detail: str, **numbers: Any) -> CheckResult:
    return CheckResult(wheel=wheel, check=check, result="fail", detail=detail, numbers=numbers)


def skipped(wheel: str, check: str, detail: str, **numbers: Any) -> CheckResult:
    return CheckResult(wheel=wheel, check=check, result="skip", detail=detail, numbers=numbers)


class Environment(Frozen):
    """Where the checks ran: what a reader needs to trust (or reproduce) the numbers."""

    date: str
    host_python: str
    platform: str
    gpu: str | None = None
    gpu_arch: str | None = None
    driver: str | None = None
    torch: str | None = None
    torch_cuda: str | None = None
    cuobjdump: str | None = None
    note: str = ""


class Report(Frozen):
    environment: Environment
    wheels: tuple[str, ...]
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.results)

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "skip": 0}
        for r in self.results:
            out[r.result] += 1
        return out
