"""The typed wheel provenance (buildtool.wheel.provenance): the current layout round-trips through the
wheel writer, the untyped schema-1 layout of older wheels reads through the one migration function, and
anything else is refused with the file, the field and the problem named."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from provenance_samples import current_provenance, legacy_provenance, without

from buildtool.wheel.provenance import (
    SCHEMA_VERSION,
    Provenance,
    ProvenanceError,
    migrate_provenance,
    parse_provenance,
    parse_provenance_bytes,
)
from buildtool.wheel.reader import read_wheel_provenance


def test_schema_1_migrates_to_the_current_layout() -> None:
    old = legacy_provenance(["8.0", "9.0"], ptx=True)
    migrated = migrate_provenance(old)
    assert "schema" not in migrated and migrated["schema_version"] == SCHEMA_VERSION == 2
    assert migrated["cell"]["abi"] == "full" and migrated["cell"]["torch_floor"] is None
    assert old["schema"] == 1 and "abi" not in old["cell"]  # the input is left alone
    prov = parse_provenance(old)
    assert prov.cell.archs == ("8.0", "9.0") and prov.ptx_arch == "9.0" and prov.cell.ptx
    assert prov.toolchain.cuda_version == "13.0.88" and prov.min_driver_cuda == "13.0"
    assert prov.source.source_date_epoch == 1787223254 and prov.stable_abi is None
    assert prov.build_env.torch_cuda == "13.0"


def test_current_layout_is_left_as_is_and_round_trips() -> None:
    data = current_provenance(["9.0"])
    assert migrate_provenance(data) == data
    prov = parse_provenance(data)
    again = parse_provenance_bytes(prov.to_json_bytes())
    assert again == prov
    raw = json.loads(prov.to_json_bytes())
    assert raw["schema_version"] == 2 and "stable_abi" not in raw  # full-ABI wheels carry no stable_abi block
    assert prov.to_json_bytes().endswith(b"}\n") and list(raw) == sorted(raw)


def test_stable_abi_block_is_typed() -> None:
    data = current_provenance(["9.0"])
    data["cell"] |= {"abi": "stable", "torch_floor": "2.10"}
    data["stable_abi"] = {"track": "stable", "torch_floor": "2.10", "torch_target_version": "0x020a000000000000",
                          "built_against_torch": "2.14.1", "py_limited_api": "0x030a0000", "shims": ["tiny_cuda.py"]}
    prov = parse_provenance(data)
    assert prov.stable_abi is not None and prov.stable_abi.shims == ("tiny_cuda.py",)
    assert json.loads(prov.to_json_bytes())["stable_abi"]["torch_floor"] == "2.10"


@pytest.mark.parametrize(("data", "message"), [
    ([1, 2], "is not a JSON object"),
    (without(legacy_provenance(), "toolchain"), "toolchain: Field required"),
    ({**legacy_provenance(), "schema": 3}, "provenance schema 3 is unknown"),
    ({**current_provenance(), "schema_version": 9}, "schema_version 9 is newer than this buildtool reads (2)"),
    ({**current_provenance(), "surprise": 1}, "surprise: Extra inputs are not permitted"),
    ({**legacy_provenance(), "cell": {**legacy_provenance()["cell"], "ptx": "maybe"}}, "cell.ptx:"),
])
def test_unreadable_provenance_names_the_field(data: object, message: str) -> None:
    with pytest.raises(ProvenanceError) as info:
        parse_provenance(data, where="x.dist-info/buildtool_provenance.json")
    assert str(info.value).startswith("x.dist-info/buildtool_provenance.json: ") and message in str(info.value)


def test_damaged_json_is_a_clear_error() -> None:
    with pytest.raises(ProvenanceError, match="is not valid JSON"):
        parse_provenance_bytes(b'{"schema": 1,')


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_read_from_a_wheel_file(tmp_path: Path) -> None:
    info = "tiny-0.1+cu130torch2.14cxx11abiTRUE.dist-info"
    old = _zip(tmp_path / "old.whl", {f"{info}/buildtool_provenance.json": json.dumps(legacy_provenance()).encode()})
    prov = read_wheel_provenance(old)
    assert isinstance(prov, Provenance) and prov.schema_version == 2
    assert read_wheel_provenance(_zip(tmp_path / "none.whl", {f"{info}/METADATA": b"Name: tiny\n"})) is None
    bad = _zip(tmp_path / "bad.whl", {f"{info}/buildtool_provenance.json": b"[]"})
    with pytest.raises(ProvenanceError, match=r"bad\.whl: .*buildtool_provenance\.json: is not a JSON object"):
        read_wheel_provenance(bad)
