"""`buildtool verify`: prove wheels correct — static checks anywhere, numerics/models/speed on a GPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from buildtool.console import out
from buildtool.verify.pipeline import VerifyOptions, verify
from buildtool.verify.report import markdown, table, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="verify wheels: metadata, RECORD, libraries, archs; on a GPU numerics, models, speed")
    p.add_argument("wheels", nargs="+", type=Path, help="wheel files or directories holding them (e.g. dist/)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="also write a markdown summary (for docs/) to FILE")
    p.add_argument("--static-only", action="store_true", help="skip the GPU checks (they are reported as skipped)")
    p.add_argument("--require-gpu", action="store_true", help="fail when no GPU is usable (for GPU CI runners)")
    p.add_argument("--no-bench", action="store_true", help="skip the speed checks")
    p.add_argument("--no-requirements", action="store_true",
                   help="skip the declared-requirements check (install with requirements from the index, import)")
    p.add_argument("--requirements-index", default="https://pypi.org/simple/", metavar="URL",
                   help="index the requirements are resolved from (default PyPI; unreachable: the check is skipped)")
    p.add_argument("--skip", action="append", default=[], metavar="PATTERN",
                   help="skip GPU checks whose name matches (fnmatch), e.g. 'smoke Mamba2' or 'speed *'")
    p.add_argument("--timeout", type=int, default=900, help="seconds per wheel group on the GPU (default 900)")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep each group's install dir, job and results under DIR")
    p.add_argument("--verbose", "-v", action="store_true", help="show every detail in full")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = VerifyOptions(gpu=not args.static_only, require_gpu=args.require_gpu, bench=not args.no_bench,
                            skip=tuple(args.skip), timeout=args.timeout, keep=args.keep,
                            requirements=not args.no_requirements, index=args.requirements_index)
    report = verify(args.wheels, options)
    out.print(table(report, verbose=args.verbose))
    if args.json:
        write_json(report, args.json)
        out.print(f"report written to {args.json}", highlight=False)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(report), encoding="utf-8")
        out.print(f"summary written to {args.markdown}", highlight=False)
    return 0 if report.ok else 1
