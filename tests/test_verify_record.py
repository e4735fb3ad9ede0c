"""The GPU verification record (verify/record.py): written by the verify pipeline for a wheel whose GPU checks
ran and passed, read by `buildtool build` to report ``verified``. The reports are built directly (there is
no GPU here): the rows are the shapes the worker and the static checks return."""

from __future__ import annotations

import json
from pathlib import Path

from buildtool.build.cell import CellResult
from buildtool.build.runner import RunReport, summary_json, summary_table
from buildtool.source.fetch import file_sha256
from buildtool.verify.models import CheckResult, Environment, Report, failed, passed, skipped
from buildtool.verify.record import (
    GpuRun,
    read_record,
    records_dir,
    verification_status,
    verified_record,
    write_records,
)

CONV = "causal_conv1d-1.7.0+cu130torch2.14cxx11abitrue-cp311-cp311-linux_x86_64.whl"
MAMBA = "mamba_ssm-2.3.2.post1+cu130torch2.14cxx11abitrue-cp311-cp311-linux_x86_64.whl"
GROUP = "mamba_ssm 2.3.2.post1 + causal_conv1d 1.7.0"
ENV = Environment(date="2026-12-07T07:00:00+00:00", host_python="3.11.9", platform="Linux x86_64 6.8",
                  gpu="NVIDIA H100 80GB HBM3", gpu_arch="sm_90", driver="580.65", torch="2.14.1", torch_cuda="13.0")


def _static(wheel: str) -> list[CheckResult]:
    return [passed(wheel, "name"), passed(wheel, "record"), skipped(wheel, "abi3audit", "abi3audit is not installed")]


def _gpu_rows(*, smoke: str = "pass", speed: str = "pass") -> list[CheckResult]:
    return [passed(CONV, "import causal_conv1d_cuda"), passed(CONV, "numerics causal_conv1d fwd+bwd", cases=12),
            passed(MAMBA, "import selective_scan_cuda"), passed(MAMBA, "numerics selective_scan fwd+bwd", cases=24),
            CheckResult(wheel=GROUP, check="smoke Mamba", result=smoke),  # type: ignore[arg-type]
            CheckResult(wheel=CONV, check="speed causal_conv1d fwd", result=speed)]  # type: ignore[arg-type]


def _report(gpu_rows: list[CheckResult], env: Environment = ENV) -> tuple[Report, GpuRun]:
    rows = (*_static(CONV), *_static(MAMBA), *gpu_rows)
    run = GpuRun(label=GROUP, wheels=(MAMBA, CONV), rows=tuple(gpu_rows))
    return Report(environment=env, wheels=(CONV, MAMBA), results=rows), run


def _wheels(tmp_path: Path) -> list[Path]:
    out = []
    for name in (CONV, MAMBA):
        path = tmp_path / "dist" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(f"bytes of {name}".encode())
        out.append(path)
    return out


def test_status_from_static_result_and_record() -> None:
    record = verified_record(CONV, "a" * 64, *_report(_gpu_rows()))
    assert record is not None
    assert verification_status(None, None, None) is None  # no static checks ran: nothing to claim
    assert verification_status({"record": "pass"}, "a" * 64, None) == "verified-static"
    assert verification_status({"record": "pass"}, "a" * 64, record) == "verified"
    assert verification_status({"record": "pass"}, "b" * 64, record) == "verified-static"  # other bytes
    assert verification_status(None, "a" * 64, record) is None


def test_pipeline_records_wheels_that_passed_on_the_gpu(tmp_path: Path) -> None:
    wheels = _wheels(tmp_path)
    directory = records_dir(tmp_path / "cache")
    report, run = _report(_gpu_rows(speed="skip"))  # a row skipped by --skip is no failure
    written = write_records(report, [run], wheels, directory)
    assert sorted(p.name for p in written) == sorted(f"{file_sha256(w)}.json" for w in wheels)
    record = read_record(file_sha256(wheels[0]), directory)
    assert record is not None and record.wheel == CONV and record.sha256 == file_sha256(wheels[0])
    assert (record.gpu, record.torch, record.verified_at) == ("NVIDIA H100 80GB HBM3", "2.14.1", ENV.date)
    assert record.counts == {"pass": 5, "fail": 0, "skip": 2}  # its static rows, its GPU rows and the group's smoke
    on_disk = json.loads(written[0].read_text())
    assert on_disk["schema_version"] == 1 and set(on_disk["counts"]) == {"pass", "fail", "skip"}
    assert not list(directory.glob(".partial-*"))


def test_no_record_when_a_row_fails(tmp_path: Path) -> None:
    wheels = _wheels(tmp_path)
    directory = tmp_path / "verified"
    # the group's smoke test fails: neither wheel of the group is verified
    report, run = _report(_gpu_rows(smoke="fail"))
    assert write_records(report, [run], wheels, directory) == []
    # a static row of one wheel fails: that wheel only
    report, run = _report(_gpu_rows())
    report = report.model_copy(update={"results": (*report.results, failed(MAMBA, "glibc", "needs GLIBC 2.39"))})
    assert [p.name for p in write_records(report, [run], wheels, directory)] == [f"{file_sha256(wheels[0])}.json"]
    assert read_record(file_sha256(wheels[1]), directory) is None


def test_no_record_when_the_gpu_checks_were_skipped(tmp_path: Path) -> None:
    wheels = _wheels(tmp_path)
    no_gpu = [skipped(w, "numerics causal_conv1d fwd+bwd", "no GPU: torch.cuda.is_available() is False")
              for w in (CONV, MAMBA)]
    report, run = _report(no_gpu, ENV.model_copy(update={"gpu": None, "torch": None}))
    assert write_records(report, [run], wheels, tmp_path / "verified") == []
    # the pipeline makes no GpuRun at all without a GPU: nothing to record either
    assert write_records(report, [], wheels, tmp_path / "verified") == []
    assert not (tmp_path / "verified").exists()


def test_unreadable_record_is_no_record(tmp_path: Path) -> None:
    (tmp_path / f"{'c' * 64}.json").write_text("{not json")
    assert read_record("c" * 64, tmp_path) is None
    assert read_record("d" * 64, tmp_path) is None


def test_runner_reports_a_resumed_wheel_with_a_record_as_verified() -> None:
    resumed = CellResult(cell_id="cell-a", status="resumed", seconds=1.0, log=Path("cell-a.log"),
                         verification="verified", checks={"record": "pass"})
    built = CellResult(cell_id="cell-b", status="verified", seconds=2.0, log=Path("cell-b.log"),
                       verification="verified", checks={"record": "pass"})
    report = RunReport(results=(resumed, built))
    assert list(summary_table(report).columns[1].cells) == ["[cyan]resumed, verified[/]", "[bold green]verified[/]"]
    data = summary_json(report)
    assert data["ok"] is True and data["counts"]["verified"] == 1 and data["counts"]["resumed"] == 1
    assert [c["verification"] for c in data["cells"]] == ["verified", "verified"]
