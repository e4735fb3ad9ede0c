"""Opening a wheel file to read it: the one reader that publish, verify, repair and the user commands use.
The archive is checked whole first (``wheel.archive``: a damaged wheel is a clear error, never a
``BadZipFile`` traceback); members are then read from one open zip: the .dist-info's METADATA, WHEEL and
RECORD, the typed provenance and the shared libraries. Names and tags of the file come from
``packaging.utils.parse_wheel_filename`` (``wheel.tags``, ``wheel.name``)."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from buildtool.errors import UserError
from buildtool.wheel.archive import check_wheel_archive
from buildtool.wheel.provenance import PROVENANCE_FILE, Provenance, parse_provenance_bytes

_SHARED_LIBRARY = re.compile(r"\.so(\.\d+)*$")


class WheelReader:
    """An open wheel: ``with open_wheel_file(path) as wheel: ...``."""

    def __init__(self, path: Path, zf: zipfile.ZipFile) -> None:
        self.path = path
        self._zf = zf
        self.names: list[str] = zf.namelist()
        infos = sorted({n.split("/", 1)[0] for n in self.names if n.split("/", 1)[0].endswith(".dist-info")})
        self.dist_info: str | None = infos[0] if len(infos) == 1 else None  # a wheel has exactly one

    def __enter__(self) -> WheelReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._zf.close()

    def read(self, name: str) -> bytes:
        return self._zf.read(name)

    def entries(self) -> dict[str, bytes]:
        """Every file of the archive (RECORD included) by archive name, in archive order."""
        return {info.filename: self._zf.read(info) for info in self._zf.infolist() if not info.is_dir()}

    def info_member(self, member: str) -> str | None:
        """``<dist-info>/<member>`` when the wheel has it (METADATA, WHEEL, RECORD, the provenance)."""
        name = f"{self.dist_info}/{member}"
        return name if self.dist_info is not None and name in self.names else None

    def record_rows(self) -> list[list[str]] | None:
        """RECORD's CSV rows (None when the wheel has no RECORD)."""
        name = self.info_member("RECORD")
        return None if name is None else list(csv.reader(io.StringIO(self.read(name).decode("utf-8"))))

    def provenance(self, *, where: str | None = None) -> Provenance | None:
        """The typed provenance (None when the wheel carries none); ``ProvenanceError`` names ``where``
        (default: the member) when it cannot be read."""
        name = self.info_member(PROVENANCE_FILE)
        return None if name is None else parse_provenance_bytes(self.read(name), where=where or name)

    def shared_libraries(self) -> Iterator[tuple[str, bytes]]:
        """(archive name, bytes) of every ``.so`` / ``.so.N`` member."""
        for name in self.names:
            if not name.endswith("/") and _SHARED_LIBRARY.search(name):
                yield name, self.read(name)

    def extract(self, name: str, into: Path) -> Path:
        return Path(self._zf.extract(name, into))

    def extract_all(self, into: Path) -> None:
        self._zf.extractall(into)


def open_wheel_file(path: Path, *, check: bool = True) -> WheelReader:
    """Open ``path`` for reading. ``check``: first make sure it is a whole wheel archive (``DamagedWheel``
    names the file and the problem); without it, a file that is not a zip is a ``UserError`` all the same."""
    if check:
        check_wheel_archive(path)
    try:
        return WheelReader(path, zipfile.ZipFile(path))
    except (OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path.name}: not a readable wheel ({exc})") from None


def read_wheel_provenance(path: Path) -> Provenance | None:
    """The provenance stored in a wheel file; None when it carries none. A damaged or unreadable
    provenance raises ``ProvenanceError`` (a wheel that is not a zip: ``UserError``)."""
    with open_wheel_file(path, check=False) as wheel:
        name = wheel.info_member(PROVENANCE_FILE)
        if name is None:
            return None
        try:
            raw = wheel.read(name)
        except (OSError, zipfile.BadZipFile) as exc:
            raise UserError(f"{path.name}: not a readable wheel ({exc})") from None
    return parse_provenance_bytes(raw, where=f"{path.name}: {name}")
