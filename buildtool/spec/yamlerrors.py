"""pydantic's validation errors said as people read them: the first error of a YAML document, with its
file:line:col, the allowed or required keys and what the value should have been."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from buildtool.errors import Location, UserError, allowed_list, did_you_mean, non_ascii_note


class LocatedDocument(Protocol):
    """A parsed document that knows where each of its values came from (``yamlsrc.Document``)."""

    data: Any

    def location(self, path: Sequence[str | int], *, key: bool = False) -> Location: ...


def show_value(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 400-digit number is not echoed back in full)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return f"<{len(str(abs(value)))}-digit number>"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}...({len(text)} characters)"


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


# What a value of the wrong type should have been, by pydantic error type.
_EXPECTED = {
    "tuple_type": "a list", "list_type": "a list", "set_type": "a list", "frozen_set_type": "a list",
    "dict_type": "a mapping (key: value)", "model_type": "a mapping (key: value)", "model_attributes_type": "a mapping (key: value)",
    "string_type": "a string", "bool_type": "true or false", "bool_parsing": "true or false",
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
}


def _describe(value: Any) -> str:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return f"{type(value).__name__} {show_value(value)}{non_ascii_note(value)}"
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


def validation_to_user_error(exc: ValidationError, doc: LocatedDocument, model: type[BaseModel]) -> UserError:
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
    got_text = "" if isinstance(got, dict | list) else f" (got {show_value(got)}{non_ascii_note(got)})"
    return UserError(f"{field_name}: {msg}{got_text}", location=doc.location(loc))
