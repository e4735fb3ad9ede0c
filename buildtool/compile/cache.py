"""The object cache: objects stored under their content hash, so a second Python version of a cell (or a
rebuild after a clean) reuses every CUDA object."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from buildtool.compile.plan import BuildContext, PlannedModule


def _cache_object(ctx: BuildContext, key: str) -> Path | None:
    if ctx.cache_dir is None:
        return None
    return ctx.cache_dir / "objects" / key[:2] / f"{key}.o"


def restore_cached(ctx: BuildContext, modules: Sequence[PlannedModule]) -> int:
    """Copy cached objects into place; their compile edges are then left out of build.ninja."""
    hits = 0
    for m in modules:
        for pu in m.units:
            cached = _cache_object(ctx, pu.cache_key)
            if cached is None or not cached.is_file():
                continue
            pu.object_path.parent.mkdir(parents=True, exist_ok=True)
            if not (pu.object_path.is_file() and _same_file(cached, pu.object_path)):
                shutil.copyfile(cached, pu.object_path)
            pu.cached = True
            hits += 1
    return hits


def _same_file(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def store_compiled(ctx: BuildContext, modules: Sequence[PlannedModule]) -> int:
    misses = 0
    for m in modules:
        for pu in m.units:
            if pu.cached:
                continue
            misses += 1
            dest = _cache_object(ctx, pu.cache_key)
            if dest is None or dest.is_file() or not pu.object_path.is_file():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
            shutil.copyfile(pu.object_path, tmp)
            os.replace(tmp, dest)
    return misses
