"""yamlsrc: positions of every node, duplicate keys, syntax errors and pydantic errors as file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from buildtool import yamlsrc
from buildtool.errors import Location, UserError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Inner(_Frozen):
    name: str
    count: int = 0
    on: bool = False


class Outer(_Frozen):
    version: int
    items: tuple[Inner, ...] = ()
    table: dict[str, Inner] = {}
    label: str = ""


TEXT = """\
version: 1
items:
  - name: a
    count: 2
  - {name: b, on: true}
table:
  x: {name: c}
label: "hello"
"""


def test_positions_of_nodes_and_keys() -> None:
    doc = yamlsrc.parse(TEXT, "f.yaml")
    assert doc.data["items"][1] == {"name": "b", "on": True}
    assert doc.location(("items", 0, "count")) == Location("f.yaml", 4, 12)
    assert doc.location(("items", 0, "count"), key=True) == Location("f.yaml", 4, 5)
    assert doc.location(("items", 1, "on")) == Location("f.yaml", 5, 19)
    assert doc.location(("table", "x", "name")) == Location("f.yaml", 7, 13)
    # unknown paths fall back to the nearest ancestor
    assert doc.location(("table", "x", "nope", 3)) == Location("f.yaml", 7, 6)
    assert doc.location(("nothing",)) == Location("f.yaml", 1, 1)


def test_numbers_with_a_dot_keep_their_text() -> None:
    doc = yamlsrc.parse("python: [3.10, 3.9, 3.14]\ncuda: 12.10\nn: 3\nflag: true\n", "f.yaml")
    assert doc.data == {"python": ["3.10", "3.9", "3.14"], "cuda": "12.10", "n": 3, "flag": True}


def test_empty_document_is_empty_mapping() -> None:
    assert yamlsrc.parse("", "f.yaml").data == {}
    assert yamlsrc.parse("# only a comment\n", "f.yaml").data == {}


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("a: 1\na: 2\n", "f.yaml:2:1", 'duplicate key "a"'),
        ("a:\n  b: 1\n  b: 2\n", "f.yaml:3:3", 'duplicate key "b"'),
        ("a: [1, 2\n", "f.yaml:2:1", "YAML syntax error"),
        ("a: 1\n b: 2\n", "f.yaml:2:3", "YAML syntax error: mapping values are not allowed here"),
        ("? [1]\n: x\n", "f.yaml:1:3", "mapping keys must be plain scalars"),
        ("a: 'x\n", "f.yaml:2:1", "YAML syntax error"),
        ("a: *nope\n", "f.yaml:1:4", "YAML syntax error"),
    ],
)
def test_parse_errors(text: str, where: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        yamlsrc.parse(text, "f.yaml")
    assert str(info.value).startswith(where + ": "), str(info.value)
    assert message in str(info.value)


def test_multiple_documents_rejected() -> None:
    with pytest.raises(UserError, match="YAML syntax error"):
        yamlsrc.parse("a: 1\n---\nb: 2\n", "f.yaml")


def _validate_error(text: str) -> str:
    with pytest.raises(UserError) as info:
        yamlsrc.validate(Outer, yamlsrc.parse(text, "f.yaml"))
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nitem: []\n", 'f.yaml:2:1: unknown key "item" in top level (did you mean "items"?); '
                                   "allowed keys: items, label, table, version"),
        ("version: 1\nitems:\n  - {name: a, cont: 1}\n",
         'f.yaml:3:15: unknown key "cont" in items.0 (did you mean "count"?); allowed keys: count, name, on'),
        ("version: 1\ntable:\n  x: {nme: c}\n",
         'f.yaml:3:7: unknown key "nme" in table.x (did you mean "name"?); allowed keys: count, name, on'),
        ("items: []\n", 'f.yaml:1:1: missing required key "version" in top level; required keys: version; present keys: items'),
        ("version: 1\nitems:\n  - {count: 1}\n",
         'f.yaml:3:5: missing required key "name" in items.0; required keys: name; present keys: count'),
        ("version: x\n", "f.yaml:1:10: version: expected an integer, got str 'x'"),
        ("version: 1\nitems: {a: 1}\n", "f.yaml:2:8: items: expected a list, got a mapping"),
        ("version: 1\nitems:\n  - {name: a, on: perhaps}\n", "f.yaml:3:19: items.0.on: expected true or false, got str 'perhaps'"),
        ("version: 1\nlabel: [1]\n", "f.yaml:2:8: label: expected a string, got a list"),
        ("version: 1\ntable: []\n", "f.yaml:2:8: table: expected a mapping (key: value), got a list"),
        ("version: 1\nlabel:\n", "f.yaml:2:7: label: expected a string, got nothing (an empty value)"),
    ],
)
def test_validation_errors(text: str, expected: str) -> None:
    assert _validate_error(text) == expected


def test_unknown_key_beats_missing_key() -> None:
    # "nmae" is a typo for the missing "name": say so rather than "missing name"
    assert 'unknown key "nmae"' in _validate_error("version: 1\nitems:\n  - {nmae: a}\n")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="file not found"):
        yamlsrc.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: \xff\n")
    with pytest.raises(UserError, match="not UTF-8"):
        yamlsrc.load(bad)
    good = tmp_path / "good.yaml"
    good.write_text(TEXT, encoding="utf-8")
    doc = yamlsrc.load(good)
    assert doc.file == str(good)
    model = yamlsrc.validate(Outer, doc)
    assert model.items[0].count == 2 and model.table["x"].name == "c"
