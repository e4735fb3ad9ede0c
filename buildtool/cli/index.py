"""`buildtool index DIST --base-url URL --out SITE`: simple index + manifest + picker page."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from buildtool.console import out, print_json
from buildtool.publish.index import build_index


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("index", help="write a PEP 503/691 wheel index, manifest.json and the picker page")
    p.add_argument("dist", type=Path, help="directory of wheels")
    p.add_argument("--out", type=Path, required=True, metavar="SITE", help="output directory (the site root)")
    p.add_argument("--base-url", default="", metavar="URL",
                   help="URL the site will be served at (absolute wheel URLs in manifest.json and the page)")
    p.add_argument("--files-url", metavar="URL",
                   help="where the wheels are hosted instead of SITE/files (e.g. a GitHub Release download URL); "
                        "nothing is copied")
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    manifest = build_index(args.dist, args.out, args.base_url, files_url=args.files_url)
    if args.json:
        print_json(manifest.model_dump())
        return 0
    table = Table(title=f"{len(manifest.wheels)} wheels -> {args.out}")
    for col in ("package", "version", "python", "platform", "archs", "glibc", "size"):
        table.add_column(col)
    for w in manifest.wheels:
        table.add_row(w.package, w.version, w.python_tag, w.platform, " ".join(w.archs) or "?", w.min_glibc or "-",
                      f"{w.size / 1e6:.1f} MB")
    out.print(table)
    site = manifest.base_url + "/" if manifest.base_url else "<URL where SITE is served>/"
    channels = Table(title="channels: one index per torch pin (give pip/uv the one of your torch)")
    for col in ("channel", "torch", "CUDA", "packages", "--index-url"):
        channels.add_column(col, overflow="fold")
    for c in manifest.channels:
        channels.add_row(c.id, "stable ABI" if c.kind == "stable" else str(c.torch), c.cuda, ", ".join(c.packages),
                         c.url if "://" in c.url else site + c.url)
    out.print(channels)
    out.print(f"`buildtool install <pkg> --index {site}` picks for an environment; the page: {site}index.html",
              highlight=False)
    return 0
