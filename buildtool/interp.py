"""A target interpreter (a venv's python, a build env, the user's environment), asked from outside: the one
place that runs code in another Python and reads its answer. Callers word their own errors; what a probe
prints comes back as JSON from a marked line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Defines ``_buildtool_facts()`` in the target (any CPython >= 3.8, stdlib only): the interpreter facts every
# probe shares. Probes with more to ask (torch, installed kernels) run it first and add their own.
FACTS_CODE = r"""
import os as _os, platform as _platform, sys as _sys, sysconfig as _sysconfig
def _buildtool_facts():
    paths = _sysconfig.get_paths()
    return {
        "version": "%d.%d" % _sys.version_info[:2],
        "python_version": _platform.python_version(),
        "release": "%d.%d.%d" % _sys.version_info[:3],
        "executable": _sys.executable,
        "ext_suffix": _sysconfig.get_config_var("EXT_SUFFIX"),
        "include": paths.get("include"),
        "platinclude": paths.get("platinclude"),
        "purelib": paths.get("purelib"),
        "lib_dir": _os.path.join(_sys.base_exec_prefix, "libs"),
        "platform": _sys.platform,
    }
"""

_FACTS_PROBE = FACTS_CODE + "import json\nprint('BUILDTOOL-FACTS' + json.dumps(_buildtool_facts()))\n"

_DISTRIBUTIONS = (
    "import importlib.metadata as m, json\n"
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions() if d.metadata['Name']}))"
)


def running_version() -> str:
    """The running interpreter's "3.11" (the same answer ``version_of(sys.executable)`` gives)."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


@dataclass(frozen=True)
class InterpreterFacts:
    version: str  # "3.11"
    python_version: str  # "3.11.7"
    executable: str
    ext_suffix: str  # ".cpython-311-x86_64-linux-gnu.so" / ".cp311-win_amd64.pyd"
    include_dirs: tuple[str, ...]  # Python.h (include and platinclude)
    lib_dir: str  # <base_exec_prefix>/libs: python3X.lib on Windows
    purelib: str


def run(python: str | Path, *argv: str, env: Mapping[str, str] | None = None, timeout: float | None = None,
        cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python ARGV...`` with its output captured as text (OSError / TimeoutExpired pass through)."""
    return subprocess.run([str(python), *argv], capture_output=True, text=True, timeout=timeout,
                          env=dict(env) if env is not None else None, cwd=cwd)


def run_code(python: str | Path, code: str, *args: str, env: Mapping[str, str] | None = None,
             timeout: float | None = None, cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -c CODE ARGS...``."""
    return run(python, "-c", code, *args, env=env, timeout=timeout, cwd=cwd)


def marked_json(stdout: str, marker: str = "") -> Any:
    """The JSON after ``marker`` on the first line that starts with it; with no marker, the last line's JSON.
    None when there is no such line (the probe crashed before printing)."""
    lines = stdout.splitlines()
    if not marker:
        last = stdout.strip().splitlines()[-1:]
        return json.loads(last[0]) if last else None
    line = next((ln for ln in lines if ln.startswith(marker)), None)
    return None if line is None else json.loads(line[len(marker):])


def facts(python: str | Path, *, timeout: float = 60) -> InterpreterFacts:
    """Version, EXT_SUFFIX, headers and site-packages of ``python``; CalledProcessError when it cannot answer."""
    proc = run_code(python, _FACTS_PROBE, timeout=timeout)
    data = marked_json(proc.stdout, "BUILDTOOL-FACTS") if proc.returncode == 0 else None
    if data is None:
        raise subprocess.CalledProcessError(proc.returncode, [str(python), "-c", "..."], proc.stdout, proc.stderr)
    return facts_from(data)


def facts_from(data: Mapping[str, Any]) -> InterpreterFacts:
    """InterpreterFacts from what ``_buildtool_facts()`` returned inside a larger probe."""
    return InterpreterFacts(
        version=data["version"], python_version=data["python_version"], executable=data["executable"],
        ext_suffix=data["ext_suffix"], include_dirs=tuple(sorted({data["include"], data["platinclude"]})),
        lib_dir=data["lib_dir"], purelib=data["purelib"],
    )


def version_of(python: str | Path, *, timeout: float = 30) -> str | None:
    """"3.11" when ``python`` starts and answers, else None (a pyenv shim for a version that is installed but
    not selected exits 127; a stale link points nowhere)."""
    try:
        proc = run_code(python, "import sys; print('%d.%d' % sys.version_info[:2])", timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def distributions(python: str | Path) -> dict[str, str]:
    """Every distribution installed for ``python``: its name as its metadata spells it -> version; {} when the
    interpreter cannot say."""
    proc = run_code(python, _DISTRIBUTIONS)
    data = marked_json(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None
    return dict(data) if isinstance(data, dict) else {}


def imports(python: str | Path, modules: Sequence[str], *, torch_first: bool,
            timeout: float | None = None, cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """Import ``modules`` in ``python`` (``import torch`` first: kernel extensions link against libc10/libtorch,
    which it loads); prints "import ok" when all import."""
    code = ("import torch\n" if torch_first else "") + "".join(f"import {m}\n" for m in modules) + "print('import ok')"
    return run_code(python, code, timeout=timeout, cwd=cwd)
