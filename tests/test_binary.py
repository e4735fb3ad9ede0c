"""binary: the one ELF reader and the one fatbin parser (real objects are cross-checked against objdump and
cuobjdump in test_wheel / test_verify_static / test_compile; here the layout edge cases, byte by byte)."""

from __future__ import annotations

import struct

from buildtool.binary.elf import ElfInfo, max_versions
from buildtool.binary.fatbin import FATBIN_MAGIC, FATBIN_SECTION, device_code_sizes, read_fatbin


def _entry(kind: int, arch: int, payload: bytes, raw: int | None = None) -> bytes:
    """One fatbin entry: a 64-byte header (kind, version, header size, payload size, arch at 28, raw size
    at 56) and its payload."""
    header = bytearray(64)
    struct.pack_into("<HHIQ", header, 0, kind, 0x0101, 64, len(payload))
    struct.pack_into("<I", header, 28, arch)
    struct.pack_into("<Q", header, 56, raw if raw is not None else 0)
    return bytes(header) + payload


def _container(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", FATBIN_MAGIC, 1, 16, len(body)) + body


def test_entries_of_every_container() -> None:
    blob = _container(_entry(2, 90, b"x" * 40, raw=100), _entry(1, 90, b"p" * 8)) + b"\0" * 8 + _container(
        _entry(2, 80, b"y" * 24))
    entries = read_fatbin(blob)
    assert [(e.kind, e.arch, e.target) for e in entries] == [("elf", 90, "sm_90"), ("ptx", 90, "compute_90"),
                                                            ("elf", 80, "sm_80")]
    assert device_code_sizes(entries) == {"compute_90": 64 + 8, "sm_80": 64 + 24, "sm_90": 64 + 40}
    # uncompressed: the size the header records, else the payload itself
    assert device_code_sizes(entries, uncompressed=True) == {"compute_90": 8, "sm_80": 24, "sm_90": 100}


def test_truncated_or_foreign_bytes_give_what_is_readable() -> None:
    assert read_fatbin(b"") == [] and read_fatbin(b"no fatbin here") == []
    whole = _container(_entry(2, 90, b"x" * 40))
    assert read_fatbin(whole[:20]) == []  # header claims more than is there: no entry invented


def test_elf_info_reads_fatbin_and_symbol_versions_once() -> None:
    info = ElfInfo(machine="x86_64", needed=("libc.so.6",), undefined=(),
                   version_needs={"libc.so.6": ("GLIBC_2.2.5", "GLIBC_2.34", "GLIBC_PRIVATE"),
                                  "libstdc++.so.6": ("GLIBCXX_3.4.9", "GLIBCXX_3.4.30", "CXXABI_1.3.11")},
                   sections={FATBIN_SECTION: _container(_entry(2, 90, b"x"), _entry(1, 120, b"p"))})
    assert info.has_fatbin_section and info.cubin_archs == (90,) and info.ptx_archs == (120,)
    assert info.max_glibc == "2.34" and info.max_glibcxx == "3.4.30"  # 3.4.30 > 3.4.9: versions, not text
    assert max_versions([info]) == {"CXXABI": "1.3.11", "GLIBC": "2.34", "GLIBCXX": "3.4.30"}
    bare = ElfInfo(machine="x86_64", needed=(), undefined=())
    assert not bare.has_fatbin_section and bare.fatbin == () and bare.max_glibc is None
