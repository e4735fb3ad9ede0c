"""Static checks of a wheel file, on any machine: name vs METADATA vs WHEEL tags, RECORD, provenance,
shared-library dependencies, GLIBC/GLIBCXX symbol versions and the CUDA archs embedded in each library."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from packaging.tags import parse_tag
from packaging.utils import canonicalize_name
from packaging.version import Version

from buildtool.binary.elf import ElfInfo, is_elf, read_elf_bytes
from buildtool.binary.fatbin import FATBIN_SECTION
from buildtool.errors import BuildtoolError
from buildtool.spec.abitrack import is_stable_library
from buildtool.verify.models import CheckResult, failed, passed, skipped
from buildtool.verify.policy import VerifyPolicy, load_policy
from buildtool.versions import major_minor
from buildtool.wheel.name import WheelName
from buildtool.wheel.provenance import PROVENANCE_FILE, Provenance, ProvenanceError
from buildtool.wheel.reader import open_wheel_file


@dataclass
class OpenedWheel:
    """Everything the static checks read from one wheel, read once."""

    path: Path
    name: WheelName
    names: list[str]
    dist_info: str | None
    metadata: dict[str, list[str]] = field(default_factory=dict)
    wheel_meta: dict[str, list[str]] = field(default_factory=dict)
    provenance: Provenance | None = None
    provenance_error: str | None = None  # why the provenance file that is there could not be read
    elves: dict[str, ElfInfo] = field(default_factory=dict)
    elf_errors: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def cuda_major(self) -> int | None:
        return self.name.label.cuda_major if self.name.label else None

    @property
    def extension_modules(self) -> list[str]:
        """Importable extension modules at the top level or in packages: 'causal_conv1d_cuda'. A stable-ABI
        library is not importable (torch loads it): its shims, the wheel's top-level modules, stand for it."""
        mods = []
        stable = False
        for n in self.elves:
            base = n.rsplit("/", 1)[-1]
            if ".libs/" in n or base.startswith("lib"):
                continue
            if is_stable_library(base):
                stable = True
                continue
            mods.append(n.split(".", 1)[0].replace("/", "."))
        if stable:
            mods += [n[:-3] for n in self.names if "/" not in n and n.endswith(".py")]
        return sorted(mods)


def _headers(text: str) -> dict[str, list[str]]:
    msg = HeaderParser().parsestr(text)
    out: dict[str, list[str]] = {}
    for k, v in msg.items():
        out.setdefault(k, []).append(v)
    return out


def open_wheel(path: Path) -> OpenedWheel:
    """Read a wheel's metadata, provenance and shared libraries. A file that is not a zip is a UserError."""
    name = WheelName.parse(path.name)
    # damaged or truncated: a clear error naming the file and member, never a traceback
    with open_wheel_file(path) as wheel:
        wc = OpenedWheel(path=path, name=name, names=wheel.names, dist_info=wheel.dist_info)
        for attr, member in (("metadata", "METADATA"), ("wheel_meta", "WHEEL")):
            if (found := wheel.info_member(member)) is not None:
                setattr(wc, attr, _headers(wheel.read(found).decode("utf-8", "replace")))
        try:
            wc.provenance = wheel.provenance()
        except ProvenanceError as exc:
            wc.provenance_error = exc.message.removeprefix(f"{wheel.info_member(PROVENANCE_FILE)}: ")
        for n, data in wheel.shared_libraries():
            if not is_elf(data):
                wc.elf_errors[n] = "not an ELF file"
                continue
            try:
                info = read_elf_bytes(data, sections=(FATBIN_SECTION,))
                if info is None:
                    raise ValueError("pyelftools could not parse it")
                info.fatbin  # noqa: B018 - parse the fatbin now: a corrupt one is this library's error
            except (ValueError, struct_error) as exc:
                wc.elf_errors[n] = f"unreadable ELF ({exc})"
            else:
                wc.elves[n] = info
    return wc


struct_error = __import__("struct").error


# ---------------------------------------------------------------- name, METADATA, WHEEL tags
def check_name_metadata_tags(wc: OpenedWheel) -> CheckResult:
    check = "name/METADATA/tags"
    if wc.dist_info is None:
        return failed(wc.label, check, "the wheel must contain exactly one .dist-info directory")
    problems: list[str] = []
    expected_info = f"{wc.name.dist}-{wc.name.full_version}.dist-info"
    info_name, _, info_version = wc.dist_info.removesuffix(".dist-info").rpartition("-")
    if canonicalize_name(info_name) != wc.name.project or info_version != wc.name.full_version:
        problems.append(f"dist-info directory {wc.dist_info} != {expected_info}")
    name = (wc.metadata.get("Name") or [""])[0]
    version = (wc.metadata.get("Version") or [""])[0]
    if not wc.metadata:
        problems.append(f"{wc.dist_info}/METADATA is missing")
    else:
        if canonicalize_name(name) != wc.name.project:
            problems.append(f"METADATA Name {name!r} != file name's {wc.name.dist!r}")
        if version != wc.name.full_version:
            problems.append(f"METADATA Version {version!r} != file name's {wc.name.full_version!r}")
    if not wc.wheel_meta:
        problems.append(f"{wc.dist_info}/WHEEL is missing")
    else:
        file_tags = {str(t) for t in parse_tag(f"{wc.name.python_tag}-{wc.name.abi_tag}-{wc.name.platform_tag}")}
        wheel_tags = {str(t) for v in wc.wheel_meta.get("Tag", []) for t in parse_tag(v)}
        if wheel_tags != file_tags:
            problems.append(f"WHEEL Tag {sorted(wheel_tags)} != file name's tags {sorted(file_tags)}")
        if (wc.wheel_meta.get("Root-Is-Purelib") or ["false"])[0].strip().lower() == "true" and wc.elves:
            problems.append("WHEEL says Root-Is-Purelib: true but the wheel holds compiled libraries")
    if problems:
        return failed(wc.label, check, "; ".join(problems))
    return passed(wc.label, check, f"{name} {version}, tags {wc.name.python_tag}-{wc.name.abi_tag}-{wc.name.platform_tag}")


# ---------------------------------------------------------------- RECORD
def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def check_record(wc: OpenedWheel) -> CheckResult:
    check = "RECORD"
    if wc.dist_info is None or f"{wc.dist_info}/RECORD" not in wc.names:
        return failed(wc.label, check, "RECORD is missing")
    record_name = f"{wc.dist_info}/RECORD"
    problems: list[str] = []
    with open_wheel_file(wc.path, check=False) as wheel:
        rows = wheel.record_rows() or []
        listed: dict[str, tuple[str, str]] = {}
        for row in rows:
            if not row:
                continue
            if len(row) != 3:
                problems.append(f"malformed RECORD row {row!r}")
                continue
            listed[row[0]] = (row[1], row[2])
        files = [n for n in wc.names if not n.endswith("/")]
        unsigned = {record_name, f"{wc.dist_info}/RECORD.jws", f"{wc.dist_info}/RECORD.p7s"}
        for n in files:
            if n not in listed:
                problems.append(f"{n} is in the wheel but not in RECORD")
                continue
            if n in unsigned:
                continue
            want_hash, want_size = listed[n]
            data = wheel.read(n)
            got = _digest(data)
            if want_hash != got:
                problems.append(f"hash mismatch for {n}: RECORD {want_hash or '(none)'}, file {got}")
            if want_size != str(len(data)):
                problems.append(f"size mismatch for {n}: RECORD {want_size or '(none)'}, file {len(data)}")
        for n in listed:
            if n not in files:
                problems.append(f"RECORD lists {n}, which is not in the wheel")
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        return failed(wc.label, check, "; ".join(problems[:5]) + more, problems=len(problems))
    return passed(wc.label, check, f"{len(listed)} entries, sha256 and sizes match", files=len(listed))


# ---------------------------------------------------------------- provenance
def declared_archs(prov: Provenance | None) -> tuple[list[str], bool] | None:
    """(['8.0', '9.0'], ptx) from the provenance's cell; None when there is none or it states no archs."""
    if prov is None or not prov.cell.archs:
        return None
    return list(prov.cell.archs), prov.cell.ptx


def check_provenance(wc: OpenedWheel) -> CheckResult:
    """The provenance is there and reads as the typed model (buildtool.wheel.provenance: every field the
    wheel stage writes, compile flags per module) and states the archs."""
    check = "provenance"
    file = f"{wc.dist_info}/{PROVENANCE_FILE}"
    if wc.provenance is None:
        why = f"{file} {wc.provenance_error}" if wc.provenance_error else f"{file} is missing"
        return failed(wc.label, check, why + " (the wheel stage writes it; without it nobody can tell how the wheel was built)")
    if not wc.provenance.modules:
        return failed(wc.label, check, f"{file} lists no modules (their compile flags)")
    archs = declared_archs(wc.provenance)
    if archs is None:
        return failed(wc.label, check, f"{file} states no archs (cell.archs)")
    return passed(wc.label, check, f"archs {';'.join(archs[0])}{' +PTX' if archs[1] else ''}",
                  archs=list(archs[0]), ptx=archs[1])


# ---------------------------------------------------------------- shared libraries
@dataclass(frozen=True)
class TargetLibs:
    """Library files the target environment provides: torch/lib and the nvidia-* wheels' lib dirs."""

    names: frozenset[str]
    where: str
    torch_version: str | None = None  # e.g. '2.11.0+cu130', read from torch/version.py without importing torch

    @classmethod
    def discover(cls, site_dirs: Iterable[Path] | None = None) -> TargetLibs | None:
        """From the interpreter's torch (found without importing it) or from given site-packages dirs."""
        roots: list[Path] = []
        if site_dirs is None:
            import importlib.util
            spec = importlib.util.find_spec("torch")
            if spec is None or not spec.submodule_search_locations:
                return None
            roots.append(Path(next(iter(spec.submodule_search_locations))).parent)
        else:
            roots.extend(site_dirs)
        names: set[str] = set()
        version = None
        for root in roots:
            vfile = root / "torch" / "version.py"
            if vfile.is_file():
                m = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", vfile.read_text(errors="replace"), re.M)
                version = m[1] if m else version
            for pattern in ("torch/lib/*.so*", "nvidia/*/lib/*.so*", "nvidia/*/*/lib/*.so*", "nvidia/*/lib64/*.so*"):
                names.update(p.name for p in root.glob(pattern))
        if not names:
            return None
        return cls(frozenset(names), ", ".join(str(r) for r in roots), version)

    def serves(self, wheel: WheelName) -> str | None:
        """None when this torch is the wheel's target (same A.B, a CUDA build of the same major; stable ABI: any
        torch of the same CUDA major, the floor being pip's business through Requires-Dist), else why not."""
        if wheel.label is None or self.torch_version is None:
            return None
        public, _, local = self.torch_version.partition("+")
        minor = major_minor(public)
        if wheel.label.torch is not None and minor != wheel.label.torch:
            return f"the torch here is {self.torch_version}, the wheel targets torch {wheel.label.torch}"
        if local and not local.startswith(f"cu{wheel.label.cuda_major}"):
            return f"the torch here is {self.torch_version}, the wheel targets CUDA {wheel.label.cuda}"
        return None


def check_shared_libs(wc: OpenedWheel, target: TargetLibs | None, policy: VerifyPolicy | None = None) -> CheckResult:
    check = "shared libs"
    policy = policy or load_policy()
    if wc.elf_errors:
        return failed(wc.label, check, "; ".join(f"{n}: {e}" for n, e in wc.elf_errors.items()))
    if not wc.elves:
        if any(n.endswith((".pyd", ".dll")) for n in wc.names):
            return skipped(wc.label, check, "Windows wheel: ELF checks do not apply")
        return skipped(wc.label, check, "no shared libraries in this wheel")
    bundled = [n for n in wc.names if policy.is_forbidden(n)]
    own = {n.rsplit("/", 1)[-1] for n in wc.elves} | {e.soname for e in wc.elves.values() if e.soname}
    unresolved: list[str] = []
    needed_all: set[str] = set()
    not_target = target.serves(wc.name) if target is not None else None
    if not_target:
        target = None
    for lib, info in wc.elves.items():
        for need in info.needed:
            needed_all.add(need)
            if need in policy.system_libs or need in own:
                continue
            known = policy.is_torch_lib(need) or policy.is_cuda_lib(need, wc.cuda_major)
            if target is not None:
                if need in target.names or (known and need == "libcuda.so.1"):
                    continue
                unresolved.append(f"{lib.rsplit('/', 1)[-1]} needs {need}, which the target torch ({target.where}) does not provide")
            elif not known:
                unresolved.append(f"{lib.rsplit('/', 1)[-1]} needs {need}, which is neither a system, torch nor CUDA {wc.cuda_major} library")
    problems = [f"bundles {n} (torch/CUDA libraries must come from the installed torch)" for n in bundled] + unresolved
    if problems:
        return failed(wc.label, check, "; ".join(problems), needed=sorted(needed_all))
    how = (f"resolved against {target.where}" if target else
           f"checked against the torch/CUDA/system library lists ({not_target or 'no torch found here'})")
    return passed(wc.label, check, f"{len(wc.elves)} libraries, {how}; nothing bundled", needed=sorted(needed_all))


# ---------------------------------------------------------------- GLIBC / GLIBCXX
def _fmt(v: Version | None) -> str:
    return str(v) if v else "-"


def _max_version(e: ElfInfo, prefix: str) -> Version | None:
    found = e.max_version(prefix)
    return Version(found) if found else None


def check_glibc(wc: OpenedWheel, policy: VerifyPolicy | None = None) -> CheckResult:
    check = "glibc symbols"
    policy = policy or load_policy()
    if not wc.elves:
        return skipped(wc.label, check, "no ELF libraries")
    maxes = {p: max((v for e in wc.elves.values() if (v := _max_version(e, p + "_"))), default=None)
             for p in ("GLIBC", "GLIBCXX", "CXXABI")}
    numbers = {p: _fmt(v) for p, v in maxes.items()}
    version, limits = policy.glibc_for(wc.name.platform_tag)
    if not version:
        return passed(wc.label, check, f"platform tag {wc.name.platform_tag} promises no glibc; needs GLIBC {numbers['GLIBC']}, "
                      f"GLIBCXX {numbers['GLIBCXX']}", **numbers)
    if limits is None:
        return failed(wc.label, check, f"no symbol policy for manylinux glibc {version} in verify.yaml")
    problems = []
    for prefix in ("GLIBC", "GLIBCXX", "CXXABI"):
        limit = getattr(limits, prefix)
        allowed = Version(limit) if limit else None
        got = maxes[prefix]
        if got and allowed and got > allowed:
            worst = sorted({lib.rsplit("/", 1)[-1] for lib, e in wc.elves.items() if (v := _max_version(e, prefix + "_")) and v > allowed})
            problems.append(f"needs {prefix}_{_fmt(got)} > {prefix}_{_fmt(allowed)} allowed by {wc.name.platform_tag} ({', '.join(worst)})")
    if problems:
        return failed(wc.label, check, "; ".join(problems), **numbers)
    return passed(wc.label, check, f"max GLIBC {numbers['GLIBC']}, GLIBCXX {numbers['GLIBCXX']} fit manylinux {version}", **numbers)


# ---------------------------------------------------------------- CUDA archs
def find_cuobjdump() -> str | None:
    """$BUILDTOOL_CUOBJDUMP, else cuobjdump from PATH, $CUDA_HOME/bin, /usr/local/cuda/bin or triton's copy."""
    found = os.environ.get("BUILDTOOL_CUOBJDUMP") or shutil.which("cuobjdump")
    if found:
        return found
    for base in filter(None, (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda")):
        cand = Path(base) / "bin" / "cuobjdump"
        if cand.is_file():
            return str(cand)
    import importlib.util
    spec = importlib.util.find_spec("triton")
    if spec and spec.submodule_search_locations:
        cand = Path(next(iter(spec.submodule_search_locations))) / "backends" / "nvidia" / "bin" / "cuobjdump"
        if cand.is_file():
            return str(cand)
    return None


_CUOBJ_LINE = re.compile(r"^(ELF|PTX) file\s+\d+:\s+\S*?\.(?:sm|compute)_(\d+)[a-z]?\.(?:cubin|ptx)\s*$")


def cuobjdump_archs(cuobjdump: str, so_bytes: bytes) -> tuple[set[int], set[int]]:
    """(cubin archs, ptx archs) as cuobjdump lists them."""
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".so") as tmp:
        tmp.write(so_bytes)
        tmp.flush()
        cubins: set[int] = set()
        ptx: set[int] = set()
        for flag, into in (("--list-elf", cubins), ("--list-ptx", ptx)):
            proc = subprocess.run([cuobjdump, flag, tmp.name], capture_output=True, text=True, check=False)
            for line in proc.stdout.splitlines():
                m = _CUOBJ_LINE.match(line.strip())
                if m:
                    into.add(int(m[2]))
    return cubins, ptx


_SASS_FUNCTION = re.compile(r"\s*Function : (\S+)")
_SASS_ADDRESS = re.compile(r"/\*[0-9a-f]{4,}\*/")


def sass_by_kernel(cuobjdump: str, binary: Path, arch: str | None = None) -> dict[str, list[str]]:
    """Each kernel's SASS (``cuobjdump -sass``), per arch and kernel name, without the address comments
    (they encode only the position) and without the fatbin headers (they name the source file). ``arch``
    (e.g. ``sm_90``): that arch's code only (a nine-arch module's SASS is tens of millions of lines)."""
    only = ["-arch", arch] if arch else []
    proc = subprocess.run([cuobjdump, "-sass", *only, str(binary)], capture_output=True, text=True, check=True)
    kernels: dict[str, list[str]] = {}
    current: list[str] | None = None
    arch = ""
    for line in proc.stdout.splitlines():
        if line.startswith("arch = "):
            arch = line.split("=", 1)[1].strip()
        head = _SASS_FUNCTION.match(line)
        if head:
            current = kernels.setdefault(f"{arch}:{head.group(1)}", [])
        elif line.startswith("Fatbin") or line.strip().startswith("....."):
            current = None
        elif current is not None:
            current.append(_SASS_ADDRESS.sub("", line).strip())
    return kernels


def _arch_num(arch: str) -> int:
    major, minor = arch.rstrip("a").rstrip("f").split(".")
    return int(major) * 10 + int(minor)


def check_cuda_archs(wc: OpenedWheel, cuobjdump: str | None) -> CheckResult:
    check = "cuda archs"
    libs = {n: e for n, e in wc.elves.items() if e.has_fatbin_section}
    if not wc.elves:
        return skipped(wc.label, check, "no ELF libraries")
    if not libs:
        return failed(wc.label, check, "no library in the wheel embeds CUDA code (.nv_fatbin)")
    declared = declared_archs(wc.provenance)
    found: dict[str, tuple[set[int], set[int]]] = {}
    disagree: list[str] = []
    with open_wheel_file(wc.path, check=False) as wheel:
        for n, e in libs.items():
            cubins, ptx = set(e.cubin_archs), set(e.ptx_archs)
            if cuobjdump:
                c2, p2 = cuobjdump_archs(cuobjdump, wheel.read(n))
                if (c2, p2) != (cubins, ptx):
                    disagree.append(f"{n}: cuobjdump sm {sorted(c2)} ptx {sorted(p2)} vs reader sm {sorted(cubins)} ptx {sorted(ptx)}")
                    cubins, ptx = c2 or cubins, p2 or ptx
            found[n] = (cubins, ptx)
    summary = "; ".join(f"{n.rsplit('/', 1)[-1]}: sm_{','.join(map(str, sorted(c)))}"
                        + (f" ptx {','.join(map(str, sorted(p)))}" if p else "") for n, (c, p) in found.items())
    tool = "cuobjdump" if cuobjdump else "built-in fatbin reader (no cuobjdump found)"
    numbers: dict[str, Any] = {"tool": tool, "cubin": sorted(set().union(*(c for c, _ in found.values()))),
                               "ptx": sorted(set().union(*(p for _, p in found.values())))}
    if declared is None:
        return failed(wc.label, check, f"no declared archs to compare with (provenance missing); embedded: {summary}", **numbers)
    archs, want_ptx = declared
    problems = []
    for n, (cubins, ptx) in found.items():
        missing = [a for a in archs if _arch_num(a) not in cubins]
        if missing:
            problems.append(f"{n.rsplit('/', 1)[-1]} lacks sm_{', sm_'.join(a.replace('.', '') for a in missing)} (declared {';'.join(archs)})")
        if want_ptx and _arch_num(archs[-1]) not in ptx:
            problems.append(f"{n.rsplit('/', 1)[-1]} lacks PTX for compute_{archs[-1].replace('.', '')} (declared +PTX)")
    problems += [f"cuobjdump and the fatbin reader disagree: {d}" for d in disagree if not cuobjdump]
    if problems:
        return failed(wc.label, check, "; ".join(problems), **numbers)
    return passed(wc.label, check, f"{summary} (by {tool})", **numbers)


def static_checks(path: Path, *, target: TargetLibs | None = None, cuobjdump: str | None = None) -> tuple[OpenedWheel | None, list[CheckResult]]:
    """All static checks of one wheel (stable-ABI wheels: verify.stableabi adds its own). A wheel that cannot
    be opened yields one failed row."""
    try:
        wc = open_wheel(path)
    except BuildtoolError as exc:
        return None, [failed(path.name, "open", exc.message)]
    rows = [
        check_name_metadata_tags(wc),
        check_record(wc),
        check_provenance(wc),
        check_shared_libs(wc, target),
        check_glibc(wc),
        check_cuda_archs(wc, cuobjdump),
    ]
    return wc, rows
