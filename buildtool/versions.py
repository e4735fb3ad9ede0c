"""Slicing version strings: the one place that knows how "2.14.1+cu130", "13.0.88", and the "130" of
a cu130 label shorten to the parts the matrix, the labels and the checks compare."""

from __future__ import annotations

from packaging.version import Version

from buildtool.errors import UserError


def major_minor(version: str) -> str:
    """"13.0.88" -> "13.0", "3.11.7" -> "3.11"; a version of one part stays as it is ("13" -> "13")."""
    parts = str(version).split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else str(version)


def torch_minor(torch: str) -> str:
    """"2.14.1+cu130" -> "2.14" (a PEP 440 version; a malformed one raises InvalidVersion)."""
    v = Version(torch)
    return f"{v.major}.{v.minor}"


def cuda_major(cuda: str) -> str:
    """"13.0" -> "13"."""
    return cuda.split(".", 1)[0]


def split_cuda(cuda: str) -> tuple[int, int]:
    """"13.0" or "13.0.88" -> (13, 0); a malformed version is the user's mistake."""
    parts = cuda.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise UserError(f'CUDA version "{cuda}" is not of the form X.Y (e.g. 13.0)') from None


def cuda_from_tag(digits: str) -> str:
    """'124' -> '12.4', '130' -> '13.0', '118' -> '11.8', '12' -> '12' (major only, upstream style)."""
    if len(digits) <= 2:
        return str(int(digits))
    return f"{int(digits[:2])}.{digits[2:]}"
