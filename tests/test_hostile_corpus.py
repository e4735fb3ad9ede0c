"""The hostile-input corpus: hundreds of bad (and a few tricky but valid) inputs across matrix.yaml, recipes,
kernel specs, patches and wheels, hand-written plus hypothesis-generated. Every case must end in a correct
result or a clear error that names the file (and, for YAML, line:column) - never a traceback - inside a
time and memory bound. The cases run in one subprocess (tests/hostile_runner.py) under RLIMIT_AS and a
timeout, so a case that would hang or exhaust memory fails this test instead of the machine."""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixture_wheels import label, make_wheel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 3 * 2**30  # address space of the whole batch (python + pydantic + rich take ~0.5 GiB of it)
CASE_SECONDS = 60.0  # per case; > 20x what any case takes on a loaded 2-core machine (a hang detector)
BATCH_SECONDS = 900
GENERATED = {"matrix": 70, "recipe": 25, "kernel": 25, "patch": 25, "wheel": 40}

pytestmark = pytest.mark.skipif(os.name != "posix", reason="RLIMIT_AS, FIFOs and symlink loops are POSIX")


@dataclass
class Case:
    id: str
    kind: str  # "cli" | "call"
    argv: list[str] = field(default_factory=list)
    call: str = ""
    args: list[str] = field(default_factory=list)
    expect: str = "error"  # "ok" | "error" | "either"
    contains: tuple[str, ...] = ()  # substrings the message must hold (what, where)
    located: str | None = None  # this file name must appear in the error
    same_as: str | None = None  # ok output must equal this case's
    seconds: float = CASE_SECONDS
    long_ok: bool = False  # a report, not one message

    def spec(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "argv": self.argv, "call": self.call, "args": self.args}


# ------------------------------------------------------------------------------------------ builders
class Corpus:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cases: list[Case] = []
        self.n = 0

    def file(self, name: str, data: str | bytes) -> Path:
        self.n += 1
        path = self.root / f"{self.n:04d}" / name
        path.parent.mkdir(parents=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    def matrix(self, cid: str, text: str | bytes | Path, expect: str = "error", *contains: str,
               located: bool = True, same_as: str | None = None, seconds: float = CASE_SECONDS) -> None:
        path = text if isinstance(text, Path) else self.file("matrix.yaml", text)
        self.cases.append(Case(f"matrix/{cid}", "cli", argv=["matrix", "--file", str(path), "--format", "ids"],
                               expect=expect, contains=contains, located=str(path) if located else None,
                               same_as=same_as, seconds=seconds))

    def loader(self, what: str, call: str, name: str, cid: str, text: str | bytes | Path, expect: str = "error",
               *contains: str, extra: tuple[Path, ...] = ()) -> None:
        path = text if isinstance(text, Path) else self.file(name, text)
        self.cases.append(Case(f"{what}/{cid}", "call", call=call, args=[str(path), *map(str, extra)],
                               expect=expect, contains=contains, located=path.name))

    def recipe(self, cid: str, text: str | bytes | Path, expect: str = "error", *contains: str) -> None:
        self.loader("recipe", "buildtool.spec.recipe:load_recipe", "causal-conv1d.yaml", cid, text, expect,
                    *contains)

    def kernel(self, cid: str, text: str | bytes | Path, expect: str = "error", *contains: str) -> None:
        self.loader("kernel", "buildtool.spec.kernelspec:load_kernel_spec", "kernel.yaml", cid, text, expect,
                    *contains)

    def patch(self, cid: str, text: str | bytes, expect: str = "error", *contains: str) -> None:
        self.n += 1
        patches = self.root / f"{self.n:04d}" / "patches"
        path = patches / "causal-conv1d" / "hostile.patch"
        path.parent.mkdir(parents=True)
        path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
        self.cases.append(Case(f"patch/{cid}", "call", call="buildtool.source.patching:load_patch",
                               args=[str(path), str(patches)], expect=expect, contains=contains,
                               located="hostile.patch"))

    def wheel(self, cid: str, path: Path, expect: str = "error", *contains: str) -> None:
        """A wheel through `buildtool verify --static-only` and through `buildtool index`."""
        report = path.parent / "verify.json"  # the table shortens file names; the JSON report has them whole
        self.cases.append(Case(f"wheel-verify/{cid}", "cli",
                               argv=["verify", "--static-only", "--json-out", str(report), str(path)],
                               expect="either" if expect == "ok" else expect, contains=contains,
                               located=path.name, long_ok=True))
        site = path.parent / "site"
        self.cases.append(Case(f"wheel-index/{cid}", "cli", argv=["index", str(path.parent), "--out", str(site)],
                               expect=expect, contains=contains, located=path.name))


BASE_MATRIX = (REPO / "matrix.yaml").read_text(encoding="utf-8")
BASE_RECIPE = (REPO / "recipes" / "causal-conv1d.yaml").read_text(encoding="utf-8")
BASE_KERNEL = (REPO / "kernels" / "causal_conv1d_cuda-1.5.yaml").read_text(encoding="utf-8")
BASE_PATCH = (REPO / "patches" / "causal-conv1d" / "msvc-alternative-tokens.patch").read_text(encoding="utf-8")


def _laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _yaml_attacks(prefix: str) -> list[tuple[str, str | bytes, tuple[str, ...]]]:
    """Attacks that work on any YAML input file: (id, content, message parts)."""
    deep = 100_000
    return [
        ("billion-laughs", _laughs(10) + prefix, ("billion laughs",)),
        ("laughs-in-keys-position", prefix + _laughs(9).replace("a0:", "x0:"), ("billion laughs",)),
        ("deep-lists", "x: " + "[" * deep + "]" * deep + "\n", ("nested more than 200 deep",)),
        ("deep-maps", "x: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", ("nested more than 200 deep",)),
        ("deep-block", "".join("  " * i + "- \n" for i in range(400)), ("nested more than 200 deep",)),
        ("nul-byte", prefix + "x: a\x00b\n", ("control character U+0000",)),
        ("bell", prefix.replace(":", ":\x07", 1), ("control character U+0007",)),
        ("escape-sequence", prefix + "\x1b[2J\n", ("control character U+001B",)),
        ("c1-control", prefix + "x: \x9b\n", ("control character U+009B",)),
        ("invalid-utf8", prefix.encode() + b"x: \xff\xfe\n", ("not UTF-8",)),
        ("utf16", prefix.encode("utf-16"), ("",)),
        ("tabs", prefix + "x:\n\t- 1\n", ("tabs",)),
        ("huge-int", prefix + "version2: " + "9" * 400 + "\n", ("number with 400 characters",)),
        ("python-object-tag", "!!python/object/apply:os.system ['echo pwned']\n", ("unsupported YAML tag",)),
        ("python-name-tag", prefix + "x: !!python/name:os.system ''\n", ("unsupported YAML tag",)),
        ("custom-tag", prefix + "x: !custom 1\n", ("unsupported YAML tag",)),
        ("unknown-alias", prefix + "x: *nowhere\n", ("unknown alias",)),
        ("duplicate-key-top", prefix + prefix, ("duplicate key",)),
        ("two-documents", prefix + "---\n" + prefix, ("found a second one",)),
        ("unclosed-flow", prefix + "x: [1, 2\n", ("YAML syntax error",)),
        ("unclosed-quote", prefix + "x: 'abc\n", ("YAML syntax error",)),
        ("mapping-key", prefix + "? [a, b]\n: 1\n", ("mapping keys must be plain scalars",)),
        ("merge-of-scalar", prefix + "x: {<<: 3}\n", ("merge key",)),
        ("long-key", prefix + "k" * 200_000 + ": 1\n", ("",)),
        ("top-level-list", "- 1\n- 2\n", ("",)),
        ("top-level-scalar", "just a string\n", ("",)),
        ("empty", "", ("",)),
        ("only-comment", "# nothing\n", ("",)),
    ]


def hand_written(c: Corpus) -> None:
    base = c.file("matrix.yaml", BASE_MATRIX)
    c.matrix("base", base, "ok")
    # -- the input path itself
    c.matrix("missing", c.root / "nowhere.yaml", "error", "file not found")
    c.matrix("directory", c.root, "error", "is a directory")
    loop = c.root / "loop-a.yaml"
    loop.symlink_to(c.root / "loop-b.yaml")
    (c.root / "loop-b.yaml").symlink_to(loop)
    c.matrix("symlink-loop", loop, "error", "Too many levels of symbolic links")
    dangling = c.root / "dangling.yaml"
    dangling.symlink_to(c.root / "gone.yaml")
    c.matrix("dangling-symlink", dangling, "error", "dangling symlink")
    fifo = c.root / "fifo.yaml"
    os.mkfifo(fifo)
    c.matrix("fifo", fifo, "error", "FIFO")
    c.matrix("dev-zero", Path("/dev/zero"), "error", "character device")
    big = c.root / "sparse.yaml"
    with big.open("wb") as fh:
        fh.truncate(65 * 2**20)
    c.matrix("over-size-limit", big, "error", "over the 64 MiB limit")
    c.matrix("file-below-a-file", base / "below", "error", "Not a directory")
    # -- generic YAML attacks, on the matrix
    for cid, text, parts in _yaml_attacks("version: 1\n"):
        c.matrix(cid, text, "error", *parts)
    # -- matrix semantics
    c.matrix("empty-exclude-rule", BASE_MATRIX.replace("exclude:\n", "exclude:\n  - {}\n", 1), "error",
             "an empty rule matches every cell")
    c.matrix("cyrillic-platform", BASE_MATRIX.replace("linux-x86_64", "linu\u0445-x86_64", 1), "error",
             "U+0445 CYRILLIC SMALL LETTER HA", 'did you mean "linux-x86_64"')
    c.matrix("cyrillic-key", BASE_MATRIX.replace("packages:", "p\u0430ckages:", 1), "error", "U+0430")
    c.matrix("zero-width-space", BASE_MATRIX.replace('"3.11"', '"3.11\u200b"', 1), "error", "3.11")
    c.matrix("fullwidth-digit", BASE_MATRIX.replace('"3.12"', '"3.\uff11\uff12"', 1), "error", "3.")
    c.matrix("bom-is-fine", "\ufeff" + BASE_MATRIX, "ok", same_as="matrix/base")
    c.matrix("crlf-is-fine", BASE_MATRIX.replace("\n", "\r\n"), "ok", same_as="matrix/base")
    merged = BASE_MATRIX.replace("axes:\n", "axes: &axes\n", 1) + "\nprofiles:\n  all:\n    description: x\n" \
        "    select: {<<: {python: \"3.11\"}}\n"
    c.matrix("merge-keys-valid", merged, "either")
    c.matrix("merge-key-include", BASE_MATRIX.replace(
        "include:\n", "x-seed: &seed {python: \"3.10\", cuda: \"12.4\", torch: \"2.4.1\"}\ninclude:\n", 1), "error",
        'unknown key "x-seed"')
    c.matrix("huge-version", BASE_MATRIX.replace("version: 1", "version: " + "7" * 60, 1), "error",
             "<60-digit number>")
    c.matrix("version-float", BASE_MATRIX.replace("version: 1", "version: 1.0", 1), "error", "version")
    c.matrix("version-string", BASE_MATRIX.replace("version: 1", 'version: "1"', 1), "error", "version")
    c.matrix("axes-list", BASE_MATRIX.replace("axes:\n", "axes: []\nold_axes:\n", 1), "error", "axes")
    c.matrix("packages-int", BASE_MATRIX.replace("packages:\n", "packages: 5\nold_packages:\n", 1), "error")
    c.matrix("unknown-cuda", BASE_MATRIX.replace('"12.4"', '"12.44"', 1), "error", "unknown cuda")
    c.matrix("negative-python", BASE_MATRIX.replace('"3.10"', "-3.10", 1), "error", "python")
    c.matrix("null-platform", BASE_MATRIX.replace("platform: [", "platform: ~\nxplatform: [", 1), "error")
    c.matrix("exclude-not-list", BASE_MATRIX.replace("exclude:\n", "exclude: {platform: linux-x86_64}\nx:\n", 1),
             "error")
    c.matrix("very-long-string", BASE_MATRIX.replace("linux-aarch64", "a" * 5_000_000, 1), "error",
             "unknown platform")
    rules = "".join(f'  - {{python: "3.1{i % 5}", cuda: "12.{4 + (i % 3) * 2}", torch: "2.{6 + i % 7}"}}\n'
                    for i in range(100_000))
    c.matrix("100k-exclude-rules", BASE_MATRIX.replace("exclude:\n", "exclude:\n" + rules, 1), "ok",
             seconds=300.0)
    c.matrix("alias-reuse-ok", BASE_MATRIX.replace("  - {platform: linux-aarch64, torch: \"2.6\"}",
                                                   "  - &r {platform: linux-aarch64, torch: \"2.6\"}\n  - *r", 1),
             "ok", same_as="matrix/base")

    # -- recipes, kernel specs, patches: each kind gets the generic attacks plus its own
    for cid, text, parts in _yaml_attacks("name: x\n")[:14]:
        c.recipe(cid, text, "error", *parts)
        c.kernel(cid, text, "error", *parts)
    c.recipe("base", BASE_RECIPE, "ok")
    c.recipe("directory", c.root, "error", "is a directory")
    c.recipe("unknown-key", BASE_RECIPE.replace("license:", "licence:", 1), "error", 'unknown key "licence"')
    c.recipe("bad-version", BASE_RECIPE.replace('version: "1.1.1"', 'version: "one"', 1), "error")
    c.recipe("sha-not-hex", BASE_RECIPE.replace("sha256: d0dc", "sha256: zzzz", 1), "either")
    c.recipe("cyrillic-name", BASE_RECIPE.replace("name: causal-conv1d", "name: c\u0430usal-conv1d", 1), "either")
    c.kernel("base", BASE_KERNEL, "ok")
    c.kernel("directory", c.root, "error", "is a directory")
    c.kernel("absolute-source", BASE_KERNEL.replace("  - csrc/causal_conv1d.cpp", "  - /etc/passwd", 1), "error")
    c.kernel("parent-source", BASE_KERNEL.replace("  - csrc/causal_conv1d.cpp", "  - ../../x.cpp", 1), "error")
    c.kernel("sources-scalar", BASE_KERNEL.replace("sources:\n", "sources: 3\nold:\n", 1), "error")
    c.patch("base", BASE_PATCH, "ok")
    header, _, diff = BASE_PATCH.partition("diff --git")
    diff = "diff --git" + diff
    c.patch("no-header", diff, "error")
    c.patch("empty", "", "error")
    c.patch("binary", bytes(range(256)) * 4, "error")
    c.patch("invalid-utf8", header.encode() + b"\xff\xfe" + diff.encode(), "error", "not UTF-8")
    c.patch("header-laughs", _laughs(10) + diff, "error", "billion laughs")
    c.patch("header-control-char", header.replace("summary:", "summary:\x00", 1) + diff, "error", "U+0000")
    c.patch("huge-hunk-counts", header + diff.replace("@@ -156,7 +156,7 @@", "@@ -156,99999999999 +156,7 @@", 1),
            "error")
    c.patch("hunk-without-file", header + "@@ -1,1 +1,1 @@\n-a\n+b\n", "error")
    c.patch("absolute-target", header + diff.replace("b/csrc/causal_conv1d.cpp", "b//etc/passwd"), "error")
    c.patch("parent-target", header + diff.replace("b/csrc/causal_conv1d.cpp", "b/../../x"), "error")
    c.patch("truncated-hunk", header + diff[: len(diff) // 2], "either")
    c.patch("crlf", (header + diff).replace("\n", "\r\n"), "either")
    c.patch("directory", b"", "error")  # replaced below by a directory of the same name
    patch_dir = Path(c.cases[-1].args[0])
    patch_dir.unlink()
    patch_dir.mkdir()

    # -- wheels
    good = make_wheel(c.root / "w-good", "causal-conv1d", f"1.7.0+{label('2.14')}", files={"x/__init__.py": "x = 1\n"})
    c.wheel("good", good, "ok")
    raw = good.read_bytes()
    for cid, data, parts in [
        ("empty", b"", ("damaged",)),
        ("truncated-half", raw[: len(raw) // 2], ("damaged",)),
        ("truncated-tail", raw[:-10], ("damaged",)),
        ("not-a-zip", b"PK\x03\x04 but not really" * 10, ("damaged",)),
        ("text-file", b"hello wheel\n", ("damaged",)),
        ("bit-flips", _flip(raw, 0.02, 1), ("damaged",)),
        ("bit-flip-one", _flip(raw, 0.0, 2, one=len(raw) // 3), ("",)),
    ]:
        path = c.root / f"w-{cid}" / good.name
        path.parent.mkdir()
        path.write_bytes(data)
        c.wheel(cid, path, "error", *parts)
    for cid, entries in [
        ("no-dist-info", {"x/__init__.py": b""}),
        ("two-dist-infos", {"a-1.dist-info/METADATA": b"", "b-1.dist-info/METADATA": b""}),
        ("zip-slip", {"../../evil.py": b"x", "causal_conv1d-1.7.0+cu130torch2.14.dist-info/METADATA": b""}),
    ]:
        path = c.root / f"w-{cid}" / good.name
        path.parent.mkdir()
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in entries.items():
                zf.writestr(name, data)
        c.wheel(cid, path, "error")
    bomb = c.root / "w-bomb" / good.name
    bomb.parent.mkdir()
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in src.infolist():
            zf.writestr(info, src.read(info))
        zf.writestr("x/zeros.bin", b"\0" * (200 * 2**20))  # 200 MiB of zeros in ~200 KiB
    c.wheel("zip-bomb-200MiB", bomb, "either")
    bad_name = c.root / "w-name" / "not-a-wheel-name.whl"
    bad_name.parent.mkdir()
    bad_name.write_bytes(raw)
    c.wheel("bad-file-name", bad_name, "error")
    wheel_dir = c.root / "w-dir" / good.name
    wheel_dir.mkdir(parents=True)
    c.wheel("directory-named-whl", wheel_dir, "either")
    for case in c.cases[-2:]:
        case.located = None  # "no wheels to verify" / an empty index: nothing to name


def _flip(data: bytes, rate: float, seed: int, one: int | None = None) -> bytes:
    out = bytearray(data)
    rng = random.Random(seed)
    positions = [one] if one is not None else rng.sample(range(30, len(out)), max(1, int(len(out) * rate)))
    for p in positions:
        out[p] ^= 1 << rng.randrange(8)
    return bytes(out)


# ------------------------------------------------------------------------------------------ generated
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.text(max_size=20),
                     st.sampled_from(["3.10", "12.4", "linux-x86_64", "<<", "*", "&", "!!", "---", "~", ""]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                       max_leaves=12)


def _mutations(base: str, *, structured: bool = True) -> st.SearchStrategy[str]:
    """Text mutations of a valid file: splice random text / YAML fragments / bytes at random places, or (YAML
    files) replace a random top-level value with a random YAML value."""
    data = yaml.safe_load(base) if structured else {}
    keys = sorted(data) if isinstance(data, dict) else []

    def splice(args: tuple[int, int, str]) -> str:
        at, cut, text = args
        at = at % (len(base) + 1)
        return base[:at] + text + base[at + cut % 40:]

    def replace(args: tuple[str, Any]) -> str:
        key, value = args
        return yaml.safe_dump({**data, key: value}, sort_keys=False, allow_unicode=True)

    text_bits = st.one_of(st.text(max_size=30), st.sampled_from(
        ["\n  - ", ": ", "{", "[", "&a ", "*a", "<<: *a\n", "\t", "\x00", "\u0445", "- {}\n", "!!binary ", "? "]))
    spliced = st.tuples(st.integers(0, 10**6), st.integers(0, 10**3), text_bits).map(splice)
    if not structured:
        return spliced
    return st.one_of(
        spliced,
        st.tuples(st.sampled_from(keys or ["x"]), _values).map(replace),
        _values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
    )


def _collect(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` distinct examples drawn by hypothesis (derandomized: the corpus is the same every run)."""
    found: list[Any] = []

    @settings(max_examples=count * 3, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(value: Any) -> None:
        if value not in found and len(found) < count:
            found.append(value)

    draw()
    return found


def _archives() -> st.SearchStrategy[tuple[str, bytes]]:
    """Random zip archives: random member names (dist-info or not, hostile paths) and contents, then maybe
    truncated or bit-flipped."""
    name = st.one_of(st.sampled_from(["causal_conv1d-1.7.0+cu130torch2.14.dist-info/METADATA",
                                      "causal_conv1d-1.7.0+cu130torch2.14.dist-info/WHEEL",
                                      "causal_conv1d-1.7.0+cu130torch2.14.dist-info/RECORD", "../x", "/abs",
                                      "a/b.so", "x.dist-info/METADATA"]), st.text(min_size=1, max_size=12))
    member = st.tuples(name, st.binary(max_size=200))
    damage = st.one_of(st.just(("none", 0)), st.tuples(st.sampled_from(["truncate", "flip"]), st.integers(0, 10**6)))
    return st.tuples(st.lists(member, max_size=6), damage, st.booleans()).map(_zip_bytes)


def _zip_bytes(args: tuple[list[tuple[str, bytes]], tuple[str, int], bool]) -> tuple[str, bytes]:
    import io

    members, (how, at), deflate = args
    buf = io.BytesIO()
    with warnings.catch_warnings(), \
            zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        warnings.simplefilter("ignore")  # duplicate member names are part of the attack
        for name, data in members:
            zf.writestr(name, data)
    raw = buf.getvalue()
    if how == "truncate":
        raw = raw[: at % (len(raw) + 1)]
    elif how == "flip" and raw:
        out = bytearray(raw)
        out[at % len(out)] ^= 0x10
        raw = bytes(out)
    return how, raw


def generated(c: Corpus) -> None:
    for i, text in enumerate(_collect(_mutations(BASE_MATRIX), GENERATED["matrix"])):
        c.matrix(f"generated-{i:03d}", text, "either")
    for i, text in enumerate(_collect(_mutations(BASE_RECIPE), GENERATED["recipe"])):
        c.recipe(f"generated-{i:03d}", text, "either")
    for i, text in enumerate(_collect(_mutations(BASE_KERNEL), GENERATED["kernel"])):
        c.kernel(f"generated-{i:03d}", text, "either")
    header = BASE_PATCH.partition("diff --git")[0]
    for i, text in enumerate(_collect(_mutations(BASE_PATCH, structured=False), GENERATED["patch"])):
        c.patch(f"generated-{i:03d}", text if i % 2 else header + text, "either")
    for i, (_, data) in enumerate(_collect(_archives(), GENERATED["wheel"])):
        path = c.root / f"w-gen-{i:03d}" / f"causal_conv1d-1.7.0+{label('2.14')}-cp311-cp311-linux_x86_64.whl"
        path.parent.mkdir()
        path.write_bytes(data)
        c.wheel(f"generated-{i:03d}", path, "either")


# ------------------------------------------------------------------------------------------ the test
def _limits() -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return apply


def _problems(case: Case, result: dict[str, Any] | None, outputs: dict[str, str]) -> list[str]:
    if result is None:
        return [f"{case.id}: no result (the batch died or timed out before it)"]
    out: list[str] = []
    outcome, message = result["outcome"], result["message"]
    if outcome == "crash":
        return [f"{case.id}: traceback\n{message}"]
    if case.expect != "either" and outcome != case.expect:
        out.append(f"{case.id}: expected {case.expect}, got {outcome}: {message[:300]}")
    if outcome == "error":
        text = " ".join(message.split())  # rich may wrap long lines
        if case.located and case.located not in text and " ".join(case.located.split()) not in text:
            out.append(f"{case.id}: the error does not name {case.located}: {message[:300]}")
        out += [f"{case.id}: error lacks {part!r}: {message[:300]}" for part in case.contains if part not in text]
        if len(message) > 3000 and not case.long_ok:
            out.append(f"{case.id}: error message of {len(message)} characters (input echoed?)")
    if outcome == "ok" and case.same_as is not None and result["stdout"] != outputs.get(case.same_as):
        out.append(f"{case.id}: result differs from {case.same_as}")
    if result["seconds"] > case.seconds:
        out.append(f"{case.id}: took {result['seconds']:.1f} s (bound {case.seconds:.0f} s)")
    return out


def test_hostile_corpus(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path)
    hand_written(corpus)
    hand = len(corpus.cases)
    generated(corpus)
    assert hand >= 100 and len(corpus.cases) - hand >= 200, (hand, len(corpus.cases))
    cases_file, results_file = tmp_path / "cases.json", tmp_path / "results.jsonl"
    cases_file.write_text(json.dumps([c.spec() for c in corpus.cases]), encoding="utf-8")
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "hostile_runner.py"), str(cases_file),
                           str(results_file)], cwd=REPO, env=env, preexec_fn=_limits(), timeout=BATCH_SECONDS,
                          capture_output=True, text=True)
    lines = [json.loads(line) for line in results_file.read_text(encoding="utf-8").splitlines()]
    results = {r["id"]: r for r in lines}
    outputs = {r["id"]: r.get("stdout", "") for r in lines}
    problems = [p for case in corpus.cases for p in _problems(case, results.get(case.id), outputs)]
    assert proc.returncode == 0 or not problems, proc.stderr[-3000:]
    assert not problems, f"{len(problems)} of {len(corpus.cases)} cases failed:\n" + "\n".join(problems[:40])
    # the figures docs/reliability.md quotes
    summary = {
        "cases": len(corpus.cases), "hand_written": hand, "generated": len(corpus.cases) - hand,
        "errors": sum(r["outcome"] == "error" for r in lines if "outcome" in r),
        "ok": sum(r["outcome"] == "ok" for r in lines if "outcome" in r),
        "slowest": max((r for r in lines if "seconds" in r), key=lambda r: r["seconds"]),
        "total_seconds": round(sum(r.get("seconds", 0) for r in lines), 1),
        "peak_rss_mib": round(results["__peak_rss_kib__"]["value"] / 1024),
    }
    print(json.dumps(summary))
    out = os.environ.get("BUILDTOOL_CORPUS_SUMMARY")
    if out:
        Path(out).write_text(json.dumps({**summary, "results": lines}, indent=1), encoding="utf-8")
