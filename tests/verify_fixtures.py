"""Builders for small real test wheels (zip + RECORD + a real compiled ELF .so) used by the verify tests."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

from provenance_samples import current_provenance

KERNEL_CU = r"""
__global__ void add_one(float* x) { x[threadIdx.x] += 1.0f; }
extern "C" void launch_add_one(float* x) { add_one<<<1, 32>>>(x); }
"""
PLAIN_C = "int answer(void) { return 42; }\n"


def compile_cuda_so(out: Path, archs: list[str], ptx: bool = False, extra_libs: list[str] = ()) -> Path:  # type: ignore[assignment]
    """A real shared library with a fatbin holding a cubin per arch (and PTX for the last one)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise FileNotFoundError("nvcc")
    src = out.with_suffix(".cu")
    src.write_text(KERNEL_CU)
    cmd = [nvcc, "-shared", "-Xcompiler", "-fPIC", "-o", str(out), str(src)]
    for i, a in enumerate(archs):
        n = a.replace(".", "")
        code = f"[sm_{n},compute_{n}]" if ptx and i == len(archs) - 1 else f"sm_{n}"
        cmd += ["-gencode", f"arch=compute_{n},code={code}"]
    cmd += [f"-l{lib}" for lib in extra_libs]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def compile_c_so(out: Path, needs: list[str] = ()) -> Path:  # type: ignore[assignment]
    """A plain C shared library; `needs` adds DT_NEEDED entries (-l names that must exist at link time)."""
    src = out.with_suffix(".c")
    src.write_text(PLAIN_C)
    cmd = ["gcc", "-shared", "-fPIC", "-o", str(out), str(src), f"-L{out.parent}", "-Wl,--no-as-needed",
           *[f"-l{n}" for n in needs]]
    subprocess.run(cmd, check=True, capture_output=True, cwd=out.parent)
    return out


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def provenance(archs: list[str], ptx: bool = False) -> dict[str, object]:
    """The provenance the wheel stage writes for these archs (the current typed layout)."""
    return current_provenance(archs, ptx)


def make_wheel(
    out_dir: Path, *, dist: str = "tinyk", version: str = "0.1.0+cu130torch2.11cxx11abiTRUE",
    tag: str = "cp312-cp312-linux_x86_64", files: dict[str, bytes] | None = None,
    metadata_version: str | None = None, prov: dict[str, object] | None = None,
    corrupt_after_record: dict[str, bytes] | None = None,
) -> Path:
    """Write `{dist}-{version}-{tag}.whl` with METADATA, WHEEL, RECORD and (optionally) provenance.
    `metadata_version` puts a different Version into METADATA; `corrupt_after_record` replaces file
    contents after RECORD was computed (what a broken repair step or a tampered file looks like)."""
    info = f"{dist}-{version}.dist-info"
    content: dict[str, bytes] = {f"{dist}/__init__.py": b"__version__ = '0.1.0'\n"}
    content.update(files or {})
    content[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {metadata_version or version}\n").encode()
    py, abi, plat = tag.split("-")
    content[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {py}-{abi}-{plat}\n").encode()
    if prov is not None:
        content[f"{info}/buildtool_provenance.json"] = json.dumps(prov).encode()
    record = [f"{n},{_digest(d)},{len(d)}" for n, d in sorted(content.items())] + [f"{info}/RECORD,,"]
    content[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    content.update(corrupt_after_record or {})
    path = out_dir / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n in sorted(content):
            zf.writestr(n, content[n])
    return path
