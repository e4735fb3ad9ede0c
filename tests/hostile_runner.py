"""Runs a batch of hostile-input cases in this process and writes one JSON result per case.

Started by tests/test_hostile_corpus.py in a subprocess with an address-space limit (RLIMIT_AS) and a
timeout, so a case that hangs or balloons fails the test instead of the machine. Each case is either a
CLI run (``buildtool.cli.main(argv)``, output captured) or a loader call (``module:function`` on a
path); the outcome is "ok", "error" (a UserError: the message the user sees) or "crash" (anything else:
the traceback, which the test turns into a failure).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _run(case: dict[str, Any]) -> dict[str, Any]:
    from buildtool.errors import BuildtoolError

    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    outcome, message = "ok", ""
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if case["kind"] == "cli":
                from buildtool.cli import main

                code = main(case["argv"])
                if code != 0:
                    outcome = "error"
                message = err.getvalue() + out.getvalue()  # verify reports failures on stdout
                if "--json-out" in case["argv"]:
                    report = Path(case["argv"][case["argv"].index("--json-out") + 1])
                    message += report.read_text(encoding="utf-8") if report.is_file() else ""
            else:
                module, func = case["call"].split(":")
                result = getattr(importlib.import_module(module), func)(*[Path(a) for a in case["args"]])
                message = repr(result)[:2000]
    except BuildtoolError as exc:
        outcome, message = "error", str(exc)
    except SystemExit as exc:  # argparse usage errors
        outcome, message = ("ok" if not exc.code else "error"), err.getvalue()
    except BaseException:
        outcome, message = "crash", traceback.format_exc()
    if "Traceback (most recent call last)" in message or "Traceback (most recent call last)" in err.getvalue():
        outcome = "crash"
    return {"id": case["id"], "outcome": outcome, "message": message[-20000:], "stdout": out.getvalue()[-4000:],
            "seconds": round(time.perf_counter() - started, 4)}


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    results = []
    with open(sys.argv[2], "w", encoding="utf-8") as sink:
        for case in cases:
            result = _run(case)
            results.append(result)
            sink.write(json.dumps(result) + "\n")
            sink.flush()  # a later case that kills the process leaves the earlier results readable
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(sys.argv[2], "a", encoding="utf-8") as sink:
        sink.write(json.dumps({"id": "__peak_rss_kib__", "value": peak_kib}) + "\n")


if __name__ == "__main__":
    main()
