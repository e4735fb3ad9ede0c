"""The CUDA fatbin in a module's ``.nv_fatbin`` section: which cubins (sm_XY) and PTX (compute_XY) it
carries and how many bytes each takes. Read directly, so no cuobjdump is needed (cross-checked against
cuobjdump in the tests).

Layout (as nvcc writes it): a container header ``<I magic 0xBA55ED50, H version, H header size, Q payload
size>`` followed by entries ``<H kind (1 PTX, 2 ELF), H version, I header size, Q payload size, ...>`` with
the SM version (e.g. 90) as a u32 at entry offset 28 and, in headers of 64 bytes or more, the uncompressed
size as a u64 at offset 56. Entry headers stay uncompressed when the payload is compressed
(-Xfatbin=-compress-all), so the arch list is always readable. Containers are 8-byte aligned.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

FATBIN_MAGIC = 0xBA55ED50
FATBIN_SECTION = ".nv_fatbin"


@dataclass(frozen=True)
class FatbinEntry:
    kind: str  # "elf" (cubin) or "ptx"
    arch: int  # 90 for sm_90 / compute_90
    stored_size: int = 0  # entry header + payload as stored (compressed when the fatbin is)
    raw_size: int = 0  # payload before compression (0 when the header does not record it)

    @property
    def target(self) -> str:
        return f"{'compute' if self.kind == 'ptx' else 'sm'}_{self.arch}"


def read_fatbin(blob: bytes) -> list[FatbinEntry]:
    """All entries of all fatbin containers in a ``.nv_fatbin`` section."""
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
            raw = struct.unpack_from("<Q", blob, p + 56)[0] if entry_header >= 64 else 0
            if kind in (1, 2):
                out.append(FatbinEntry("ptx" if kind == 1 else "elf", arch,
                                       stored_size=entry_header + entry_payload, raw_size=raw or entry_payload))
            if entry_header == 0:
                break
            p += entry_header + entry_payload
        pos = max(end, pos + 4)


def device_code_sizes(entries: Iterable[FatbinEntry], *, uncompressed: bool = False) -> dict[str, int]:
    """Bytes each target takes, as stored (compressed when the fatbin is) or, with ``uncompressed``, before
    compression (the entry header records that size): ``{"sm_90": ..., "compute_90": ...}``."""
    sizes: dict[str, int] = {}
    for entry in entries:
        size = entry.raw_size if uncompressed else entry.stored_size
        sizes[entry.target] = sizes.get(entry.target, 0) + size
    return dict(sorted(sizes.items()))
