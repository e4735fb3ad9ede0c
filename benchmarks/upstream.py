"""Build a package with upstream's own setup.py, for comparison benchmarks only.

Works on a temporary copy of the source: the copy's setup.py gets a few lines injected (ours) that keep
only the requested `-gencode` pairs, so upstream and buildtool compile the same arch list, and its hard-coded
`-std=c++17` becomes the cell's standard where the torch needs a newer one (torch >= 2.14 refuses C++17,
patches.md MS-6; buildtool's kernel specs make the same change). Nothing from upstream is stored in this
repository.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Injected before upstream's first `ext_modules.append(`: filter cc_flag's gencode pairs.
_FILTER = """{indent}_keep_codes = {codes!r}
{indent}_filtered = []
{indent}_i = 0
{indent}while _i < len(cc_flag):
{indent}    if cc_flag[_i] == "-gencode":
{indent}        if cc_flag[_i + 1] in _keep_codes:
{indent}            _filtered += cc_flag[_i:_i + 2]
{indent}        _i += 2
{indent}    else:
{indent}        _filtered.append(cc_flag[_i])
{indent}        _i += 1
{indent}cc_flag[:] = _filtered
"""


def restrict_archs(setup_py: str, archs: list[str]) -> str:
    """Return setup.py text whose cc_flag keeps only `arch=compute_XY,code=sm_XY` for ``archs``.

    The filter goes right after the block that fills cc_flag (the first line after the last
    `cc_flag.append(` that is indented no deeper than `cc_flag = []`), before anything copies the list
    (`[...] + cc_flag` makes a new list, so filtering later would change nothing)."""
    codes = [f"arch=compute_{a.replace('.', '')},code=sm_{a.replace('.', '')}" for a in archs]
    lines = setup_py.splitlines(keepends=True)
    init = next((i for i, ln in enumerate(lines) if re.match(r"^\s*cc_flag\s*=\s*\[\]", ln)), None)
    appends = [i for i, ln in enumerate(lines) if "cc_flag.append(" in ln]
    if init is None or not appends:
        raise ValueError("setup.py has no `cc_flag = []` / `cc_flag.append(` to restrict")
    indent = re.match(r"^([ \t]*)", lines[init]).group(1)  # type: ignore[union-attr]
    at = next((i for i in range(appends[-1] + 1, len(lines))
               if lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) <= len(indent)), len(lines))
    return "".join(lines[:at]) + _FILTER.format(indent=indent, codes=codes) + "".join(lines[at:])


_STD_FLAG = re.compile(r"(-std=c\+\+)(\d\d)\b")


def set_cxx_standard(setup_py: str, std: str) -> tuple[str, int]:
    """setup.py text with every older hard-coded `-std=c++NN` raised to ``std`` ("20"), and how many changed."""
    changed = 0

    def raise_std(m: re.Match[str]) -> str:
        nonlocal changed
        if int(m.group(2)) >= int(std):
            return m.group(0)
        changed += 1
        return m.group(1) + std

    return _STD_FLAG.sub(raise_std, setup_py), changed


@dataclass
class UpstreamResult:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    wheel: Path | None
    wheel_bytes: int
    tu_seconds: dict[str, float] = field(default_factory=dict)
    returncode: int = 0
    log: Path | None = None
    std_flags_changed: int = 0  # `-std=c++NN` flags of setup.py raised to the cell's standard


def ninja_log_durations(build_root: Path) -> dict[str, float]:
    """Per-output seconds from every .ninja_log below ``build_root`` (last entry per output wins)."""
    times: dict[str, float] = {}
    for log in build_root.rglob(".ninja_log"):
        for line in log.read_text().splitlines():
            if line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) >= 4:
                start, end, _, output = parts[:4]
                times[Path(output).name] = (int(end) - int(start)) / 1000.0
    return times


def build_upstream(source: Path, archs: list[str], out_dir: Path, jobs: int, env_extra: dict[str, str],
                   python: str = sys.executable, cxx_std: str | None = None) -> UpstreamResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="upstream-"))
    tree = work / "src"
    shutil.copytree(source, tree)
    setup = tree / "setup.py"
    text, std_changed = set_cxx_standard(setup.read_text(), cxx_std) if cxx_std else (setup.read_text(), 0)
    setup.write_text(restrict_archs(text, archs))
    env = dict(os.environ, MAX_JOBS=str(jobs), **env_extra)
    log = out_dir / f"upstream-{source.name}.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(
            [python, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-v", "-w", str(out_dir), str(tree)],
            stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tree,
        )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wheels = sorted(out_dir.glob("*.whl"))
    return UpstreamResult(
        wall_s=wall,
        cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        peak_rss_mb=after.ru_maxrss / 1024.0,
        wheel=wheels[-1] if wheels else None,
        wheel_bytes=wheels[-1].stat().st_size if wheels else 0,
        tu_seconds=ninja_log_durations(tree),
        returncode=proc.returncode,
        log=log,
        std_flags_changed=std_changed,
    )
