"""YAML loading that remembers where every value came from, so errors can say file:line:col."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from buildtool.errors import Location, UserError, allowed_list, did_you_mean

PathKey = tuple[str | int, ...]


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


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


def _walk(node: yaml.Node, path: PathKey, doc: Document) -> Any:
    doc.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _UniqueKeyLoader.construct_scalar(_LOADER, key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                raise UserError(
                    "mapping keys must be plain scalars",
                    location=Location(doc.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                )
            key = str(key)
            if key in out:
                raise UserError(
                    f'duplicate key "{key}"',
                    location=Location(doc.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                )
            doc.key_positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _walk(value_node, (*path, key), doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*path, i), doc) for i, item in enumerate(node.value)]
    return _LOADER.construct_object(node, deep=True)


_LOADER = _UniqueKeyLoader("")


def parse(text: str, file: str) -> Document:
    """Parse ``text``; YAML syntax errors become a UserError with the position PyYAML reports."""
    doc = Document(file=file, data=None)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        raise UserError(f"YAML syntax error: {exc.problem}", location=loc) from None
    if node is None:
        doc.data = {}
        return doc
    doc.data = _walk(node, (), doc)
    return doc


def load(path: Path) -> Document:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text: {exc}", location=Location(str(path))) from None
    return parse(text, str(path))


def _allowed_fields(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Field names allowed at ``loc`` (the parent of an unknown key) by walking the model's annotations."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = _inner_model(fields[part].annotation)
    fields = getattr(current, "model_fields", None)
    return sorted(f.alias or name for name, f in fields.items()) if fields else []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def validate(model: type[BaseModel], doc: Document, *, context: Mapping[str, Any] | None = None) -> Any:
    """Validate ``doc.data`` against ``model``; the first error becomes a UserError with file:line:col."""
    try:
        return model.model_validate(doc.data, context=dict(context or {}))
    except ValidationError as exc:
        raise validation_to_user_error(exc, doc, model) from None


def validation_to_user_error(exc: ValidationError, doc: Document, model: type[BaseModel]) -> UserError:
    err = exc.errors(include_url=False)[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    field_name = ".".join(str(p) for p in loc) or "(document)"
    etype = err["type"]
    if etype == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_fields(model, loc[:-1])
        message = (
            f'unknown key "{key}" in {".".join(str(p) for p in loc[:-1]) or "top level"}'
            f"{did_you_mean(key, allowed)}; allowed keys: {allowed_list(allowed)}"
        )
        return UserError(message, location=doc.location(loc, key=True))
    if etype == "missing":
        return UserError(f'missing required field "{field_name}"', location=doc.location(loc[:-1]))
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    got = err.get("input")
    got_text = "" if isinstance(got, dict | list) else f" (got {got!r})"
    return UserError(f"{field_name}: {msg}{got_text}", location=doc.location(loc))
