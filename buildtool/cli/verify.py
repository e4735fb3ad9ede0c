"""`buildtool verify`: prove wheels correct — static checks anywhere, numerics/models/speed on a GPU."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from buildtool.console import err, out, print_json
from buildtool.user.envinfo import python_of
from buildtool.verify.pipeline import VerifyOptions, verify
from buildtool.verify.record import records_dir
from buildtool.verify.report import json_report, markdown, table, write_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="verify wheels: metadata, RECORD, libraries, archs; on a GPU numerics, models, speed")
    p.add_argument("wheels", nargs="+", type=Path, help="wheel files or directories holding them (e.g. dist/)")
    # `--json FILE` (before --json meant stdout on every command) still writes FILE, with a note: --json-out
    p.add_argument("--json", nargs="?", const=True, default=False, metavar="FILE",
                   help="print the report as JSON on stdout (instead of the table); FILE: see --json-out")
    p.add_argument("--json-out", type=Path, metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="also write a markdown summary (for docs/) to FILE")
    p.add_argument("--static-only", action="store_true", help="skip the GPU checks (they are reported as skipped)")
    p.add_argument("--require-gpu", action="store_true", help="fail when no GPU is usable (for GPU CI runners)")
    p.add_argument("--no-bench", action="store_true", help="skip the speed checks")
    p.add_argument("--no-requirements", action="store_true",
                   help="skip the declared-requirements check (install with requirements from the index, import)")
    p.add_argument("--requirements-index", default="https://pypi.org/simple/", metavar="URL",
                   help="index the requirements are resolved from (default PyPI; unreachable: the check is skipped)")
    p.add_argument("--python", metavar="PY_OR_VENV",
                   help="interpreter or venv whose torch the requirements and GPU checks use (default: this one)")
    p.add_argument("--skip", action="append", default=[], metavar="PATTERN",
                   help="skip GPU checks whose name matches (fnmatch), e.g. 'smoke Mamba2' or 'speed *'")
    p.add_argument("--timeout", type=int, default=900, help="seconds per wheel group on the GPU (default 900)")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep each group's install dir, job and results under DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if isinstance(args.json, str):  # the old `--json FILE`
        err.print("note: --json FILE is --json-out FILE now (--json alone prints the report on stdout)", highlight=False)
        args.json_out, args.json = args.json_out or Path(args.json), False
    options = VerifyOptions(gpu=not args.static_only, require_gpu=args.require_gpu, bench=not args.no_bench,
                            skip=tuple(args.skip), timeout=args.timeout, keep=args.keep,
                            requirements=not args.no_requirements, index=args.requirements_index,
                            python=python_of(args.python) if args.python else sys.executable,
                            records=records_dir())
    report = verify(args.wheels, options)
    note = err.print if args.json else out.print  # with --json, stdout holds the JSON alone
    if args.json:
        print_json(json_report(report))
    else:
        out.print(table(report, verbose=bool(args.verbose)))
    if args.json_out:
        write_json(report, args.json_out)
        note(f"report written to {args.json_out}", highlight=False)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(report), encoding="utf-8")
        note(f"summary written to {args.markdown}", highlight=False)
    return 0 if report.ok else 1
