"""YAML loading that remembers where every value came from, so errors can say file:line:col."""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from buildtool.errors import Location, UserError
from buildtool.spec.yamlerrors import validation_to_user_error

PathKey = tuple[str | int, ...]


# Bounds on what one input file may cost (a hostile file must fail fast, with a message, not exhaust the machine).
MAX_BYTES = 64 * 1024 * 1024
"""Largest file read: ~1.5 M one-line exclude rules; far above any real matrix, recipe or kernel spec."""
MAX_DEPTH = 200
"""Deepest nesting of lists and mappings (real files nest < 10)."""
MAX_NODES = 10_000_000
"""Most values after expanding aliases (the data every later stage walks)."""
MAX_ALIAS_NODES = 1_000_000
"""Most values that aliases may add on top of the text itself ("billion laughs" stops here)."""
MAX_SCALAR_DIGITS = 64
"""Longest integer kept as a number (Python refuses > 4300 digits; no field needs > 20)."""

# Characters YAML forbids in a stream (C0/C1 controls except tab, newlines and NEL; non-characters).
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster events

_REPARSE_LIMIT = 1024 * 1024
_FLOAT_TAG = "tag:yaml.org,2002:float"
_INT_TAG = "tag:yaml.org,2002:int"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class Document:
    """A parsed YAML document plus the position of every node, keyed by its path from the root."""

    file: str
    data: Any
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def location(self, path: Sequence[str | int], *, key: bool = False) -> Location:
        """Best known location for ``path``: the node itself, else its nearest ancestor."""
        table = self.key_positions if key else self.positions
        p = tuple(path)
        while p:
            if p in table:
                line, col = table[p]
                return Location(self.file, line, col)
            if p in self.positions:
                line, col = self.positions[p]
                return Location(self.file, line, col)
            p = p[:-1]
        line, col = self.positions.get((), (1, 1))
        return Location(self.file, line, col)


def _pos(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


@dataclass(slots=True)
class _Frame:
    """A list or mapping being built: its path, its value, and (mappings) the key waiting for its value."""

    path: PathKey
    value: Any
    is_map: bool
    size: int = 1
    key: str | None = None
    merges: list[tuple[Any, Any]] = field(default_factory=list)
    anchor: str | None = None
    merge_value: bool = False  # the value being read is the one of a `<<` key


class _Builder:
    """Builds Python data straight from the YAML event stream, iteratively (no recursion: any depth is
    refused with a message, never a RecursionError), resolving each alias once (an alias reuses the value
    built for its anchor; its expanded size is counted, not re-walked)."""

    def __init__(self, text: str, file: str, loader: Any = None) -> None:
        self.file = file
        self.loader = (loader or _Loader)(text)
        self.doc = Document(file=file, data=None)
        self.anchors: dict[str, tuple[Any, int, bool]] = {}  # anchor -> (value, expanded size, is a scalar)
        self.total = 0
        self.alias_total = 0

    def error(self, message: str, mark: Any, hint: str | None = None) -> UserError:
        line, col = _pos(mark)
        return UserError(message, location=Location(self.file, line, col), hint=hint)

    def build(self) -> Document:
        stack: list[_Frame] = []
        positions = self.doc.positions
        cache: dict[tuple[str, bool], Any] = {}  # plain scalars repeat ("3.10", "linux-x86_64"): resolve once
        get_event = self.loader.get_event
        documents = 0
        while True:
            event = get_event()
            cls = event.__class__
            parent = stack[-1] if stack else None
            if cls is yaml.ScalarEvent:
                if event.tag is None and event.anchor is None and len(event.value) <= 64:
                    ckey = (event.value, event.implicit[0])
                    value = cache.get(ckey, _MISSING)
                    if value is _MISSING:
                        value = cache[ckey] = self._scalar(event)
                else:
                    value = self._scalar(event)
                if parent is not None and parent.key is None and parent.is_map and not parent.merge_value:
                    self._key(parent, value, event.value, event.start_mark, alias=False)
                    if event.anchor is not None:
                        self.anchors[event.anchor] = (value, 1, True)
                    continue
                mark = event.start_mark
                positions[self._child_path(parent)] = (mark.line + 1, mark.column + 1)
                self._finish(parent, "<<" if value is _MERGE_SENTINEL else value, 1, event.anchor, mark, counted=1)
            elif cls is yaml.MappingStartEvent or cls is yaml.SequenceStartEvent:
                mark = event.start_mark
                if len(stack) >= MAX_DEPTH:
                    raise self.error(f"lists and mappings nested more than {MAX_DEPTH} deep", mark)
                if parent is not None and parent.key is None and parent.is_map and not parent.merge_value:
                    raise self.error("mapping keys must be plain scalars", mark)
                if event.tag not in _CONTAINER_TAGS:
                    raise self.error(f"unsupported YAML tag {_short(event.tag)}; write plain values (no !tags)", mark)
                path = self._child_path(parent)
                positions[path] = (mark.line + 1, mark.column + 1)
                is_map = cls is yaml.MappingStartEvent
                stack.append(_Frame(path=path, value={} if is_map else [], is_map=is_map, anchor=event.anchor))
            elif cls is yaml.MappingEndEvent or cls is yaml.SequenceEndEvent:
                frame = stack.pop()
                if frame.merges:
                    self._apply_merges(frame)
                self._finish(stack[-1] if stack else None, frame.value, frame.size, frame.anchor, event.start_mark,
                             counted=1)
            elif cls is yaml.AliasEvent:
                mark = event.start_mark
                if event.anchor not in self.anchors:
                    raise self.error(f"YAML syntax error: unknown alias *{event.anchor} (no &{event.anchor} before it)",
                                     mark)
                value, size, is_scalar = self.anchors[event.anchor]
                self.alias_total += size
                if self.alias_total > MAX_ALIAS_NODES:
                    raise self.error(
                        f"aliases expand to more than {MAX_ALIAS_NODES:,} values (alias *{event.anchor} alone adds "
                        f"{size:,}); this looks like a \"billion laughs\" file",
                        mark, hint="write the values out, or use fewer nested aliases",
                    )
                if parent is not None and parent.key is None and parent.is_map and not parent.merge_value:
                    if not is_scalar:
                        raise self.error("mapping keys must be plain scalars", mark)
                    self._key(parent, value, str(value), mark, alias=True)
                    continue
                positions.setdefault(self._child_path(parent), (mark.line + 1, mark.column + 1))
                self._finish(parent, value, size, None, mark, counted=size)
            elif cls is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise self.error("YAML syntax error: expected one document, found a second one (---)",
                                     event.start_mark)
            elif cls is yaml.StreamEndEvent:
                return self.doc

    @staticmethod
    def _child_path(parent: _Frame | None) -> PathKey:
        if parent is None:
            return ()
        if not parent.is_map:
            return (*parent.path, len(parent.value))
        if parent.merge_value:
            return (*parent.path, "<<")
        return (*parent.path, parent.key) if parent.key is not None else parent.path

    def _key(self, parent: _Frame, value: Any, raw: str, mark: Any, *, alias: bool) -> None:
        """A scalar in key position: remember it until its value arrives (`<<` starts a merge)."""
        if value is _MERGE_SENTINEL and not alias:
            parent.merge_value = True
            return
        if raw in parent.value:
            raise self.error(f'duplicate key "{_short(raw)}"', mark)
        parent.key = raw
        self.doc.key_positions[(*parent.path, raw)] = (mark.line + 1, mark.column + 1)

    def _finish(self, parent: _Frame | None, value: Any, size: int, anchor: str | None, mark: Any, *,
                counted: int) -> None:
        """A complete value: record its anchor, count it, and attach it to its list or mapping."""
        if anchor is not None:
            self.anchors[anchor] = (value, size, not isinstance(value, dict | list))
        self.total += counted
        if self.total > MAX_NODES:
            raise self.error(f"the document holds more than {MAX_NODES:,} values", mark)
        if parent is None:
            self.doc.data = value
            return
        parent.size += size
        if not parent.is_map:
            parent.value.append(value)
        elif parent.merge_value:  # the value of `<<`: a mapping, or a list of mappings
            parent.merges.append((value, mark))
            parent.merge_value = False
        else:
            parent.value[parent.key] = value
            parent.key = None

    def _apply_merges(self, frame: _Frame) -> None:
        """YAML merge keys: `<<: *base` (or a list of them) adds the base's keys that the mapping does not
        set itself; the first listed base wins (YAML 1.1 merge semantics)."""
        for value, mark in frame.merges:
            bases = value if isinstance(value, list) else [value]
            for base in bases:
                if not isinstance(base, dict):
                    raise self.error("<< (merge key) needs a mapping or a list of mappings, e.g. <<: *base", mark)
                for key, item in base.items():
                    if key not in frame.value:
                        frame.value[key] = item
                        self.doc.key_positions.setdefault((*frame.path, key), _pos(mark))
                        self.doc.positions.setdefault((*frame.path, key), _pos(mark))

    def _scalar(self, event: Any) -> Any:
        if event.tag is None or event.tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        else:
            tag = event.tag
        if tag == _MERGE_TAG:
            return _MERGE_SENTINEL
        if tag == _FLOAT_TAG:
            # In this project's files a bare number with a dot is a version (python: 3.10, cuda: 12.6), and
            # YAML would read 3.10 as the float 3.1: keep the text exactly as written.
            return event.value
        if tag == _INT_TAG and len(event.value) > MAX_SCALAR_DIGITS:
            raise self.error(f"number with {len(event.value)} characters; no field takes more than "
                             f"{MAX_SCALAR_DIGITS} digits", event.start_mark)
        constructor = self.loader.yaml_constructors.get(tag) if tag in _SCALAR_TAGS else None
        if constructor is None:
            raise self.error(f"unsupported YAML tag {_short(tag)}; write plain values (no !tags)", event.start_mark)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return constructor(self.loader, node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            raise self.error(f"cannot read {_short(event.value)} as {tag.rsplit(':', 1)[-1]}: "
                             f"{str(exc).splitlines()[0]}", event.start_mark) from None


_MERGE_SENTINEL = object()
_MISSING = object()
_CONTAINER_TAGS = {None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_SCALAR_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "str", "timestamp", "binary")}


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[: limit - 20]}...({len(text)} characters)"


def _check_characters(text: str, file: str) -> None:
    """Control characters are refused with their line, column and code point (YAML would say "position N")."""
    bad = _FORBIDDEN.search(text)
    if bad is None:
        return
    offset = bad.start()
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    char = bad.group()
    raise UserError(
        f"control character U+{ord(char):04X} is not allowed in YAML",
        location=Location(file, line, column),
        hint="the file may be binary or damaged; save it as plain UTF-8 text",
    )


_BRACKET = re.compile(r"[\[\]{}]")


def _check_flow_depth(text: str, file: str) -> None:
    """Refuse flow nesting ([[[[...) deeper than MAX_DEPTH before libyaml sees it: its scanner keeps one
    possible simple key per open bracket and rescans them all per token, so 100,000 brackets cost minutes
    before the first event arrives. Brackets inside quoted strings count too (no real file has 200)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for match in _BRACKET.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_DEPTH:
            offset = match.start()
            line = text.count("\n", 0, offset) + 1
            column = offset - (text.rfind("\n", 0, offset) + 1) + 1
            raise UserError(f"lists and mappings nested more than {MAX_DEPTH} deep",
                            location=Location(file, line, column))


def parse(text: str, file: str) -> Document:
    """Parse ``text`` (bounded in size, depth and alias expansion); every problem is a located UserError."""
    if len(text) > MAX_BYTES:
        raise UserError(f"{file}: {len(text):,} characters, over the {MAX_BYTES // 2**20} MiB limit for input files")
    _check_characters(text, file)
    _check_flow_depth(text, file)
    try:
        try:
            doc = _Builder(text, file).build()
        except yaml.YAMLError:
            if _Loader is yaml.SafeLoader or len(text) > _REPARSE_LIMIT:
                raise
            # libyaml words errors differently ("... in this context"); PyYAML's own parser gives the same
            # message on every platform, so re-read a small file with it to report the error
            doc = _Builder(text, file, yaml.SafeLoader).build()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        context = ""
        if exc.context and exc.context_mark is not None:
            context = f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        hint = "YAML indents with spaces, not tabs" if "'\\t'" in str(exc.problem) else None
        raise UserError(f"YAML syntax error: {exc.problem}{context}", location=loc, hint=hint) from None
    except yaml.YAMLError as exc:  # ReaderError and the like: no mark, one line of text
        raise UserError(f"YAML error: {str(exc).splitlines()[0]}", location=Location(file)) from None
    if doc.data is None:
        doc.data = {}
    return doc


_FILE_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket",
               stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def read_text(path: Path, *, limit: int = MAX_BYTES, what: str = "file") -> str:
    """The UTF-8 text of a user-named input file; every OS error (missing, a directory, a symlink loop, no
    permission, a FIFO that would block, too large) is a UserError naming the path."""
    raw = read_bytes(path, limit=limit, what=what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UserError(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot start a character",
                        location=Location(str(path), line, column)) from None


def read_bytes(path: Path, *, limit: int = MAX_BYTES, what: str = "file") -> bytes:
    """The bytes of a user-named input file, with the OS errors of :func:`read_text` as UserErrors."""
    try:
        info = path.stat()
    except FileNotFoundError:
        dangling = " (a dangling symlink)" if path.is_symlink() else ""
        raise UserError(f"{what} not found: {path}{dangling}") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode))
    if kind is not None:
        raise UserError(f"{what} {path} is {kind}, not a file")
    if info.st_size > limit:
        raise UserError(f"{what} {path} is {info.st_size:,} bytes, over the {limit // 2**20} MiB limit for input files")
    try:
        with path.open("rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise UserError(f"{what} {path} is over the {limit // 2**20} MiB limit for input files")
    return raw


def load(path: Path) -> Document:
    return parse(read_text(path), str(path))


ModelT = TypeVar("ModelT", bound=BaseModel)


def load_packaged(model: type[ModelT], name: str) -> ModelT:
    """A data file shipped in buildtool/data/, validated against ``model`` (errors name the file and line)."""
    text = resources.files("buildtool.data").joinpath(name).read_text(encoding="utf-8")
    result: ModelT = validate(model, parse(text, f"buildtool/data/{name}"))
    return result


def validate(model: type[BaseModel], doc: Document, *, context: Mapping[str, Any] | None = None) -> Any:
    """Validate ``doc.data`` against ``model``; the first error becomes a UserError with file:line:col."""
    try:
        return model.model_validate(doc.data, context=dict(context or {}))
    except ValidationError as exc:
        raise validation_to_user_error(exc, doc, model) from None
