"""The install command lines the project documents, built in one place: the picker page's twin, what
`resolve --explain` and `index` print, what docs/user-guide.md shows and what scripts/install_matrix.py
measures. Each is a list of arguments, printed with `shlex.join` so it pastes into a POSIX shell.

A channel holds one torch pin per package (DESIGN decision 8). The command pins the *installed* torch too
(`torch==<its version>`), so an environment whose torch does not fit the channel gets a refusal from the
resolver instead of a torch swap; `--only-binary PKG` keeps pip from falling back to building PyPI's sdist.
"""

from __future__ import annotations

import shlex
from typing import Literal

from buildtool.model import Frozen

PYPI = "https://pypi.org/simple"
# What the docs and the page put where the installed torch's version goes (POSIX shells and PowerShell).
# The distribution's version, not torch.__version__: PyPI's CUDA torch is the distribution 2.14.1 while
# torch.__version__ says 2.14.1+cu130, and `torch==2.14.1+cu130` is not satisfied by the installed 2.14.1.
TORCH_OF_THIS_PYTHON = """$(python -c 'import importlib.metadata as m; print(m.version("torch"))')"""
_PLACEHOLDER = "@@TORCH@@"

Installer = Literal["pip", "uv"]


class InstallCommand(Frozen):
    installer: Installer
    with_pypi: bool                 # channel + PyPI (dependencies from PyPI) or the channel alone
    argv: tuple[str, ...]

    def line(self) -> str:
        """Shell-quoted; the torch placeholder (if any) becomes a double-quoted command substitution."""
        text = shlex.join(self.argv)
        return text.replace(shlex.quote(f"torch=={_PLACEHOLDER}"), f'"torch=={TORCH_OF_THIS_PYTHON}"')


def channel_command(installer: Installer, package: str, channel_url: str, *, torch: str | None,
                    with_pypi: bool = True, pypi: str = PYPI) -> InstallCommand:
    """``torch`` is the installed torch distribution's version; None prints the shell substitution that reads it."""
    pin = f"torch=={torch or _PLACEHOLDER}"
    if installer == "pip":
        argv = ["pip", "install", "--only-binary", package, "--index-url", channel_url,
                *(["--extra-index-url", pypi] if with_pypi else []), package, pin]
    else:
        # uv searches --extra-index-url first and stops at the first index that has a package (first-index
        # strategy): the kernel comes from the channel only, everything else from PyPI.
        argv = ["uv", "pip", "install", *(["--index-url", pypi, "--extra-index-url", channel_url] if with_pypi
                                          else ["--index-url", channel_url]), package, pin]
    return InstallCommand(installer=installer, with_pypi=with_pypi, argv=tuple(argv))


def channel_commands(package: str, channel_url: str, *, torch: str | None, pypi: str = PYPI) -> list[InstallCommand]:
    return [channel_command(i, package, channel_url, torch=torch, with_pypi=w, pypi=pypi)
            for i in ("pip", "uv") for w in (True, False)]
