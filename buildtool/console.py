"""Shared rich consoles: tables and progress to the terminal, machine output (--json) stays plain."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Not a terminal (CI logs, pipes): a wide fixed width so tables keep one row per line.
out = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no rich markup, no wrapping) for machines."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
