"""The local source mirror some tests read (git snapshots as OWNER+NAME/repo, sdists by file name): only where
BUILDTOOL_SOURCE_MIRROR names one; those tests skip cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path


def source_mirror() -> Path | None:
    raw = os.environ.get("BUILDTOOL_SOURCE_MIRROR")
    return Path(raw) if raw and Path(raw).is_dir() else None
