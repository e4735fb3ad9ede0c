"""YAML loading that remembers where every value came from, so errors can say file:line:col."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

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
    if node.tag == _FLOAT_TAG:
        # In this project's files a bare number with a dot is a version (python: 3.10, cuda: 12.6), and
        # YAML would read 3.10 as the float 3.1: keep the text exactly as written.
        return node.value
    return _LOADER.construct_object(node, deep=True)


_FLOAT_TAG = "tag:yaml.org,2002:float"


_LOADER = _UniqueKeyLoader("")


def parse(text: str, file: str) -> Document:
    """Parse ``text``; YAML syntax errors become a UserError with the position PyYAML reports."""
    doc = Document(file=file, data=None)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        context = ""
        if exc.context and exc.context_mark is not None:
            context = f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        hint = "YAML indents with spaces, not tabs" if "'\\t'" in str(exc.problem) else None
        raise UserError(f"YAML syntax error: {exc.problem}{context}", location=loc, hint=hint) from None
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


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> Any:
    """The pydantic model that validates the mapping at ``loc`` (None when ``loc`` leaves the models).

    Path parts that are not fields (list indexes, keys of ``dict[str, Model]``) keep the current model."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if isinstance(part, int) or not fields or part not in fields:
            continue
        current = _inner_model(fields[part].annotation)
        if current is None:
            return None
    return current


def _allowed_fields(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Field names allowed at ``loc`` (the parent of an unknown key)."""
    fields = getattr(_model_at(model, loc), "model_fields", None)
    return sorted(f.alias or name for name, f in fields.items()) if fields else []


def _required_fields(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    fields = getattr(_model_at(model, loc), "model_fields", None)
    return sorted(f.alias or name for name, f in fields.items() if f.is_required()) if fields else []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


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


# What a value of the wrong type should have been, by pydantic error type.
_EXPECTED = {
    "tuple_type": "a list", "list_type": "a list", "set_type": "a list", "frozen_set_type": "a list",
    "dict_type": "a mapping (key: value)", "model_type": "a mapping (key: value)", "model_attributes_type": "a mapping (key: value)",
    "string_type": "a string", "bool_type": "true or false", "bool_parsing": "true or false",
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    return f"{type(value).__name__} {value!r}"


def _error_priority(err: Any) -> int:
    # An unknown key usually explains a "missing" one next to it (a typo): report it first.
    return {"extra_forbidden": 0, "missing": 2}.get(err["type"], 1)


def validation_to_user_error(exc: ValidationError, doc: Document, model: type[BaseModel]) -> UserError:
    errors = exc.errors(include_url=False)
    err = min(errors, key=_error_priority)
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    field_name = ".".join(str(p) for p in loc) or "(document)"
    parent = ".".join(str(p) for p in loc[:-1]) or "top level"
    etype = err["type"]
    if etype == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_fields(model, loc[:-1])
        message = f'unknown key "{key}" in {parent}{did_you_mean(key, allowed)}; allowed keys: {allowed_list(allowed)}'
        return UserError(message, location=doc.location(loc, key=True))
    if etype == "missing":
        required = _required_fields(model, loc[:-1])
        present: Any = doc.data
        for part in loc[:-1]:
            try:
                present = present[part]
            except (KeyError, IndexError, TypeError):
                present = None
                break
        keys = f"; present keys: {allowed_list(present)}" if isinstance(present, dict) and present else ""
        return UserError(
            f'missing required key "{loc[-1]}" in {parent}; required keys: {allowed_list(required)}{keys}',
            location=doc.location(loc[:-1]),
        )
    got = err.get("input")
    if etype == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return UserError(f"{field_name}: got {_describe(got)}; allowed values: {expected}", location=doc.location(loc))
    if etype in _EXPECTED:
        return UserError(f"{field_name}: expected {_EXPECTED[etype]}, got {_describe(got)}", location=doc.location(loc))
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    got_text = "" if isinstance(got, dict | list) else f" (got {got!r})"
    return UserError(f"{field_name}: {msg}{got_text}", location=doc.location(loc))
