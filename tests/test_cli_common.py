"""What every command shares (docs/cli.md): -v/-q, `--json` = the result as JSON on stdout (errors too),
and the exit codes of the error class tree in buildtool/errors.py."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from verify_fixtures import compile_c_so, make_wheel, provenance

from buildtool.cli import build_parser, main
from buildtool.errors import BuildError, BuildtoolError, EnvironmentProblem, UserError

REPO = Path(__file__).resolve().parents[1]


def _leaves(parser: argparse.ArgumentParser, name: str = "") -> dict[str, argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {name.strip(): parser}
    found: dict[str, argparse.ArgumentParser] = {}
    for action in subs:
        for child_name, child in action.choices.items():
            found |= _leaves(child, f"{name} {child_name}")
    return found


def test_every_command_takes_json_verbose_and_quiet() -> None:
    leaves = _leaves(build_parser())
    assert {"build", "doctor", "env create", "verify", "matrix", "patches check", "toolchain"} <= set(leaves)
    for name, parser in leaves.items():
        options = parser._option_string_actions
        for flag in ("--json", "-v", "--verbose", "-q", "--quiet"):
            assert flag in options, f"buildtool {name} lacks {flag}"
        # --json alone means stdout everywhere; verify still accepts the old `--json FILE` (= --json-out FILE)
        assert options["--json"].nargs == (0 if name != "verify" else "?"), f"buildtool {name}: --json takes no value"


def test_error_classes_and_exit_codes_are_documented() -> None:
    assert (UserError.exit_code, BuildError.exit_code, EnvironmentProblem.exit_code) == (2, 1, 3)
    assert all(issubclass(c, BuildtoolError) for c in (UserError, BuildError, EnvironmentProblem))
    assert not issubclass(BuildError, UserError) and not issubclass(EnvironmentProblem, UserError)
    doc = (REPO / "docs" / "cli.md").read_text()
    for cls in (UserError, BuildError, EnvironmentProblem):
        assert re.search(rf"^\| {cls.exit_code} \| `{cls.__name__}` \|", doc, re.M), cls.__name__


def test_an_error_with_json_is_json_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--profile", "no-such-profile", "--json"]) == 2
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["ok"] is False and data["error"] == "user-error" and data["exit_code"] == 2
    assert 'unknown profile "no-such-profile"' in data["message"]
    assert "error:" in captured.err  # and for people, on stderr


def test_quiet_keeps_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--profile", "no-such-profile", "-q"]) == 2
    assert 'unknown profile "no-such-profile"' in capsys.readouterr().err


def test_verify_json_prints_the_report_and_json_out_writes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wheel = make_wheel(tmp_path, files={"tinyk_ext.so": compile_c_so(tmp_path / "ext.so").read_bytes()},
                       prov=provenance(["9.0"]))
    report = tmp_path / "report.json"
    # a C library without CUDA code: the arch check fails (exit 1)
    assert main(["verify", str(wheel), "--static-only", "--no-requirements", "--json", "--json-out", str(report)]) == 1
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # stdout holds the JSON alone
    assert printed["ok"] is False and {r["check"] for r in printed["results"]} >= {"RECORD", "provenance", "cuda archs"}
    assert json.loads(report.read_text())["results"] == printed["results"]
    assert f"report written to {report}" in captured.err.replace("\n", "")


def test_verify_json_file_still_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wheel = make_wheel(tmp_path, prov=provenance(["9.0"]))
    old = tmp_path / "old-style.json"
    assert main(["verify", str(wheel), "--static-only", "--no-requirements", "--json", str(old)]) == 0
    captured = capsys.readouterr()
    assert json.loads(old.read_text())["ok"] is True and "--json-out FILE" in captured.err
    assert "RECORD" in captured.out  # the table, as before


def test_matrix_json_is_format_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix", "--json"]) == 0
    as_json = capsys.readouterr().out
    assert main(["matrix", "--format", "json"]) == 0
    assert json.loads(as_json) == json.loads(capsys.readouterr().out)
    assert main(["matrix", "--json", "--format", "ids"]) == 2
