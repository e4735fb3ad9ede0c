"""A small pure-Python reader for what verification needs from ELF shared libraries: DT_NEEDED, the
versioned symbols they require (GLIBC_2.28, GLIBCXX_3.4.25, ...) and the CUDA fatbin entries (cubin /
PTX per arch). No readelf, objdump or cuobjdump needed, so the static checks run on any machine.

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

ELF_MAGIC = b"\x7fELF"
FATBIN_MAGIC = 0xBA55ED50
_DT_NEEDED, _DT_SONAME = 1, 14
_SHT_DYNAMIC, _SHT_GNU_VERNEED = 6, 0x6FFFFFFE


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


def _cstr(blob: bytes, offset: int) -> str:
    end = blob.find(b"\0", offset)
    return blob[offset: end if end >= 0 else len(blob)].decode("utf-8", "replace")


def read_elf(data: bytes) -> ElfInfo:
    """Parse a 64-bit little-endian ELF (x86_64 / aarch64 Linux). Raises ValueError for anything else."""
    if not is_elf(data):
        raise ValueError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ValueError("only 64-bit little-endian ELF is supported")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = []
    for i in range(shnum):
        name, stype, _flags, _addr, off, size, link, info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + i * shentsize)
        sections.append((name, stype, off, size, link, info, entsize))
    shstr_off, shstr_size = sections[shstrndx][2], sections[shstrndx][3]
    shstr = data[shstr_off: shstr_off + shstr_size]
    named = {_cstr(shstr, s[0]): s for s in sections}

    needed: list[str] = []
    soname = None
    for _name, stype, off, size, link, _info, _entsize in sections:
        if stype != _SHT_DYNAMIC:
            continue
        strtab = data[sections[link][2]: sections[link][2] + sections[link][3]]
        for pos in range(off, off + size, 16):
            tag, val = struct.unpack_from("<qQ", data, pos)
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                needed.append(_cstr(strtab, val))
            elif tag == _DT_SONAME:
                soname = _cstr(strtab, val)

    needs: dict[str, tuple[str, ...]] = {}
    for _name, stype, off, _size, link, count, _entsize in sections:
        if stype != _SHT_GNU_VERNEED:
            continue
        strtab = data[sections[link][2]: sections[link][2] + sections[link][3]]
        pos = off
        for _ in range(count):
            _ver, cnt, file_off, aux, nxt = struct.unpack_from("<HHIII", data, pos)
            names = []
            apos = pos + aux
            for _ in range(cnt):
                _hash, _flags, _other, name_off, anext = struct.unpack_from("<IHHII", data, apos)
                names.append(_cstr(strtab, name_off))
                apos += anext
            needs[_cstr(strtab, file_off)] = tuple(names)
            if nxt == 0:
                break
            pos += nxt

    fat = named.get(".nv_fatbin")
    entries: tuple[FatbinEntry, ...] = ()
    if fat is not None:
        entries = tuple(read_fatbin(data[fat[2]: fat[2] + fat[3]]))
    return ElfInfo(needed=tuple(needed), soname=soname, version_needs=needs, fatbin=entries,
                   has_fatbin_section=fat is not None)


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
