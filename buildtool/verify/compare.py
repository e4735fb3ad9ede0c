"""One comparison rule for every kernel result: max|actual - expected| <= atol + rtol * max|expected|,
with the tolerances of tolerances.yaml for the input dtype, and a message that says what failed by how much."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from buildtool.verify.policy import load_tolerances

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class Comparison:
    name: str
    ok: bool
    max_abs: float
    peak: float
    allowed: float
    message: str

    @property
    def ratio(self) -> float:
        """max error / allowed error: < 1 passes; how close to the edge a pass was."""
        return self.max_abs / self.allowed if self.allowed > 0 else math.inf


def compare(name: str, actual: Tensor | None, expected: Tensor, dtype: str, kind: Literal["fwd", "bwd", "smoke"] = "fwd") -> Comparison:
    """Compare a kernel's tensor with the reference's (any dtype; both cast to float64 on the CPU)."""
    import torch

    tol = load_tolerances().get(kind, dtype)
    exp = expected.detach().to(torch.float64).cpu()
    peak = float(exp.abs().max()) if exp.numel() else 0.0
    allowed = tol.atol + tol.rtol * peak
    if actual is None:
        return Comparison(name, False, math.inf, peak, allowed, f"{name}: the kernel returned no tensor")
    act = actual.detach().to(torch.float64).cpu()
    if act.shape != exp.shape:
        return Comparison(name, False, math.inf, peak, allowed,
                          f"{name}: shape {tuple(act.shape)} != reference {tuple(exp.shape)}")
    if not bool(torch.isfinite(act).all()):
        bad = int((~torch.isfinite(act)).sum())
        return Comparison(name, False, math.inf, peak, allowed, f"{name}: {bad} non-finite values (NaN/Inf)")
    max_abs = float((act - exp).abs().max()) if act.numel() else 0.0
    ok = max_abs <= allowed
    verdict = "<=" if ok else ">"
    message = (f"{name}: max|Δ| {max_abs:.3g} {verdict} allowed {allowed:.3g} "
               f"(atol {tol.atol:g} + rtol {tol.rtol:g} × max|ref| {peak:.3g}, {dtype} {kind})")
    return Comparison(name, ok, max_abs, peak, allowed, message)
