"""yamlsrc: positions of every node, duplicate keys, syntax errors and pydantic errors as file:line:col."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import Field

from buildtool.errors import Location, UserError
from buildtool.model import Frozen
from buildtool.spec import yamlsrc


class Inner(Frozen):
    name: str
    count: int = 0
    on: bool = False


class Outer(Frozen):
    version: int
    items: tuple[Inner, ...] = ()
    table: dict[str, Inner] = Field(default_factory=dict)
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


# ---------------------------------------------------------------- hostile input: bounds, merge keys, OS errors
def _laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_billion_laughs_stops_at_the_alias_that_crosses_the_cap() -> None:
    text = _laughs(10)  # 9**10 = 3.5e9 values once expanded, from 470 bytes
    with pytest.raises(UserError) as info:
        yamlsrc.parse(text, "f.yaml")
    message = str(info.value)
    assert message.startswith("f.yaml:7:") and "billion laughs" in message and "*a5" in message


def test_aliases_under_the_cap_resolve_to_the_anchored_value() -> None:
    doc = yamlsrc.parse(_laughs(3), "f.yaml")
    assert doc.data["a2"] == [[["lol"] * 9] * 9] * 9
    assert doc.location(("a2", 4)) == Location("f.yaml", 3, 30)  # the alias, not its anchor


def test_deep_nesting_is_refused_with_its_position() -> None:
    depth = 100_000
    with pytest.raises(UserError) as info:
        yamlsrc.parse("x: " + "[" * depth + "]" * depth + "\n", "f.yaml")
    assert str(info.value) == f"f.yaml:1:{4 + yamlsrc.MAX_DEPTH}: lists and mappings nested more than " \
                              f"{yamlsrc.MAX_DEPTH} deep"


def test_nesting_at_the_limit_is_accepted() -> None:
    depth = yamlsrc.MAX_DEPTH
    doc = yamlsrc.parse("[" * depth + "]" * depth, "f.yaml")
    inner = doc.data
    for _ in range(depth - 1):
        (inner,) = inner
    assert inner == []


@pytest.mark.parametrize(
    ("text", "where", "codepoint"),
    [("a: b\x07c\n", "f.yaml:1:5", "U+0007"), ("a: 1\nb: \x00\n", "f.yaml:2:4", "U+0000"),
     ("a: 1\n\x1b[31mb: 2\n", "f.yaml:2:1", "U+001B"), ("a: \x85ok\x9b\n", "f.yaml:1:7", "U+009B")],
)
def test_control_characters_are_located_with_their_codepoint(text: str, where: str, codepoint: str) -> None:
    with pytest.raises(UserError) as info:
        yamlsrc.parse(text, "f.yaml")
    assert str(info.value).startswith(f"{where}: control character {codepoint} is not allowed")


def test_merge_keys_fill_in_what_the_mapping_does_not_set() -> None:
    text = "base: &base {name: a, count: 2}\nitems:\n  - <<: *base\n    count: 5\n  - {<<: [*base, {on: true}]}\n"
    doc = yamlsrc.parse(text, "f.yaml")
    assert doc.data["items"] == [{"name": "a", "count": 5}, {"name": "a", "count": 2, "on": True}]
    assert doc.location(("items", 0, "name"), key=True) == Location("f.yaml", 3, 9)
    with pytest.raises(UserError, match=r"f.yaml:1:9: << \(merge key\) needs a mapping"):
        yamlsrc.parse("a: {<<: 3}\n", "f.yaml")
    assert yamlsrc.parse("a: '<<'\nb: <<\n", "f.yaml").data == {"a": "<<", "b": "<<"}


def test_huge_numbers_are_refused_or_shortened_never_echoed() -> None:
    with pytest.raises(UserError) as info:
        yamlsrc.parse("version: " + "9" * 400 + "\n", "f.yaml")
    assert str(info.value) == "f.yaml:1:10: number with 400 characters; no field takes more than 64 digits"
    message = _validate_error("version: 1\nlabel: " + "7" * 60 + "\n")
    assert "7" * 41 not in message and "<60-digit number>" in message


def test_unsupported_tags_are_located() -> None:
    with pytest.raises(UserError, match=r"f.yaml:1:4: unsupported YAML tag tag:yaml.org,2002:python/name:os.system"):
        yamlsrc.parse("a: !!python/name:os.system ''\n", "f.yaml")


def test_non_ascii_lookalike_is_named_in_the_did_you_mean() -> None:
    message = _validate_error("version: 1\nitems:\n  - {n\u0430me: a}\n")  # Cyrillic a
    assert 'unknown key "n\u0430me" in items.0 (holds the non-ASCII character "\u0430" U+0430 CYRILLIC SMALL ' \
           'LETTER A at character 2) (did you mean "name"?)' in message


def test_every_os_error_on_the_input_path_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "fifo")  # reading it would block for ever
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(yamlsrc.MAX_BYTES + 1)
    cases = {
        tmp_path: "is a directory, not a file",
        tmp_path / "loop1": "Too many levels of symbolic links",
        tmp_path / "dangling": "(a dangling symlink)",
        tmp_path / "fifo": "is a FIFO (named pipe), not a file",
        big: "over the 64 MiB limit",
        tmp_path / "good.yaml" / "below": "Not a directory",
    }
    (tmp_path / "good.yaml").write_text("a: 1\n", encoding="utf-8")
    for path, expected in cases.items():
        with pytest.raises(UserError) as info:
            yamlsrc.load(path)
        assert expected in str(info.value) and str(path) in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file: no permission error")
def test_unreadable_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("a: 1\n", encoding="utf-8")
    path.chmod(0)
    with pytest.raises(UserError, match="Permission denied"):
        yamlsrc.load(path)
