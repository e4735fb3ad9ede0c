"""Portability scanner for package sources: finds what breaks MSVC + nvcc (Windows) or CUDA 13, so Windows
fixes can be checked on a machine without MSVC. Rules are data (``buildtool/data/lint_rules.yaml``); this
module implements the check kinds:

- ``regex``: a pattern on comment- and string-free code, line by line (``unless_file_matches``,
  ``unless_tree_matches`` and ``skip_lines_matching`` narrow it);
- ``directive-in-macro-args``: a ``#`` directive line inside the argument list of a macro call;
- ``constexpr-in-macro-definition``: ``constexpr`` without ``static`` in a macro's ``#define`` body;
- ``constexpr-captured-by-macro``: a non-static ``constexpr`` local (in the macro's arguments or in the
  block around the call) used as a template argument inside the call;
- ``arch-below``: ``compute_XY``/``sm_XY`` below a threshold in build scripts.

``scan(root, platform=None, cuda=None) -> LintReport``; the CLI is ``buildtool lint-source``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from packaging.specifiers import SpecifierSet
from packaging.version import Version
from pydantic import Field

from buildtool.errors import UserError
from buildtool.model import Frozen
from buildtool.spec import yamlsrc

_SKIP_DIRS = frozenset({".git", ".buildtool", "__pycache__", "build", "dist", ".venv", "node_modules"})


class RegexCheck(Frozen):
    kind: Literal["regex"]
    pattern: str
    unless_file_matches: str | None = None
    unless_tree_matches: str | None = None
    skip_lines_matching: str | None = None


class MacroCheck(Frozen):
    kind: Literal["directive-in-macro-args", "constexpr-in-macro-definition", "constexpr-captured-by-macro"]
    macros: str


class ArchCheck(Frozen):
    kind: Literal["arch-below"]
    pattern: str
    below: int
    comment_prefix: str = "#"


Check = Annotated[RegexCheck | MacroCheck | ArchCheck, Field(discriminator="kind")]


class Applies(Frozen):
    platforms: tuple[str, ...] = ()
    cuda: str = ""

    def matches(self, platform: str | None, cuda: str | None) -> bool:
        if platform is not None and self.platforms and not any(fnmatch(platform, p) for p in self.platforms):
            return False
        return not (cuda is not None and self.cuda and Version(cuda) not in SpecifierSet(self.cuda))


class Rule(Frozen):
    id: str
    severity: Literal["error", "info"]
    title: str
    why: str
    fix: str
    reference: str = ""
    applies: Applies = Applies()
    files: tuple[str, ...]
    check: Check


class RuleBook(Frozen):
    version: int
    macros: str = ""
    cxx_files: tuple[str, ...] = ()
    rules: tuple[Rule, ...]


class Finding(Frozen):
    rule: str
    severity: Literal["error", "info"]
    file: str
    line: int
    text: str
    message: str


class LintReport(Frozen):
    root: str
    platform: str | None
    cuda: str | None
    rules: tuple[str, ...]
    files_scanned: int
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def clean(self) -> bool:
        return not self.errors

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.rule] = out.get(f.rule, 0) + 1
        return out


@cache
def load_rules() -> RuleBook:
    book = yamlsrc.load_packaged(RuleBook, "lint_rules.yaml")
    for rule in book.rules:
        for pattern in _patterns(rule):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise UserError(f"lint rule {rule.id}: bad regular expression {pattern!r}: {exc}") from None
    return book


def _patterns(rule: Rule) -> list[str]:
    c = rule.check
    if isinstance(c, RegexCheck):
        return [p for p in (c.pattern, c.unless_file_matches, c.unless_tree_matches, c.skip_lines_matching) if p]
    if isinstance(c, MacroCheck):
        return [c.macros]
    return [c.pattern]


# ---------------------------------------------------------------------------------------------- C text


def strip_code(text: str) -> str:
    """``text`` with comments and the contents of string/char literals replaced by spaces; newlines and
    columns stay where they were, so offsets map back to the original lines."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif c == "/" and nxt == "*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if out[k] != "\n":
                    out[k] = " "
            i = j
        elif c in "\"'":
            # Character literal vs digit separator (1'000): a quote right after a digit is a separator.
            if c == "'" and i > 0 and text[i - 1].isalnum() and not text[i - 1].isalpha():
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            for k in range(i + 1, min(j, n)):
                out[k] = " "
            i = j + 1
        else:
            i += 1
    return "".join(out)


@dataclass
class _Source:
    path: Path
    rel: str
    text: str
    code: str
    line_starts: list[int]
    directive_lines: set[int]  # 1-based lines that belong to a preprocessor directive (incl. continuations)

    @classmethod
    def read(cls, path: Path, root: Path) -> _Source:
        text = path.read_bytes().decode("utf-8", errors="replace")
        code = strip_code(text)
        starts = [0] + [m.end() for m in re.finditer(r"\n", code)]
        lines = code.split("\n")
        directive: set[int] = set()
        continuing = False
        for no, line in enumerate(lines, start=1):
            if continuing or line.lstrip().startswith("#"):
                directive.add(no)
                continuing = line.rstrip().endswith("\\")
            else:
                continuing = False
        return cls(path, path.relative_to(root).as_posix(), text, code, starts, directive)

    def line_of(self, offset: int) -> int:
        return bisect_right(self.line_starts, offset)

    def line_text(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1].strip() if 0 < line <= len(lines) else ""


def _matching_paren(code: str, open_pos: int) -> int:
    depth = 0
    for k in range(open_pos, len(code)):
        ch = code[k]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return k
    return len(code)


def _macro_calls(src: _Source, macros: str) -> Iterator[tuple[str, int, int]]:
    """(name, start, end) of every call of a macro matching ``macros`` outside directive lines."""
    for m in re.finditer(rf"\b({macros})\s*\(", src.code):
        if src.line_of(m.start()) in src.directive_lines:
            continue
        open_pos = m.end() - 1
        yield m.group(1), m.start(), _matching_paren(src.code, open_pos)


def _blocks(code: str) -> list[tuple[int, int]]:
    """(open, close) offsets of every brace block."""
    stack, out = [], []
    for k, ch in enumerate(code):
        if ch == "{":
            stack.append(k)
        elif ch == "}" and stack:
            out.append((stack.pop(), k))
    return out


def _enclosing(blocks: list[tuple[int, int]], offset: int) -> int:
    best = -1
    for o, c in blocks:
        if o < offset <= c and o > best:
            best = o
    return best


_CONSTEXPR_DECL = re.compile(r"(\b\w+\s+)?\bconstexpr\s+[\w:<>]+\s+(\w+)\s*=")


# ---------------------------------------------------------------------------------------------- checks


def _finding(rule: Rule, src: _Source, line: int, message: str) -> Finding:
    return Finding(rule=rule.id, severity=rule.severity, file=src.rel, line=line, text=src.line_text(line)[:200],
                   message=message)


def _check_regex(rule: Rule, c: RegexCheck, src: _Source, tree_has: dict[str, bool]) -> Iterator[Finding]:
    if c.unless_tree_matches and tree_has.get(c.unless_tree_matches):
        return
    if c.unless_file_matches and re.search(c.unless_file_matches, src.code):
        return
    pattern = re.compile(c.pattern)
    skip = re.compile(c.skip_lines_matching) if c.skip_lines_matching else None
    for no, line in enumerate(src.code.split("\n"), start=1):
        if skip and skip.search(line):
            continue
        m = pattern.search(line)
        if m:
            yield _finding(rule, src, no, f"{rule.title}: {m.group(0).strip()!r}")


def _check_directive_in_args(rule: Rule, c: MacroCheck, src: _Source) -> Iterator[Finding]:
    seen: set[int] = set()
    for name, start, end in _macro_calls(src, c.macros):
        first, last = src.line_of(start), src.line_of(end)
        for no in range(first + 1, last + 1):
            if no in src.directive_lines and no not in seen:
                seen.add(no)
                yield _finding(rule, src, no, f"{rule.title}: inside {name}(...) called at line {first}")


def _check_constexpr_in_definition(rule: Rule, c: MacroCheck, src: _Source) -> Iterator[Finding]:
    lines = src.code.split("\n")
    define = re.compile(rf"^\s*#\s*define\s+({c.macros})\s*\(")
    for no, line in enumerate(lines, start=1):
        m = define.match(line)
        if not m:
            continue
        k = no
        while True:
            body = lines[k - 1]
            for d in re.finditer(r"\bconstexpr\b", body):
                before = body[: d.start()].split()
                if before and before[-1] in ("static", "if"):
                    continue
                yield _finding(rule, src, k, f"{rule.title} {m.group(1)}")
            if not body.rstrip().endswith("\\") or k >= len(lines):
                break
            k += 1


def _check_constexpr_captured(rule: Rule, c: MacroCheck, src: _Source) -> Iterator[Finding]:
    calls = list(_macro_calls(src, c.macros))
    if not calls:
        return
    # Outermost calls only: nested calls lie inside them.
    outer: list[tuple[str, int, int]] = []
    for call in sorted(calls, key=lambda t: t[1]):
        if not outer or call[1] > outer[-1][2]:
            outer.append(call)
    blocks = _blocks(src.code)
    decls = []
    for m in _CONSTEXPR_DECL.finditer(src.code):
        qualifier = (m.group(1) or "").strip()
        if qualifier in ("static", "if"):
            continue
        decls.append((m.group(2), m.start()))
    reported: set[int] = set()
    for name, start, end in outer:
        span = re.sub(r"<<<.*?>>>", " ", src.code[start:end + 1], flags=re.S)
        scope = _enclosing(blocks, start)
        for var, pos in decls:
            inside = start <= pos <= end
            before = pos < start and _enclosing(blocks, pos) == scope
            if not (inside or before):
                continue
            if re.search(rf"[<,]\s*{re.escape(var)}\s*[,>]", span):
                line = src.line_of(pos)
                if line not in reported:
                    reported.add(line)
                    yield _finding(rule, src, line, f"{rule.title}: {var} (used in {name}(...) at line "
                                                    f"{src.line_of(start)})")


def _check_arch(rule: Rule, c: ArchCheck, src: _Source) -> Iterator[Finding]:
    pattern = re.compile(c.pattern)
    for no, line in enumerate(src.text.splitlines(), start=1):
        if line.lstrip().startswith(c.comment_prefix):
            continue
        low = sorted({int(m.group(1)) for m in pattern.finditer(line) if int(m.group(1)) < c.below})
        if low:
            yield _finding(rule, src, no, f"{rule.title}: {', '.join(f'sm_{a}' for a in low)}")


# ---------------------------------------------------------------------------------------------- scan


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        rel_parts = path.relative_to(root).parts
        if any(part in _SKIP_DIRS for part in rel_parts[:-1]) or not path.is_file() or path.is_symlink():
            continue
        yield path


def scan(root: Path, *, platform: str | None = None, cuda: str | None = None,
         rules: RuleBook | None = None) -> LintReport:
    """Scan every source file under ``root`` with the rules that apply to ``platform``/``cuda``
    (None: every rule)."""
    if not root.is_dir():
        raise UserError(f"not a directory: {root}")
    if cuda is not None:
        try:
            Version(cuda)
        except Exception:
            raise UserError(f"--cuda {cuda!r} is not a version (e.g. 13.0)") from None
    book = rules or load_rules()
    active = [r for r in book.rules if r.applies.matches(platform, cuda)]
    paths = [p for p in _files(root) if any(fnmatch(p.name, g) for r in active for g in r.files)]
    sources = [_Source.read(p, root) for p in paths]
    tree_patterns = {r.check.unless_tree_matches for r in active
                     if isinstance(r.check, RegexCheck) and r.check.unless_tree_matches}
    tree_has = {pat: any(re.search(pat, s.code) for s in sources) for pat in tree_patterns}
    findings: list[Finding] = []
    for src in sources:
        for rule in active:
            if not any(fnmatch(src.path.name, g) for g in rule.files):
                continue
            c = rule.check
            if isinstance(c, RegexCheck):
                findings += _check_regex(rule, c, src, tree_has)
            elif isinstance(c, ArchCheck):
                findings += _check_arch(rule, c, src)
            elif c.kind == "directive-in-macro-args":
                findings += _check_directive_in_args(rule, c, src)
            elif c.kind == "constexpr-in-macro-definition":
                findings += _check_constexpr_in_definition(rule, c, src)
            else:
                findings += _check_constexpr_captured(rule, c, src)
    findings.sort(key=lambda f: (f.file, f.line, f.rule))
    return LintReport(root=str(root), platform=platform, cuda=cuda, rules=tuple(r.id for r in active),
                      files_scanned=len(sources), findings=tuple(findings))
