"""Check functions, one per diagnosis. data/doctor.yaml names them and says which failure (F-id) each one
diagnoses and how to fix it; a function only looks and reports what it saw. Importing this package
registers every check in CHECKS."""

from __future__ import annotations

from buildtool.user.doctor.checks import (  # noqa: F401 - importing registers the checks
    environment,
    gpu,
    installed,
    loader,
    python_os,
    toolchain,
    torch_abi,
)
from buildtool.user.doctor.checks.base import CHECKS, Check

__all__ = ["CHECKS", "Check"]
