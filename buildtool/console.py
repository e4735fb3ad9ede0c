"""Shared rich consoles: tables and progress to the terminal, machine output (--json) stays plain."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Not a terminal (CI logs, pipes): a wide fixed width so tables keep one row per line.
# emoji=False: "file.yaml:100:" must not print as "file.yaml💯" (rich reads :100: as an emoji code)
out = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200, emoji=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200, emoji=False)


VERBOSE = 0  # -v count of the running command


def set_verbosity(verbose: int, *, quiet: bool) -> None:
    """-q silences stderr (progress, notes); the result on stdout and errors stay. -v raises VERBOSE."""
    global VERBOSE
    VERBOSE = verbose
    err.quiet = quiet


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no rich markup, no wrapping) for machines."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
