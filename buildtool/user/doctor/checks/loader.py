"""What the dynamic loader will need: glibc, libstdc++, the machine (F10, F11, F38)."""

from __future__ import annotations

import re

from packaging.utils import canonicalize_name
from packaging.version import Version

from buildtool.spec.knownbad import installed_breaks, load_known_bad
from buildtool.user.doctor.checks.base import check, fail, no_extensions, ok, skip
from buildtool.user.doctor.context import Context
from buildtool.user.doctor.model import Finding
from buildtool.wheel import tags as wheeltags


# ---------------------------------------------------------------- loader (F10, F11, F38)
@check
def glibc_new_enough(ctx: Context) -> Finding:
    if (early := no_extensions(ctx)) is not None:
        return early
    if not ctx.py.glibc:
        return skip("not a glibc system")
    system = Version(ctx.py.glibc)
    worst: tuple[Version, str] | None = None
    for ext in ctx.extensions:
        elf = ctx.elf(ext.path)
        if elf and elf.max_glibc and (worst is None or Version(elf.max_glibc) > worst[0]):
            worst = (Version(elf.max_glibc), ext.path.name)
    if worst is None:
        return ok("no GLIBC version needs recorded")
    if worst[0] > system:
        return fail(f"{worst[1]} needs GLIBC_{worst[0]}, this system has glibc {system}")
    return ok(f"needs at most GLIBC_{worst[0]}, system glibc {system}")


@check
def libstdcxx_new_enough(ctx: Context) -> Finding:
    if (early := no_extensions(ctx)) is not None:
        return early
    lib, versions = ctx.libstdcxx_versions
    if lib is None:
        return skip("no system libstdc++.so.6 found through ldconfig")
    missing = []
    for ext in ctx.extensions:
        elf = ctx.elf(ext.path)
        need = elf.max_glibcxx if elf else None
        if need and f"GLIBCXX_{need}" not in versions:
            missing.append(f"{ext.path.name} needs GLIBCXX_{need}")
    if missing:
        return fail("; ".join(missing) + f", not in {lib}")
    return ok(f"{lib} provides every GLIBCXX version the extensions need")


@check
def extension_platform(ctx: Context) -> Finding:
    if (early := no_extensions(ctx)) is not None:
        return early
    want_machine = ctx.py.platform.split("-", 1)[1]
    suffix = ctx.py.ext_suffix or ""
    problems = []
    for ext in ctx.extensions:
        name = ext.path.name
        if name.endswith((".so", ".pyd")) and not (name.endswith(suffix) or re.search(r"\.abi3\.(so|pyd)$", name)
                                                   or re.fullmatch(r"[A-Za-z_0-9]+\.(so|pyd)", name)):
            problems.append(f"{name} does not end in {suffix} (built for another Python), so Python cannot import it")
        elf = ctx.elf(ext.path)
        if elf and elf.machine != want_machine:
            problems.append(f"{name} is {elf.machine} code on a {want_machine} machine")
    if problems:
        return fail("; ".join(problems))
    return ok(f"extensions are {want_machine} and end in {suffix}")


@check
def wheel_tags_fit(ctx: Context) -> Finding:
    """Each kernel distribution's WHEEL tags against the tags this interpreter accepts (packaging.tags)."""
    dists = {n: d for n, d in ctx.kernel_dists().items() if d.wheel_tags}
    if not dists:
        return skip("no kernel distribution with a WHEEL file")
    accepted = set(wheeltags.supported_tags(ctx.py.python_tag, ctx.py.platform, ctx.py.glibc))
    problems = []
    for name, d in dists.items():
        tags = frozenset(t for line in d.wheel_tags for t in wheeltags.parse_tag_line(line))
        if not tags & accepted:
            problems.append(f"{name} {d.version} was installed from a wheel tagged {', '.join(d.wheel_tags)}, which "
                            f"CPython {ctx.py.python_minor} on {ctx.py.platform} (glibc {ctx.py.glibc or '?'}) does not accept")
    if problems:
        return fail("; ".join(problems))
    return ok(", ".join(f"{n}: {', '.join(d.wheel_tags)}" for n, d in dists.items()) + f" fit {ctx.py.python_tag}")


@check
def known_bad_pairs(ctx: Context) -> Finding:
    """Installed dependency versions known to break an import (data/known_bad.yaml, measured)."""
    pairs = load_known_bad().pairs
    versions: dict[str, str] = {str(canonicalize_name(n)): d.version for n, d in ctx.py.dists.items()}
    present = [p.package for p in pairs if canonicalize_name(p.package) in versions]
    if not present:
        return skip("none of " + ", ".join(sorted({p.package for p in pairs})) + " is installed")
    breaks = installed_breaks(versions, pairs)
    if breaks:
        return fail("; ".join(breaks))
    return ok(", ".join(f"{n} {versions[canonicalize_name(n)]}" for n in present) + ": no known-bad dependency version")
