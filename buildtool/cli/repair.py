"""`buildtool repair WHEEL -w DIR`: auditwheel (Linux) / delvewheel (Windows) without bundling torch or CUDA.

cibuildwheel's repair step (CIBW_REPAIR_WHEEL_COMMAND="buildtool repair {wheel} -w {dest_dir}"): the PEP 517
backend writes the plain linux_x86_64 / win_amd64 wheel, this gives it the manylinux_2_28 tag `buildtool
build` would (same policy, same reproducible rewrite, same SOURCE_DATE_EPOCH from the wheel's provenance).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from buildtool.console import out, print_json
from buildtool.errors import UserError
from buildtool.spec.compat import load_compat
from buildtool.wheel.name import WheelName
from buildtool.wheel.reader import read_wheel_provenance
from buildtool.wheel.write import source_date_epoch


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("repair", help="repair built wheels (auditwheel / delvewheel), never bundling torch or CUDA")
    p.add_argument("wheels", nargs="+", type=Path, metavar="WHEEL", help="wheels written by the build backend")
    p.add_argument("-w", "--wheel-dir", type=Path, required=True, metavar="DIR", help="where repaired wheels go")
    p.add_argument("--cuda", metavar="X.Y", help="the wheels' CUDA (default: from the local label, +cu130...)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def wheel_facts(path: Path, cuda: str | None = None) -> tuple[str, str, int | None]:
    """(matrix platform, CUDA, SOURCE_DATE_EPOCH) of a built wheel, from its name and provenance."""
    if not path.is_file():
        raise UserError(f"{path}: no such wheel")
    name = WheelName.parse(path.name)  # UserError when it is not a wheel name
    platforms = {info.wheel_tag: key for key, info in load_compat().platforms.items()}
    platform = platforms.get(name.platform_tag)
    if platform is None:
        raise UserError(f"{path.name}: platform tag {name.platform_tag} is not one the builder repairs; "
                        f"allowed: {', '.join(sorted(platforms))}", hint="repair the wheel the backend wrote, "
                        "before any other tool re-tagged it")
    found_cuda = cuda or (name.label.cuda if name.label is not None else None)
    if found_cuda is None:
        raise UserError(f"{path.name}: no CUDA in the local label", hint="pass --cuda X.Y")
    prov = read_wheel_provenance(path)
    epoch = source_date_epoch(prov.source.source_date_epoch if prov is not None else None)
    return platform, found_cuda, epoch


def run(args: argparse.Namespace) -> int:
    from buildtool.wheel.repair import repair_wheel

    results = []
    for wheel in args.wheels:
        platform, cuda, epoch = wheel_facts(wheel, args.cuda)
        results.append(repair_wheel(wheel, args.wheel_dir, platform=platform, cuda=cuda, epoch=epoch))
    if args.json:
        print_json([r.model_dump(mode="json") for r in results])
        return 0
    table = Table(title="repaired wheels")
    for col in ("wheel", "tag", "tool", "needs", "notes"):
        table.add_column(col, overflow="fold")
    for r in results:
        needs = ", ".join(f"{k}_{v}" for k, v in r.max_versions.items()) or "-"
        table.add_row(r.wheel.name, r.platform_tag, r.tool or "(kept as built)", needs, "; ".join(r.notes) or "-")
    out.print(table)
    return 0
