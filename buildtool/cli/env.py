"""`buildtool env create DIR --profile P`: a ready environment: torch, triton, matched kernels, doctor."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import threading
import time
from pathlib import Path

from rich.markup import escape
from rich.status import Status

from buildtool.console import err, out, print_json
from buildtool.spec.matrix import load_matrix
from buildtool.spec.project import find_project
from buildtool.user.envcreate import WITH, create_env, plan_env

QUIET_STEPS = ("4/5 doctor", "5/5 import")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("env", help="create ready-to-use environments")
    env_sub = p.add_subparsers(dest="env_command", metavar="ACTION", required=True)
    c = env_sub.add_parser("create", help="venv + the profile's torch + matched triton + matched kernel wheels + doctor")
    c.add_argument("dir", type=Path)
    c.add_argument("--profile", required=True, help="a profile of matrix.yaml (e.g. cu124)")
    c.add_argument("--python", help="Python X.Y (default: this one if the profile has it, else its newest)")
    c.add_argument("--with", dest="with_", choices=tuple(WITH), default="mamba", help="which kernels (default: mamba)")
    c.add_argument("--index", default=os.environ.get("BUILDTOOL_INDEX"), metavar="URL",
                   help="kernel wheel site from `buildtool index` (default: $BUILDTOOL_INDEX)")
    c.add_argument("--torch-index", metavar="URL",
                   help="where torch comes from (default: download.pytorch.org/whl/cuXYZ of the profile); "
                        "a directory of wheels works too")
    c.add_argument("--pypi-index", metavar="URL", help="index for everything else (default: PyPI)")
    c.add_argument("--installer", choices=("uv", "pip"), help="default: uv when installed, else pip")
    c.add_argument("--platform", help="plan for another platform (with --dry-run)")
    c.add_argument("--skip-triton", action="store_true", help="do not install triton explicitly")
    c.add_argument("--matrix", type=Path, help="matrix file (default: the project's matrix.yaml)")
    c.add_argument("--allow-missing", action="store_true",
                   help="create the environment even if a requested package has no wheel for it (it is dropped; exit 1)")
    c.add_argument("--dry-run", action="store_true", help="print the plan only")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    matrix = load_matrix(find_project().root, args.matrix)
    plan = plan_env(matrix, args.profile, python=args.python, platform=args.platform, with_=args.with_,
                    torch_index=args.torch_index, skip_triton=args.skip_triton)
    if args.dry_run:
        if args.json:
            print_json(plan.model_dump())
        else:
            out.print(f"profile {plan.profile}: {plan.platform}, Python {plan.python}, torch {plan.torch} "
                      f"(CUDA {plan.cuda}, cxx11abi {plan.cxx11_abi}) from {plan.torch_index}", highlight=False)
            out.print(f"triton: {plan.triton or 'none'}; kernels: {', '.join(plan.packages) or 'none'}", highlight=False)
            if plan.not_in_profile:
                out.print(f"not built by profile {plan.profile} here: {', '.join(plan.not_in_profile)} (the index's "
                          "newest wheel that fits is taken, or env create stops and names it)", highlight=False)
        return 0

    live = sys.stderr.isatty() and not args.json
    # doctor and the import check print nothing for up to a minute (importing torch and every kernel module
    # in subprocesses): on a terminal a spinner with the elapsed seconds stands on that step until the next line
    spinner: list[Status] = []

    def log(line: str) -> None:
        while spinner:
            spinner.pop().stop()
        if args.verbose or not line.startswith("  "):
            err.print(escape(line), highlight=False, soft_wrap=True)
        if live and line.startswith(QUIET_STEPS):
            start = time.monotonic()
            status = err.status(escape(line))
            spinner.append(status)
            status.start()
            status.update(escape(line))

            def tick() -> None:
                while spinner and spinner[-1] is status:
                    status.update(f"{escape(line)} ({time.monotonic() - start:.0f} s)")
                    time.sleep(1)
            threading.Thread(target=tick, daemon=True).start()

    try:
        report = create_env(args.dir, plan, index=args.index, pypi_index=args.pypi_index, installer=args.installer,
                            log=log, allow_missing=args.allow_missing, passthrough=live)
    finally:
        while spinner:
            spinner.pop().stop()
    if args.json:
        print_json(report.model_dump(mode="json"))
    else:
        out.print(f"[green]created[/] {escape(report.dir)}: torch {report.torch}, "
                  f"{', '.join(i.filename for i in (report.kernels.installed if report.kernels else ())) or 'no kernels'}")
        out.print(f"doctor: worst {report.doctor_worst} ({', '.join(f'{n} {k}' for k, n in report.doctor_counts.items() if n)})",
                  highlight=False)
        for p in report.doctor_problems:
            out.print(f"  {p['status']}: {p['id']}: {escape(p['evidence'])}", highlight=False)
        out.print(f"activate: source {escape(shlex.quote(str(Path(report.dir) / 'bin' / 'activate')))}", highlight=False)
        if report.exit_code:
            why = [w for w, bad in (("the import check failed", not report.import_ok),
                                    (f"doctor reports {report.doctor_worst}", report.doctor_worst in ("warn", "fail")),
                                    (f"dropped: {', '.join(report.dropped)}", bool(report.dropped))) if bad]
            out.print(f"[yellow]created with problems[/]: {escape('; '.join(why))} (exit 1; "
                      f"`buildtool doctor --python {escape(shlex.quote(report.python))}`)", highlight=False)
        else:
            out.print("[green]ready[/] (doctor clean, imports ok)")
    return report.exit_code
