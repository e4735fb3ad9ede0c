"""What verification needs from ELF shared libraries: DT_NEEDED, DT_SONAME, the versioned symbols they
require (GLIBC_2.28, GLIBCXX_3.4.25, ...) and the CUDA fatbin entries (cubin / PTX per arch). The ELF
part comes from buildtool.binary.elf (pyelftools); the fatbin parsing is here. No readelf, objdump or
cuobjdump needed, so the static checks run on any machine.

Fatbin layout (as nvcc writes it into `.nv_fatbin`): a container header `<I magic 0xBA55ED50, H version,
H header size, Q payload size>` followed by entries `<H kind (1 PTX, 2 ELF), H version, I header size,
Q payload size, ...>` with the SM version (e.g. 90) as a u32 at entry offset 28. Entry headers stay
uncompressed when the payload is compressed (-Xfatbin=-compress-all), so the arch list is always
readable. Cross-checked against cuobjdump in tests.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from buildtool.binary import elf as elfinfo

ELF_MAGIC = b"\x7fELF"
FATBIN_MAGIC = 0xBA55ED50
FATBIN_SECTION = ".nv_fatbin"


@dataclass(frozen=True)
class FatbinEntry:
    kind: str  # "elf" (cubin) or "ptx"
    arch: int  # 90 for sm_90 / compute_90


@dataclass(frozen=True)
class ElfInfo:
    needed: tuple[str, ...]
    soname: str | None
    version_needs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # library -> version names
    fatbin: tuple[FatbinEntry, ...] = ()
    has_fatbin_section: bool = False
    undefined: tuple[str, ...] = ()  # dynamic symbols the library needs from others

    def max_version(self, prefix: str) -> tuple[int, ...] | None:
        """Highest required symbol version with this prefix, e.g. ('GLIBC_') -> (2, 34)."""
        best: tuple[int, ...] | None = None
        for names in self.version_needs.values():
            for name in names:
                v = parse_symbol_version(name, prefix)
                if v is not None and (best is None or v > best):
                    best = v
        return best

    @property
    def cubin_archs(self) -> tuple[int, ...]:
        return tuple(sorted({e.arch for e in self.fatbin if e.kind == "elf"}))

    @property
    def ptx_archs(self) -> tuple[int, ...]:
        return tuple(sorted({e.arch for e in self.fatbin if e.kind == "ptx"}))


def parse_symbol_version(name: str, prefix: str) -> tuple[int, ...] | None:
    """'GLIBC_2.2.5' with prefix 'GLIBC_' -> (2, 2, 5); other prefixes (GLIBC_PRIVATE too) -> None."""
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix):]
    if not re.fullmatch(r"\d+(\.\d+)*", rest):
        return None
    return tuple(int(p) for p in rest.split("."))


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def read_elf(data: bytes) -> ElfInfo:
    """Parse an ELF shared library (buildtool.binary.elf) and the fatbin in its `.nv_fatbin` section.
    Raises ValueError when the bytes are not a readable ELF."""
    if not is_elf(data):
        raise ValueError("not an ELF file")
    info = elfinfo.read_elf_bytes(data, sections=(FATBIN_SECTION,))
    if info is None:
        raise ValueError("pyelftools could not parse it")
    fat = info.sections.get(FATBIN_SECTION)
    return ElfInfo(needed=info.needed, soname=info.soname, version_needs=info.version_needs,
                   fatbin=tuple(read_fatbin(fat)) if fat is not None else (), has_fatbin_section=fat is not None,
                   undefined=info.undefined)


def read_fatbin(blob: bytes) -> list[FatbinEntry]:
    """All entries of all fatbin containers in a `.nv_fatbin` section (containers are 8-byte aligned)."""
    out: list[FatbinEntry] = []
    pos = 0
    magic_bytes = struct.pack("<I", FATBIN_MAGIC)
    while True:
        pos = blob.find(magic_bytes, pos)
        if pos < 0 or pos + 16 > len(blob):
            return out
        _magic, _version, header_size, payload_size = struct.unpack_from("<IHHQ", blob, pos)
        p, end = pos + header_size, min(pos + header_size + payload_size, len(blob))
        while p + 32 <= end:
            kind, _ev, entry_header, entry_payload = struct.unpack_from("<HHIQ", blob, p)
            arch, = struct.unpack_from("<I", blob, p + 28)
            if kind in (1, 2):
                out.append(FatbinEntry("ptx" if kind == 1 else "elf", arch))
            if entry_header == 0:
                break
            p += entry_header + entry_payload
        pos = max(end, pos + 4)
