"""`buildtool prepare PKG==VER`: fetch, verify, extract and patch a source tree with a generated pyproject."""

from __future__ import annotations

import argparse
from pathlib import Path

from buildtool.console import out, print_json
from buildtool.host import host_platform
from buildtool.source.prepare import parse_package_spec, prepare
from buildtool.spec.project import find_project


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prepare", help="write a patched, self-contained source tree for PKG==VER")
    p.add_argument("package", metavar="PKG==VER", help="e.g. causal-conv1d==1.7.0, mamba-ssm-vim==1.1.1")
    p.add_argument("--platform", default=host_platform(),
                   help="target platform; chooses the patches (default: this machine, %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="directory to create")
    p.add_argument("--source-mirror", metavar="DIR",
                   help="offline sources: git repos (NAME/repo, NAME.git, NAME) and sdists by file name "
                        "(default: $BUILDTOOL_SOURCE_MIRROR)")
    p.add_argument("--cache-dir", type=Path, help="source cache (default: $BUILDTOOL_CACHE_DIR/sources or "
                                                  "$XDG_CACHE_HOME/buildtool/sources)")
    p.add_argument("--torch", metavar="VERSION",
                   help="the torch an isolated build installs (get_requires_for_build_wheel), e.g. 2.14.1")
    p.add_argument("--cuda", metavar="X.Y", help="the CUDA that torch must be built for; the build refuses others")
    p.add_argument("--builder-wheel", type=Path, metavar="WHEEL",
                   help="copy this builder wheel into the tree's .buildtool/wheels/ (the backend is not on PyPI: "
                        "frontends find it with PIP_FIND_LINKS / UV_FIND_LINKS pointing there)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--abi", choices=("full", "stable"), default="full",
                   help="ABI track: stable applies the stable-ABI patches and kernel specs (recipe stable_abi)")
    p.add_argument("--json", action="store_true", help="print the provenance as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    package, version = parse_package_spec(args.package)
    tree = prepare(find_project(), package, version, args.platform, args.out, mirror=args.source_mirror, abi=args.abi,
                   cache_dir=args.cache_dir, force=args.force, torch=args.torch, cuda=args.cuda,
                   builder_wheel=args.builder_wheel)
    prov = tree.provenance
    if args.json:
        print_json({"root": str(tree.root), "origin": tree.origin, **prov.model_dump(mode="json")})
        return 0
    src = prov.source
    pin = src.get("commit") or src.get("sha256")
    out.print(f"[bold]{prov.package} {prov.version}[/] for {prov.platform} -> {tree.root}", highlight=False)
    out.print(f"  source: {src['kind']} {src['url']} ({str(pin)[:12]}"
              f"{', ' + src['subdirectory'] if src.get('subdirectory') else ''}) from {tree.origin}", highlight=False)
    out.print(f"  content sha256: {src['content_sha256']}", highlight=False)
    if prov.patches:
        for p in prov.patches:
            out.print(f"  patch {p.name} ({p.reference or '-'}): {', '.join(p.files)}", highlight=False)
    else:
        out.print("  patches: none", highlight=False)
    out.print(f"  kernels: {', '.join(prov.kernels) or '-'}", highlight=False)
    return 0
