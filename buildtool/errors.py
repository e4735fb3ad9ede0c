"""The error class tree (user error, build failure, environment problem) and its exit codes: every mistake
a user can make, and every failure buildtool expects, ends here, never in a traceback."""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where in a data file a problem sits (1-based line and column)."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"


_LONG_RUN = re.compile(r"\S{301,}")


def _shorten(match: re.Match[str]) -> str:
    text = match.group()
    return f"{text[:80]}...({len(text):,} characters)"


class BuildtoolError(Exception):
    """Every error buildtool reports on purpose: one clear message (where, what, what is allowed, a hint),
    never a traceback. The class says whose problem it is and sets the exit code (docs/cli.md):

    - ``UserError`` (2): input the user controls is wrong (matrix.yaml, a spec, an option, a wheel file).
    - ``BuildError`` (1): a build or verification step failed (compiler error, a wheel fails its checks).
    - ``EnvironmentProblem`` (3): this machine lacks something the command needs (a CUDA toolkit, a host
      compiler, a tool on PATH); the input is fine and would work elsewhere.
    """

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None) -> None:
        message = _LONG_RUN.sub(_shorten, message)  # a 5 MB value from the input is not echoed back whole
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def as_dict(self) -> dict[str, object]:
        """The error as `--json` prints it."""
        return {"ok": False, "error": self.kind, "exit_code": self.exit_code, "message": self.message,
                "location": str(self.location) if self.location else None, "hint": self.hint}


class UserError(BuildtoolError):
    """An error caused by input the user controls; exit code 2."""

    exit_code = 2
    kind = "user-error"


class BuildError(BuildtoolError):
    """A build step failed for a reason outside the user's input (compiler error, a failed check); exit code 1."""

    exit_code = 1
    kind = "build-failure"


class EnvironmentProblem(BuildtoolError):
    """This machine lacks what the command needs (toolkit, host compiler, tool); exit code 3."""

    exit_code = 3
    kind = "environment"


# The documented exit codes (docs/cli.md), besides each error class's own.
EXIT_OK = 0
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM
EXIT_PIPE_CLOSED = 141  # the reader of stdout went away (`... | head`)


def did_you_mean(value: object, allowed: Iterable[object]) -> str:
    """`' (did you mean "x"?)'` when a close match exists, else ``''``; a value holding a non-ASCII character
    says which one and where (a Cyrillic "х" in "linux-x86_64" looks identical to the suggestion)."""
    choices = [str(a) for a in allowed]
    text = str(value)
    note = non_ascii_note(text) if len(text) <= 200 else ""
    if len(text) > 200:  # difflib is quadratic; nothing that long is a typo of a short name
        return note
    close = difflib.get_close_matches(text, choices, n=1, cutoff=0.6)
    return f'{note} (did you mean "{close[0]}"?)' if close else note


def non_ascii_note(value: object) -> str:
    """`' (holds the non-ASCII character "х" U+0445 CYRILLIC SMALL LETTER HA at character 8)'`, or ``''``."""
    if not isinstance(value, str):
        return ""
    for i, char in enumerate(value):
        if ord(char) > 127:
            name = unicodedata.name(char, "unnamed")
            shown = char if char.isprintable() else ""
            return f' (holds the non-ASCII character "{shown}" U+{ord(char):04X} {name} at character {i + 1})'
    return ""


def allowed_list(allowed: Iterable[object], limit: int = 12) -> str:
    items = [str(a) for a in allowed]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
