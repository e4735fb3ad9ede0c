"""The C++/CUDA source splitter: one heavy TU into several that each compile a share of its kernels (line
splits and template fanouts), refusing splits that would break linkage (link hazards)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pydantic import Field

from buildtool.errors import UserError
from buildtool.model import Frozen
from buildtool.spec.kernelspec import DEFAULT_SPLIT_MATCH, SplitRule


# ------------------------------------------------------------------------------------------- splitting
class SplitError(UserError):
    pass


class LinkHazard(Frozen):
    """A top-level definition every generated part would define again (a duplicate symbol at link)."""

    first_line: int = Field(description="1-based")
    last_line: int
    head: str


_STRING_OR_COMMENT = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)


_NAMESPACE_HEAD = re.compile(r'^(?:inline\s+)?namespace\b[^;=]*$|^extern\s+"[^"]*"\s*$')


_SAFE_WORDS = re.compile(r"\b(?:inline|__inline__|__forceinline__|static|constexpr|consteval)\b")


_TYPE_HEAD = re.compile(r"^(?:typedef\s+)?(?:struct|class|union|enum)\b")


def _blank_code(text: str) -> str:
    """Comments and string/char contents blanked, preprocessor lines blanked; newlines kept."""

    def blank(m: re.Match[str]) -> str:
        token = m.group(0)
        if token[0] in "\"'":
            return token[0] + re.sub(r"[^\n]", " ", token[1:-1]) + token[-1]
        return re.sub(r"[^\n]", " ", token)

    code = _STRING_OR_COMMENT.sub(blank, text)
    out, continued = [], False
    for line in code.split("\n"):
        directive = continued or line.lstrip().startswith("#")
        continued = directive and line.rstrip().endswith("\\")
        out.append(" " * len(line) if directive else line)
    return "\n".join(out)


def _is_hazard(head: str, has_body: bool) -> bool:
    head = " ".join(head.split())
    if not head or head.startswith(("using ", "typedef ", "extern ", "static_assert", "friend ", "namespace ")):
        return False
    if head.startswith("template"):
        # A full specialisation `template<> R f<T>(...) {...}` is an ordinary (strong) definition.
        m = re.match(r"^template\s*<\s*>\s*", head)
        if m is None or not has_body:
            return False
        return not _TYPE_HEAD.match(head[m.end():]) and not _device_only_or_safe(head)
    if _TYPE_HEAD.match(head) or _device_only_or_safe(head):
        return False
    if has_body:
        return True  # a function (or braced variable) definition with external linkage
    return "(" not in head or "=" in head  # `int x;` / `T x = ...;` (a prototype or macro call is fine)


def _device_only_or_safe(head: str) -> bool:
    if _SAFE_WORDS.search(head) or re.search(r"\bconst\b", head.split("(")[0]):
        return True
    # __device__ / __constant__ symbols without __host__/__global__ live in each TU's own device image.
    device = re.search(r"\b(?:__device__|__constant__|__shared__)\b", head)
    return bool(device) and not re.search(r"\b(?:__host__|__global__)\b", head)


def link_hazards(text: str) -> list[LinkHazard]:
    """Top-level (namespace-scope) definitions that are not templates, inline, static, const or device-only:
    compiling the text in several TUs would define them several times."""
    code = _blank_code(text)
    hazards: list[LinkHazard] = []
    stack: list[tuple[str, int, str]] = []  # (kind, start offset, head)
    stmt_start = 0

    def top_level() -> bool:
        return all(kind == "ns" for kind, _, _ in stack)

    def line_of(offset: int) -> int:
        return code.count("\n", 0, offset) + 1

    for pos, ch in enumerate(code):
        if ch == "{":
            if top_level():
                head = code[stmt_start:pos].strip()
                start = stmt_start + (len(code[stmt_start:pos]) - len(code[stmt_start:pos].lstrip()))
                if _NAMESPACE_HEAD.match(" ".join(head.split())):
                    stack.append(("ns", start, head))
                    stmt_start = pos + 1
                    continue
                stack.append(("body", start, head))
            else:
                stack.append(("inner", pos, ""))
        elif ch == "}":
            if not stack:
                continue
            kind, start, head = stack.pop()
            if kind == "ns":
                stmt_start = pos + 1
            elif kind == "body" and top_level():
                end = pos + 1
                # `struct S {...} s;` and `T x = {...};` end at the semicolon
                flat = " ".join(head.split())
                m = re.match(r"[^;{}]*;", code[end:]) if _TYPE_HEAD.match(flat) or "=" in flat else None
                trailer = m.group(0)[:-1].strip() if m else ""
                if m:
                    end += m.end()
                if _is_hazard(head, has_body=True) or (trailer and _TYPE_HEAD.match(flat)):
                    hazards.append(LinkHazard(first_line=line_of(start), last_line=line_of(end - 1),
                                              head=" ".join(head.split())[:160]))
                stmt_start = end
        elif ch == ";" and top_level() and pos >= stmt_start:
            head = code[stmt_start:pos].strip()
            start = stmt_start + (len(code[stmt_start:pos]) - len(code[stmt_start:pos].lstrip()))
            if _is_hazard(head, has_body=False):
                hazards.append(LinkHazard(first_line=line_of(start), last_line=line_of(pos),
                                          head=" ".join(head.split())[:160]))
            stmt_start = pos + 1
    return hazards


def _matched_groups(lines: Sequence[str], rule: SplitRule) -> dict[str, list[tuple[int, str]]]:
    pattern = re.compile(rule.match)
    groups: dict[str, list[tuple[int, str]]] = {}
    for i, line in enumerate(lines):
        m = pattern.match(line.rstrip("\r\n"))
        if m:
            key = (m.group(rule.key) or "").strip() if rule.key else line.strip()
            groups.setdefault(key, []).append((i, key))
    return groups


def _deal(count: int, parts: int) -> list[int]:
    """Contiguous, balanced assignment of ``count`` ordered items to ``parts`` parts (0-based)."""
    return [i * parts // count for i in range(count)]


def split_text(text: str, rule: SplitRule, *, origin: str) -> list[str]:
    """The generated texts of a source split by one rule (see ``split_source``)."""
    return split_source(text, (rule,), origin=origin)


def split_source(text: str, rules: Sequence[SplitRule], *, origin: str) -> list[str]:
    """The generated TUs of one source, ``sum(rule.parts)`` of them, rule after rule (see ``SplitRule``).

    Each rule owns the lines its ``match`` selects (a line selected by two rules is an error); a part of
    one rule blanks the lines of every other rule. Explicit instantiations no rule selects, and
    ``exclusive`` definitions, stay in the very first part only, so nothing is compiled twice. Every part
    starts with a ``#line`` directive naming the real file and keeps every line's number, so diagnostics
    point at the source."""
    lines = text.splitlines(keepends=True)
    owner: dict[int, int] = {}  # line index -> the only (global, 0-based) part that keeps it
    extra: dict[tuple[int, int], str] = {}  # (part, line index) -> replacement text for that line
    claimed: dict[int, int] = {}  # line index -> rule index
    offset = 0
    for r, rule in enumerate(rules):
        groups = _matched_groups(lines, rule)
        for members in groups.values():
            for i, _ in members:
                if i in claimed:
                    raise SplitError(f"{origin}:{i + 1}: the line is matched by split rules {claimed[i] + 1} and {r + 1}",
                                     hint="make the rules' `match` patterns disjoint")
                claimed[i] = r
        _plan_rule(lines, rule, groups, offset, owner, extra, origin)
        offset += rule.parts
    default = re.compile(DEFAULT_SPLIT_MATCH)
    for i, line in enumerate(lines):
        if i not in claimed and default.match(line.rstrip("\r\n")):
            owner[i] = 0
    exclusive = [x for rule in rules for x in rule.exclusive]
    for hazard in link_hazards(text):
        head_line = lines[hazard.first_line - 1] if hazard.first_line <= len(lines) else ""
        if not any(re.search(x, head_line) for x in exclusive):
            raise SplitError(
                f"{origin}:{hazard.first_line}: cannot split: `{hazard.head}` is a non-template definition that "
                f"every part would define again (a duplicate symbol at link)",
                hint="add a regex matching that line to the split rule's `exclusive` (kept in part 1 only), "
                     "or do not split this file",
            )
        for i in range(hazard.first_line - 1, hazard.last_line):
            owner[i] = 0
    header = f'#line 1 "{origin}"\n'
    out = []
    for part in range(offset):
        body = []
        for i, line in enumerate(lines):
            if (part, i) in extra:
                body.append(extra[(part, i)])
            elif owner.get(i, part) == part:
                body.append(line)
            else:
                body.append(_blank(line))
        out.append(header + "".join(body))
    return out


def _plan_rule(lines: Sequence[str], rule: SplitRule, groups: Mapping[str, list[tuple[int, str]]], offset: int,
               owner: dict[int, int], extra: dict[tuple[int, int], str], origin: str) -> None:
    """Assign one rule's matched lines to its parts ``offset .. offset + parts - 1`` (fanout: write the
    ``extern template`` / ``template`` lines)."""
    if rule.fanout is None:
        if len(groups) < rule.parts:
            raise SplitError(
                f"{origin}: split into {rule.parts} parts needs at least {rule.parts} distinct instantiation "
                f"groups; found {len(groups)} lines matching {rule.match!r}",
                hint="lower `parts`, or check that the source version matches the kernel spec",
            )
        for part, members in zip(_deal(len(groups), rule.parts), groups.values(), strict=True):
            for i, _ in members:
                owner[i] = offset + part
        return
    fan = rule.fanout
    matched = sorted(m for members in groups.values() for m in members)
    if not matched:
        raise SplitError(f"{origin}: no line matches {rule.match!r}; nothing to fan out",
                         hint="check that the source version matches the kernel spec")
    decls = [fan.declaration.format(item=item, match=args) for _, args in matched for item in fan.items]
    if len(decls) < rule.parts - 1:
        raise SplitError(f"{origin}: {rule.parts} parts need at least {rule.parts - 1} fanout "
                         f"instantiations; the rule yields {len(decls)}")
    first, last = matched[0][0], matched[-1][0]
    for i, _ in matched:
        owner[i] = offset
    extra[(offset, first)] = " ".join(f"extern template {d};" for d in decls) + " " + lines[first]
    ending = lines[last][len(lines[last].rstrip("\r\n")):] or "\n"
    for part, decl in zip(_deal(len(decls), rule.parts - 1), decls, strict=True):
        key = (offset + 1 + part, last)
        extra[key] = extra.get(key, "").rstrip("\r\n") + (" " if key in extra else "") + f"template {decl};" + ending


def _blank(line: str) -> str:
    ending = line[len(line.rstrip("\r\n")):]
    return "// [buildtool split] compiled in another part" + ending


def split_summary(text: str, rule: SplitRule | Sequence[SplitRule]) -> Mapping[int, list[str]]:
    """What each part (1-based) instantiates: for docs, `buildtool` output and tests."""
    rules = (rule,) if isinstance(rule, SplitRule) else tuple(rule)
    inst = re.compile(r"^(?:extern\s+)?template\s+(?!<)")
    parts = split_source(text, rules, origin="x")
    summary: dict[int, list[str]] = {}
    for k, p in enumerate(parts):
        found = []
        for ln in p.splitlines()[1:]:
            if inst.match(ln.strip()):
                found += [s.strip() + ";" for s in ln.split(";") if s.strip() and not s.strip().startswith("//")]
        summary[k + 1] = found
    return summary
