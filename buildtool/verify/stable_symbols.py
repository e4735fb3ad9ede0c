"""What a LibTorch stable-ABI library may take from outside: the one owner of these rules, used by the wheel
check (``buildtool.verify.stableabi``) and by ``scripts/stable_abi_check.py``. Pure and standard-library only,
so the script imports it next to any torch without buildtool's dependencies installed.

- torch only through the C shim (``aoti_torch_*``, ``torch_*``): a mangled ``c10::`` / ``at::`` / ``torch::`` /
  ``caffe2::`` symbol (function, method, vtable, typeinfo) changes between torch minors;
- no pybind11 and no CPython API: the library is loaded by ``torch.ops.load_library``, not imported;
- no NEEDED libtorch_python or libpython, which would tie it to one torch / one CPython;
- the rest (libc, libstdc++, libgcc, the CUDA runtime) is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

SymbolKind = Literal["c_shim", "torch_cxx", "pybind11", "python", "other"]

#: NEEDED entries a stable-ABI library must not have.
FORBIDDEN_NEEDED = re.compile(r"^(libtorch_python\.so|libpython\d.*)")
#: The C shim: the only torch symbols a stable library may use.
C_SHIM = re.compile(r"^(aoti_torch_|torch_)\w+$")
# Itanium mangling of a name nested in a namespace: _ZN (cv/ref qualifiers) or the vtable / typeinfo /
# typeinfo-name prefixes _ZTV / _ZTI / _ZTS followed by N.
_NESTED = r"^_Z(?:N[KVrRO]*|T[VIS]N)"
#: Mangled C++ symbols of torch's own namespaces.
TORCH_CXX = re.compile(_NESTED + r"(?:2at|3c10|5torch|6caffe2)")
PYBIND11 = re.compile(_NESTED + r"8pybind11")
#: The CPython API (Py_*, PyLong_*, _Py_*).
PYTHON_API = re.compile(r"^_?Py[A-Z_]")

FORBIDDEN_KINDS: tuple[SymbolKind, ...] = ("torch_cxx", "pybind11", "python")


def plain(symbol: str) -> str:
    """The symbol without its version (``memcpy@GLIBC_2.14`` -> ``memcpy``)."""
    return symbol.split("@", 1)[0]


def symbol_kind(symbol: str) -> SymbolKind:
    name = plain(symbol)
    if TORCH_CXX.match(name):
        return "torch_cxx"
    if PYBIND11.match(name):
        return "pybind11"
    if PYTHON_API.match(name):
        return "python"
    if C_SHIM.match(name):
        return "c_shim"
    return "other"


def by_kind(symbols: Iterable[str]) -> dict[SymbolKind, list[str]]:
    """Undefined symbols grouped by kind (versions stripped), in the given order."""
    groups: dict[SymbolKind, list[str]] = {"c_shim": [], "torch_cxx": [], "pybind11": [], "python": [], "other": []}
    for s in symbols:
        groups[symbol_kind(s)].append(plain(s))
    return groups


def classify(symbols: Iterable[str]) -> dict[str, list[str]]:
    """The C shim, the forbidden (torch C++, pybind11, CPython) and the rest (libc, libstdc++, CUDA runtime)."""
    groups: dict[str, list[str]] = {"c_shim": [], "forbidden": [], "other": []}
    for s in symbols:
        kind = symbol_kind(s)
        groups["forbidden" if kind in FORBIDDEN_KINDS else kind].append(plain(s))
    return groups


def forbidden_needed(needed: Iterable[str]) -> list[str]:
    return [n for n in needed if FORBIDDEN_NEEDED.match(n)]
