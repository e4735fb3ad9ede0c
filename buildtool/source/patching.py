"""Source patches: parse, choose, check and apply unified diffs, in pure Python (no `patch` binary).

A patch file ``patches/<package>/<name>.patch`` is a YAML header followed by a unified diff (``git diff``
output). Everything before the first ``diff --git`` / ``--- `` line is the header, so ``git apply`` accepts
the file as it is::

    summary: define M_LOG2E where MSVC lacks it
    reference: MS-1                      # id in docs/sources-and-patches.md / the reference notes
    versions: ">=2.1.0,<2.4"             # PEP 440 specifier over the recipe versions
    platforms: [linux-x86_64, windows-x86_64]   # optional; default: every platform
    abi: stable                          # optional: only stable-ABI (or only `full`) builds; default: both
    fixes: |
      error: identifier "M_LOG2E" is undefined
    upstream: state-spaces/mamba PR #846 (open)
    diff --git a/csrc/... b/csrc/...
    ...

Application is exact: every context and removed line must match byte for byte (line endings aside); a
hunk may sit at another line than its header says (offset), never with fuzz. :func:`plan` checks every
selected patch, in order, on in-memory file texts before :func:`apply_to_tree` writes anything, and a
failure names the patch, the file and the hunk and shows the expected against the actual lines.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import field_validator

from buildtool.errors import Location, UserError, allowed_list, did_you_mean
from buildtool.model import Frozen
from buildtool.spec import yamlsrc
from buildtool.spec.abitrack import AbiTrack
from buildtool.spec.compat import PLATFORMS

# ---------------------------------------------------------------------------------------------- model


class PatchHeader(Frozen):
    summary: str
    reference: str = ""
    versions: str
    platforms: tuple[str, ...] = ()
    abi: AbiTrack | None = None  # None: both tracks; "stable": only stable-ABI builds (the binding ports)
    fixes: str
    upstream: str
    notes: str = ""

    @field_validator("versions")
    @classmethod
    def _spec(cls, v: str) -> str:
        try:
            SpecifierSet(v)
        except InvalidSpecifier as exc:
            raise ValueError(f"not a PEP 440 version specifier: {exc}") from None
        return v

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            if not any(fnmatch(known, p) for known in PLATFORMS):
                raise ValueError(f'unknown platform "{p}"{did_you_mean(p, PLATFORMS)}; allowed: {", ".join(PLATFORMS)}')
        return v


class HunkLine(Frozen):
    op: str  # " ", "-" or "+"
    text: str  # without the line ending
    eol: bool = True  # False when followed by "\ No newline at end of file"


class Hunk(Frozen):
    header: str
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    lines: tuple[HunkLine, ...]

    @property
    def old(self) -> list[HunkLine]:
        return [ln for ln in self.lines if ln.op != "+"]

    @property
    def new(self) -> list[HunkLine]:
        return [ln for ln in self.lines if ln.op != "-"]


class FilePatch(Frozen):
    old_path: str | None  # None: new file
    new_path: str | None  # None: deleted file
    hunks: tuple[Hunk, ...]

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or ""


class Patch(Frozen):
    name: str  # e.g. "mamba-ssm/msvc-m-log2e.patch"
    package: str
    sha256: str
    header: PatchHeader
    files: tuple[FilePatch, ...]

    def applies_to(self, version: str, platform: str, abi: AbiTrack = "full") -> bool:
        if Version(version) not in SpecifierSet(self.header.versions, prereleases=True):
            return False
        if self.header.abi is not None and self.header.abi != abi:
            return False
        return not self.header.platforms or any(fnmatch(platform, p) for p in self.header.platforms)


class AppliedPatch(Frozen):
    """What provenance.json records per patch."""

    name: str
    sha256: str
    reference: str
    files: tuple[str, ...]


# ---------------------------------------------------------------------------------------------- parsing

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_DIFF_START = re.compile(r"^(diff --git |--- )")


def _strip_prefix(path: str) -> str | None:
    path = path.split("\t", 1)[0].strip()
    if path == "/dev/null":
        return None
    if path.startswith(("a/", "b/")):
        path = path[2:]
    return path


def parse_diff(text: str, name: str = "<patch>") -> tuple[FilePatch, ...]:
    """Parse the unified-diff part of a patch (git or plain ``diff -u`` style)."""
    lines = text.splitlines()
    files: list[FilePatch] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("--- "):
            i += 1
            continue
        if i + 1 >= len(lines) or not lines[i + 1].startswith("+++ "):
            raise UserError(f"malformed patch {name}: '---' at line {i + 1} is not followed by '+++'")
        old_path, new_path = _strip_prefix(lines[i][4:]), _strip_prefix(lines[i + 1][4:])
        for target in (old_path, new_path):
            if target is not None and (target.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", target)
                                       or re.match(r"^[A-Za-z]:", target)):
                raise UserError(f"patch {name}: line {i + 1} targets {target!r}, outside the source tree; "
                                "paths must be relative and stay inside it")
        i += 2
        hunks: list[Hunk] = []
        while i < len(lines) and lines[i].startswith("@@"):
            m = _HUNK.match(lines[i])
            if not m:
                raise UserError(f"malformed patch {name}: bad hunk header at line {i + 1}: {lines[i]!r}")
            header_line = lines[i]
            old_start, new_start = int(m.group(1)), int(m.group(3))
            old_len = int(m.group(2)) if m.group(2) is not None else 1
            new_len = int(m.group(4)) if m.group(4) is not None else 1
            i += 1
            body: list[HunkLine] = []
            seen_old = seen_new = 0
            while i < len(lines) and (seen_old < old_len or seen_new < new_len or
                                      (i < len(lines) and lines[i].startswith("\\"))):
                raw = lines[i]
                if raw.startswith("\\"):
                    if body:
                        body[-1] = body[-1].model_copy(update={"eol": False})
                    i += 1
                    continue
                op = raw[:1] if raw else " "
                if op not in (" ", "-", "+"):
                    raise UserError(f"malformed patch {name}: hunk {len(hunks) + 1} of {new_path or old_path} "
                                    f"ends early at line {i + 1} (header says -{old_len} +{new_len})")
                body.append(HunkLine(op=op, text=raw[1:]))
                seen_old += op != "+"
                seen_new += op != "-"
                i += 1
            if seen_old != old_len or seen_new != new_len:
                raise UserError(f"malformed patch {name}: hunk {len(hunks) + 1} of {new_path or old_path} has "
                                f"-{seen_old} +{seen_new} lines, header says -{old_len} +{new_len}")
            hunks.append(Hunk(header=header_line, old_start=old_start, old_len=old_len, new_start=new_start,
                              new_len=new_len, lines=tuple(body)))
        if not hunks:
            raise UserError(f"malformed patch {name}: {new_path or old_path} has no hunks")
        files.append(FilePatch(old_path=old_path, new_path=new_path, hunks=tuple(hunks)))
    if not files:
        raise UserError(f"patch {name} contains no diff")
    return tuple(files)


def parse_patch(text: str, name: str, package: str, *, file: str | None = None) -> Patch:
    """Split ``text`` into its YAML header and diff and validate both."""
    lines = text.splitlines(keepends=True)
    cut = next((n for n, line in enumerate(lines) if _DIFF_START.match(line)), None)
    if cut is None:
        raise UserError(f"patch {name} contains no diff (no 'diff --git' or '---' line)")
    header_text = "".join(lines[:cut])
    doc = yamlsrc.parse(header_text, file or name)
    if not isinstance(doc.data, dict) or not doc.data:
        raise UserError(f"patch {name} has no header (summary, versions, fixes, upstream before the diff)",
                        location=Location(file or name, 1))
    header: PatchHeader = yamlsrc.validate(PatchHeader, doc)
    return Patch(name=name, package=package, sha256=hashlib.sha256(text.encode()).hexdigest(), header=header,
                 files=parse_diff("".join(lines[cut:]), name))


def load_patch(path: Path, patches_dir: Path) -> Patch:
    rel = path.relative_to(patches_dir).as_posix()
    package = rel.split("/", 1)[0]
    raw = yamlsrc.read_bytes(path, what="patch")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(f"patch {rel} is not UTF-8: byte 0x{raw[exc.start]:02x} cannot start a character",
                        location=Location(str(path), line)) from None
    patch = parse_patch(text, rel, package, file=str(path))
    # Hash the bytes on disk (what a reviewer can sha256sum), not the decoded text.
    return patch.model_copy(update={"sha256": hashlib.sha256(raw).hexdigest()})


def load_patches(patches_dir: Path, package: str | None = None) -> list[Patch]:
    """All patches (of ``package``), sorted by name: the order they apply in."""
    if not patches_dir.is_dir():
        return []
    pattern = f"{package}/*.patch" if package else "*/*.patch"
    return [load_patch(p, patches_dir) for p in sorted(patches_dir.glob(pattern))]


def select(patches: Iterable[Patch], version: str, platform: str, abi: AbiTrack = "full") -> list[Patch]:
    return [p for p in patches if p.applies_to(version, platform, abi)]


# ---------------------------------------------------------------------------------------------- applying


@dataclass(frozen=True)
class HunkFailure:
    patch: str
    file: str
    hunk: int  # 1-based
    header: str
    message: str
    expected: tuple[str, ...] = ()
    actual: tuple[str, ...] = ()
    at_line: int | None = None

    def one_line(self) -> str:
        where = f"{self.file}" + (f" hunk {self.hunk} ({self.header})" if self.hunk else "")
        return f"patch {self.patch}: {where}: {self.message}"

    def detail(self) -> str:
        if not self.expected and not self.actual:
            return ""
        out = [f"expected at line {self.at_line}:" if self.at_line else "expected:"]
        out += [f"    |{t}" for t in self.expected]
        out.append("found:")
        first_diff = next((k for k, (e, a) in enumerate(zip(self.expected, self.actual, strict=False)) if e != a),
                          min(len(self.expected), len(self.actual)))
        for k, t in enumerate(self.actual):
            out.append(f"  {'>' if k == first_diff else ' '} |{t}")
        if not self.actual:
            out.append("    (end of file)")
        return "\n".join(out)


class PatchConflict(UserError):
    """One or more selected patches do not apply; nothing was written."""

    def __init__(self, failures: list[HunkFailure], context: str) -> None:
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        message = f"{first.one_line()}{more} [{context}]"
        details = "\n".join(f"{f.one_line()}\n{f.detail()}" if f.detail() else f.one_line() for f in failures)
        super().__init__(message, hint="nothing was applied; the patch was written for other sources:\n" + details)
        self.failures = failures


def _split(text: str) -> tuple[list[str], str, bool]:
    """Lines without endings, the file's dominant line ending, whether the last line ends with one."""
    eol = "\r\n" if text.count("\r\n") > text.count("\n") // 2 and "\r\n" in text else "\n"
    lines = text.splitlines()
    return lines, eol, text.endswith(("\n", "\r"))


def _find(lines: list[str], block: list[str], expected: int, lower: int) -> int | None:
    """Exact match of ``block`` nearest to ``expected`` at or after ``lower``."""
    n, m = len(lines), len(block)
    if m == 0:
        return max(lower, min(expected, n))
    best = None
    for delta in range(0, n + 1):
        for pos in ((expected + delta, expected - delta) if delta else (expected,)):
            if lower <= pos <= n - m and lines[pos:pos + m] == block:
                best = pos
                break
        if best is not None:
            return best
    return None


def apply_file_patch(text: str | None, fp: FilePatch, patch_name: str) -> tuple[str | None, list[HunkFailure]]:
    """Pure: the new text of one file (None: deleted), or the failures. ``text`` None: file is absent."""
    path = fp.path
    if fp.old_path is None:
        if text is not None:
            return None, [HunkFailure(patch_name, path, 0, "", "creates a file that already exists")]
        lines: list[str] = []
        eol, final_eol = "\n", True
    elif text is None:
        return None, [HunkFailure(patch_name, path, 0, "", "file not found in the source tree")]
    else:
        lines, eol, final_eol = _split(text)
    failures: list[HunkFailure] = []
    offset = 0
    lower = 0
    for k, hunk in enumerate(fp.hunks, start=1):
        old = [ln.text for ln in hunk.old]
        start = (hunk.old_start - 1 if hunk.old_len else hunk.old_start) + offset
        pos = _find(lines, old, max(0, start), lower)
        if pos is None:
            at = max(0, min(start, len(lines)))
            failures.append(HunkFailure(
                patch_name, path, k, hunk.header, "context does not match (no fuzz is allowed)",
                expected=tuple(old), actual=tuple(lines[at:at + len(old)]), at_line=at + 1))
            continue
        new = [ln.text for ln in hunk.new]
        lines[pos:pos + len(old)] = new
        if hunk.new and pos + len(new) == len(lines):
            final_eol = hunk.new[-1].eol
        offset = pos - (hunk.old_start - 1 if hunk.old_len else hunk.old_start) + (len(new) - len(old))
        lower = pos + len(new)
    if failures:
        return None, failures
    if fp.new_path is None:
        return None, []
    body = eol.join(lines)
    return (body + eol if lines and final_eol else body), []


@dataclass(frozen=True)
class Plan:
    """The outcome of checking a patch sequence on file texts: new texts per touched file, in order."""

    files: dict[str, str | None]  # path -> new text (None: delete)
    applied: tuple[AppliedPatch, ...]


def plan(read: Callable[[str], str | None] | Mapping[str, str], patches: Iterable[Patch], *,
         context: str = "") -> Plan:
    """Check ``patches`` in order against file texts (``read(path)`` or ``read[path]``; None / missing:
    absent) without touching disk.
    Raises PatchConflict listing every failing hunk of every patch."""
    current: dict[str, str | None] = {}
    failures: list[HunkFailure] = []
    applied: list[AppliedPatch] = []

    def text_of(path: str) -> str | None:
        if path in current:
            return current[path]
        return read.get(path) if isinstance(read, Mapping) else read(path)

    for patch in patches:
        staged: dict[str, str | None] = {}
        patch_failures: list[HunkFailure] = []
        for fp in patch.files:
            source_path = fp.old_path or fp.path
            before = staged[source_path] if source_path in staged else text_of(source_path)
            new_text, errs = apply_file_patch(before, fp, patch.name)
            patch_failures += errs
            if not errs:
                staged[fp.path] = new_text
        if patch_failures:
            failures += patch_failures
            continue
        current.update(staged)
        applied.append(AppliedPatch(name=patch.name, sha256=patch.sha256, reference=patch.header.reference,
                                    files=tuple(fp.path for fp in patch.files)))
    if failures:
        raise PatchConflict(failures, context)
    return Plan(files=current, applied=tuple(applied))


def tree_reader(root: Path) -> Callable[[str], str | None]:
    """``path -> text`` of files under ``root`` (None when absent); bytes that are not UTF-8 survive."""

    def read(rel: str) -> str | None:
        path = root / rel
        return path.read_bytes().decode("utf-8", errors="surrogateescape") if path.is_file() else None

    return read


def check_tree(root: Path, patches: Iterable[Patch], *, context: str = "") -> Plan:
    return plan(tree_reader(root), patches, context=context)


def apply_to_tree(root: Path, patches: Iterable[Patch], *, context: str = "") -> tuple[AppliedPatch, ...]:
    """Check all ``patches`` first, then write the results under ``root``; returns what was applied."""
    result = check_tree(root, list(patches), context=context)
    resolved = root.resolve()
    for rel, text in result.files.items():
        target = root / rel
        if not target.resolve().is_relative_to(resolved):
            raise UserError(f"patch path {rel!r} points outside the source tree")
        if text is None:
            target.unlink(missing_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    return result.applied


def describe(patches: Iterable[Patch]) -> str:
    names = [p.name for p in patches]
    return allowed_list(names) if names else "none"
