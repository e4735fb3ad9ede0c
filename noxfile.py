"""nox sessions: thin wrappers over `buildtool` commands, so CI and developers run the same thing.

    nox -s tests          # the test suite (what .ci/run runs)
    nox -s lint           # ruff + mypy
    nox -s matrix         # print the matrix (pass a profile: nox -s matrix -- --profile cu124)
"""

from __future__ import annotations

import shutil

import nox

nox.options.default_venv_backend = "uv|virtualenv" if shutil.which("uv") else "virtualenv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

DEV = ".[dev]"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite; pytest's 'no tests collected' (exit 5) is not a failure."""
    session.install("-e", DEV)
    session.run("pytest", *session.posargs, success_codes=[0, 5])


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", DEV)
    session.run("ruff", "check", "buildtool", "tests", "noxfile.py")
    session.run("mypy")


@nox.session
def matrix(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("buildtool", "matrix", *session.posargs)
