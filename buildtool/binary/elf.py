"""Read what a shared object needs, without loading it: undefined symbols, DT_NEEDED, symbol versions,
and the CUDA fatbin it carries (binary.fatbin). The one ELF reader of the project.

Used by `index` (min glibc of a wheel) and `doctor` (F01/F02 torch symbols, F03 cudart, F10/F11
glibc/libstdc++, F38 machine), `repair` (GLIBC/GLIBCXX ceilings), `verify` (DT_NEEDED, soname, symbol
versions, archs) and `compile` (device code sizes). Loading a mismatched .so can crash; reading it cannot.
"""

from __future__ import annotations

import io
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import IO

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection
from elftools.elf.sections import SymbolTableSection
from packaging.version import Version

from buildtool.binary.fatbin import FATBIN_SECTION, FatbinEntry, read_fatbin

ELF_MAGIC = b"\x7fELF"
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
        return max_versions([self], (prefix.rstrip("_"),)).get(prefix.rstrip("_"))

    @property
    def max_glibc(self) -> str | None:
        return self.max_version("GLIBC_")

    @property
    def max_glibcxx(self) -> str | None:
        return self.max_version("GLIBCXX_")

    @property
    def has_fatbin_section(self) -> bool:
        return FATBIN_SECTION in self.sections

    @cached_property
    def fatbin(self) -> tuple[FatbinEntry, ...]:
        """The fatbin's entries (read with ``sections=(FATBIN_SECTION,)``; empty otherwise)."""
        blob = self.sections.get(FATBIN_SECTION)
        return tuple(read_fatbin(blob)) if blob is not None else ()

    @property
    def cubin_archs(self) -> tuple[int, ...]:
        return tuple(sorted({e.arch for e in self.fatbin if e.kind == "elf"}))

    @property
    def ptx_archs(self) -> tuple[int, ...]:
        return tuple(sorted({e.arch for e in self.fatbin if e.kind == "ptx"}))


_NUMBER = re.compile(r"\d+(\.\d+)*")


def max_versions(infos: Iterable[ElfInfo], families: Collection[str] | None = None) -> dict[str, str]:
    """The highest needed version per family over several libraries (GLIBC_2.34 -> {"GLIBC": "2.34"});
    names that carry no number (GLIBC_PRIVATE) do not count. ``families`` limits which are looked at."""
    best: dict[str, tuple[Version, str]] = {}
    for info in infos:
        for versions in info.version_needs.values():
            for item in versions:
                family, _, number = item.partition("_")
                if (families is not None and family not in families) or not _NUMBER.fullmatch(number):
                    continue
                v = Version(number)
                if family not in best or v > best[family][0]:
                    best[family] = (v, number)
    return {k: text for k, (_, text) in sorted(best.items())}


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


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


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
