"""Read what a shared object needs, without loading it: undefined symbols, DT_NEEDED, symbol versions.

Used by `index` (min glibc of a wheel) and `doctor` (F01/F02 torch symbols, F03 cudart, F10/F11
glibc/libstdc++, F38 machine), `repair` (GLIBC/GLIBCXX ceilings) and `verify` (DT_NEEDED, soname, the
`.nv_fatbin` section's bytes). Loading a mismatched .so can crash; reading it cannot.
"""

from __future__ import annotations

import io
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection
from elftools.elf.sections import SymbolTableSection
from packaging.version import Version

MACHINES = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64", "EM_386": "i686", "EM_PPC64": "ppc64le"}


@dataclass(frozen=True)
class ElfInfo:
    machine: str
    needed: tuple[str, ...]
    undefined: tuple[str, ...]
    version_needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    soname: str | None = None
    # Contents of the sections asked for by name (e.g. `.nv_fatbin` for verify); absent when the file lacks one.
    sections: dict[str, bytes] = field(default_factory=dict)

    def max_version(self, prefix: str) -> str | None:
        """Highest `GLIBC_x.y` / `GLIBCXX_3.4.z` requirement, without the prefix."""
        found = [v[len(prefix):] for vs in self.version_needs.values() for v in vs
                 if v.startswith(prefix) and re.fullmatch(r"[\d.]+", v[len(prefix):])]
        return max(found, key=Version) if found else None

    @property
    def max_glibc(self) -> str | None:
        return self.max_version("GLIBC_")

    @property
    def max_glibcxx(self) -> str | None:
        return self.max_version("GLIBCXX_")


def _read(stream: IO[bytes], sections: Collection[str] = ()) -> ElfInfo:
    elf = ELFFile(stream)
    needed: list[str] = []
    soname: str | None = None
    kept: dict[str, bytes] = {}
    undefined: list[str] = []
    needs: dict[str, tuple[str, ...]] = {}
    for sec in elf.iter_sections():
        if sec.name in sections:
            kept[sec.name] = sec.data()
        if isinstance(sec, DynamicSection):
            for tag in sec.iter_tags():
                if tag.entry.d_tag == "DT_NEEDED":
                    needed.append(str(getattr(tag, "needed", "")))
                elif tag.entry.d_tag == "DT_SONAME":
                    soname = str(getattr(tag, "soname", ""))
        elif isinstance(sec, SymbolTableSection) and sec.name == ".dynsym":
            undefined += [s.name for s in sec.iter_symbols() if s.name and s["st_shndx"] == "SHN_UNDEF"]
        elif isinstance(sec, GNUVerNeedSection):
            for verneed, auxes in sec.iter_versions():
                needs[str(verneed.name)] = tuple(str(a.name) for a in auxes)
    machine = MACHINES.get(elf["e_machine"], str(elf["e_machine"]))
    return ElfInfo(machine=machine, needed=tuple(needed), undefined=tuple(sorted(set(undefined))), version_needs=needs,
                   soname=soname, sections=kept)


def read_elf(path: Path, sections: Collection[str] = ()) -> ElfInfo | None:
    """None when the file is not ELF (e.g. a Windows .pyd). `sections`: names whose bytes to keep."""
    try:
        with open(path, "rb") as fh:
            return _read(fh, sections)
    except (ELFError, OSError):
        return None


def read_elf_bytes(data: bytes, sections: Collection[str] = ()) -> ElfInfo | None:
    try:
        return _read(io.BytesIO(data), sections)
    except ELFError:
        return None


@cache
def exported_symbols(path: Path) -> frozenset[str]:
    """Defined dynamic symbols of a library (what it can satisfy)."""
    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            sec = elf.get_section_by_name(".dynsym")
            if not isinstance(sec, SymbolTableSection):
                return frozenset()
            return frozenset(s.name for s in sec.iter_symbols() if s.name and s["st_shndx"] != "SHN_UNDEF")
    except (ELFError, OSError):
        return frozenset()


@cache
def defined_versions(path: Path) -> frozenset[str]:
    """Version names a library defines (`GLIBCXX_3.4.30`, ...)."""
    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            for sec in elf.iter_sections():
                if isinstance(sec, GNUVerDefSection):
                    return frozenset(aux.name for _, auxes in sec.iter_versions() for aux in auxes)
    except (ELFError, OSError):
        pass
    return frozenset()


def exports_of(libs: Iterable[Path]) -> frozenset[str]:
    out: set[str] = set()
    for lib in libs:
        out |= exported_symbols(lib)
    return frozenset(out)


# Mangled-name fragments that belong to libtorch / c10 (what a torch-version mismatch leaves undefined).
TORCH_SYMBOL = re.compile(r"^_ZN(K)?(3c10|2at|5torch|3c1010|6caffe2)|^_ZN3c10|c10|at6native|torch3jit")


def torch_symbols(symbols: Iterable[str]) -> list[str]:
    return [s for s in symbols if TORCH_SYMBOL.search(s)]
