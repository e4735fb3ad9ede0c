"""`buildtool resolve PKG[==VER]`: the wheel that fits this environment, and why the others do not."""

from __future__ import annotations

import argparse
import os

from rich.markup import escape
from rich.table import Table

from buildtool.console import out, print_json
from buildtool.publish.commands import channel_commands
from buildtool.user.envinfo import Environment, HostInfo, probe_host, probe_python
from buildtool.user.resolve import Target, channel_url, load_manifest, resolve


def add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", default=os.environ.get("BUILDTOOL_INDEX"), metavar="URL",
                   help="site written by `buildtool index` (default: $BUILDTOOL_INDEX)")
    p.add_argument("--manifest", metavar="FILE", help="a manifest.json on disk instead of --index")
    p.add_argument("--python", metavar="PY", help="interpreter or venv to inspect (default: active venv, else this one)")
    g = p.add_argument_group("target overrides (default: detected)")
    g.add_argument("--torch", help="torch version, e.g. 2.6.0")
    g.add_argument("--cuda", help="torch's CUDA, e.g. 12.4")
    g.add_argument("--abi", choices=("TRUE", "FALSE"), help="torch's C++11 ABI")
    g.add_argument("--gpu-arch", action="append", default=None, metavar="CC", help="GPU compute capability, e.g. 9.0")
    g.add_argument("--platform", help="linux-x86_64, linux-aarch64 or windows-x86_64")
    g.add_argument("--python-tag", help="e.g. cp311")
    g.add_argument("--glibc", help="e.g. 2.31")
    g.add_argument("--no-host", action="store_true", help="do not look at nvidia-smi/nvcc (faster)")


def target_from_args(args: argparse.Namespace) -> tuple[Environment, Target]:
    py = probe_python(args.python)
    env = Environment(python=py, host=HostInfo() if args.no_host else probe_host())
    target = Target.from_environment(
        env, torch=args.torch, torch_cuda=args.cuda,
        cxx11_abi=None if args.abi is None else args.abi == "TRUE",
        gpu_archs=tuple(args.gpu_arch) if args.gpu_arch else None,
        platform=args.platform, python_tag=args.python_tag, glibc=args.glibc,
    )
    return env, target


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("resolve", help="pick the wheel that fits this environment")
    p.add_argument("requirement", metavar="PKG[==VER]")
    add_target_args(p)
    p.add_argument("--explain", action="store_true", help="say why every other candidate was rejected")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    manifest, base = load_manifest(args.index, args.manifest)
    env, target = target_from_args(args)
    res = resolve(args.requirement, manifest.wheels, target)
    channel = channel_url(manifest, base, res.chosen) if res.chosen else None
    # pin the installed torch distribution (its version can lack torch.__version__'s +cu130)
    torch_dist = env.python.dists.get("torch")
    pin = torch_dist.version if torch_dist and not args.torch else target.torch
    commands = channel_commands(res.chosen.package, channel, torch=pin) if res.chosen and channel else []
    if args.json:
        data = res.summary()
        data["url"] = (res.chosen.url if "://" in res.chosen.url else base + res.chosen.url) if res.chosen else None
        data["channel_url"] = channel
        data["commands"] = {f"{c.installer}{'' if c.with_pypi else '-channel-only'}": c.line() for c in commands}
        print_json(data)
        return 0 if res.chosen else 1
    t = target
    out.print(f"environment: Python {t.python_tag}, {t.platform}, glibc {t.glibc or '?'}, torch {t.torch or 'none'}, "
              f"CUDA {t.torch_cuda or 'none'}, cxx11abi {t.cxx11_abi}, GPU {', '.join(t.gpu_archs) or 'none'}",
              highlight=False)
    if res.chosen:
        out.print(f"[green]match[/]: {escape(res.chosen.filename)}")
        out.print(f"  {escape(res.chosen.url if '://' in res.chosen.url else base + res.chosen.url)}", highlight=False)
        if channel:
            out.print(f"channel for this environment: {escape(channel)}", highlight=False)
            for c in commands:
                if c.with_pypi:
                    out.print(f"  {escape(c.line())}", highlight=False, soft_wrap=True)
    else:
        out.print(f"[red]no wheel of {escape(args.requirement)} fits this environment[/]")
    for n in res.notes:
        out.print(f"  note: {escape(n)}", highlight=False)
    if args.explain and not res.rejected:
        out.print("  (no other candidates)")
    elif args.explain or not res.chosen:
        table = Table(title="rejected candidates")
        for col in ("wheel", "rule", "catalogue", "reason"):
            table.add_column(col, overflow="fold")
        for r in res.rejected:
            table.add_row(r.filename, r.rule, r.failure or "", r.reason)
        out.print(table)
    return 0 if res.chosen else 1
