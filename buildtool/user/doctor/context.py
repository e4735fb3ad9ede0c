"""What the checks look at: the probed environment plus lazily read facts (ELF, torch exports, pip cache)."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from buildtool.binary.elf import ElfInfo, defined_versions, exports_of, read_elf
from buildtool.user.envinfo import DistInfo, Environment, PythonEnv, TorchInfo
from buildtool.wheel.name import LocalLabel

# Which extension module each kernel distribution must provide.
DIST_EXTENSIONS = {
    "causal-conv1d": ("causal_conv1d_cuda",),
    "mamba-ssm": ("selective_scan_cuda",),
    "mamba-ssm-vim": ("selective_scan_cuda",),
    "selective-scan": ("selective_scan_cuda_oflex", "selective_scan_cuda_core"),
}


@dataclass(frozen=True)
class Extension:
    module: str          # import name (file name up to the first dot)
    dist: str | None     # distribution that installed it
    path: Path


@dataclass
class Context:
    env: Environment
    cwd: Path
    pip_cache_wheels: tuple[str, ...] | None = None   # None: not looked at
    _elf: dict[Path, ElfInfo | None] = field(default_factory=dict)

    @property
    def py(self) -> PythonEnv:
        return self.env.python

    @property
    def torch(self) -> TorchInfo:
        return self.env.python.torch

    @property
    def is_windows(self) -> bool:
        return self.py.sys_platform == "win32"

    @property
    def triton_dist(self) -> str:
        """The distribution that provides ``import triton`` here."""
        return "triton-windows" if self.is_windows else "triton"

    def dist(self, name: str) -> DistInfo | None:
        return self.py.dists.get(name)

    def version(self, name: str) -> Version | None:
        d = self.dist(name)
        if d is None:
            return None
        try:
            return Version(d.version)
        except InvalidVersion:
            return None

    def label(self, name: str) -> LocalLabel | None:
        v = self.version(name)
        if v is None or v.local is None:
            return None
        try:
            return LocalLabel.parse(v.local)
        except ValueError:
            return None

    def kernel_dists(self) -> dict[str, DistInfo]:
        return {n: d for n, d in self.py.dists.items() if n in DIST_EXTENSIONS}

    @functools.cached_property
    def extensions(self) -> tuple[Extension, ...]:
        found: dict[Path, Extension] = {}
        for name, d in self.kernel_dists().items():
            for p in d.ext_paths():
                found[p] = Extension(module=p.name.split(".", 1)[0], dist=name, path=p)
        for module, spec in self.py.extensions.items():
            if spec and spec.get("origin"):
                p = Path(spec["origin"])
                found.setdefault(p, Extension(module=module, dist=None, path=p))
        return tuple(found.values())

    def elf(self, path: Path) -> ElfInfo | None:
        if path not in self._elf:
            self._elf[path] = read_elf(path)
        return self._elf[path]

    @functools.cached_property
    def torch_libs(self) -> tuple[Path, ...]:
        if not self.torch.lib_dir:
            return ()
        return tuple(sorted(Path(self.torch.lib_dir).glob("lib*.so*")))

    @functools.cached_property
    def torch_exports(self) -> frozenset[str]:
        return exports_of(self.torch_libs)

    @functools.cached_property
    def libstdcxx_versions(self) -> tuple[Path | None, frozenset[str]]:
        """The system libstdc++ (what a .so finds through the loader) and its GLIBCXX_ versions."""
        listing = ""
        if self.env.host.ldconfig:
            try:
                listing = subprocess.run([self.env.host.ldconfig, "-p"], capture_output=True, text=True,
                                         timeout=30).stdout
            except (OSError, subprocess.TimeoutExpired):
                listing = ""
        for line in listing.splitlines():
            if ("libstdc++.so.6 " in line and "x86-64" in line) or ("libstdc++.so.6 " in line and "AArch64" in line):
                path = Path(line.split("=>")[-1].strip())
                return path, defined_versions(path)
        return None, frozenset()


def demangle(symbols: list[str]) -> list[str]:
    tool = shutil.which("c++filt")
    if not tool or not symbols:
        return symbols
    try:
        out = subprocess.run([tool], input="\n".join(symbols), capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return symbols
    lines = out.splitlines()
    return lines if len(lines) == len(symbols) else symbols


def pip_cache_wheels(env: dict[str, str] | None = None) -> tuple[str, ...] | None:
    """Wheels pip built and cached (`pip cache list --format=abspath`); None when pip cannot say."""
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "cache", "list", "--format=abspath"],
                              capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return tuple(ln.strip() for ln in proc.stdout.splitlines() if ln.strip().endswith(".whl"))
