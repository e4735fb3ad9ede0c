"""The `[tool.buildtool]` table of a prepared tree's pyproject.toml: everything the PEP 517 backend needs.

`buildtool prepare` writes it; `buildtool.backend` reads it and nothing else of this project (no checkout
has to be around the tree: pip, build, uv and cibuildwheel copy or isolate it). Example::

    [tool.buildtool]
    package = "causal-conv1d"
    version = "1.7.0"
    platform = "linux-x86_64"          # the patches were chosen for it
    kernels = ["causal_conv1d-1.7"]    # .buildtool/kernels/<name>.yaml
    python_packages = ["causal_conv1d"]
    abi = "full"                       # or "stable" (kernels and patches of the stable-ABI track)
    recipe = ".buildtool/recipe.yaml"
    builder = "mamba-wheel-builder==0.1.0"
    torch = "2.14.1"                   # optional: the torch an isolated build env installs
    cuda = "13.0"                      # optional: the CUDA that torch must be built for

    [tool.buildtool.arch-policy]       # archs per CUDA when neither -C archs nor TORCH_CUDA_ARCH_LIST is set
    "13.0" = "7.5;8.0;8.6;9.0;10.0;12.0+PTX"
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from buildtool.errors import UserError
from buildtool.spec.abitrack import AbiTrack

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["TreeConfig", "read_tree_config", "tree_config_toml"]

PYPROJECT = "pyproject.toml"


class TreeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    package: str
    version: str
    platform: str
    kernels: tuple[str, ...]
    python_packages: tuple[str, ...]
    abi: AbiTrack = "full"
    recipe: str = ".buildtool/recipe.yaml"
    builder: str
    torch: str | None = None
    cuda: str | None = None
    arch_policy: dict[str, str] = Field(default_factory=dict, alias="arch-policy")

    def build_requires(self, torch: str | None = None) -> list[str]:
        """What an isolated build env needs besides the builder (build-system.requires): the cell's torch
        (``torch`` overrides the tree's) and ninja."""
        pin = torch or self.torch
        return [*([f"torch=={pin}"] if pin else []), "ninja"]


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable text is a valid TOML basic string


def _toml_list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def tree_config_toml(config: TreeConfig) -> str:
    """The TOML text of the table (what prepare appends to the generated pyproject.toml)."""
    lines = ["[tool.buildtool]"]
    for key in ("package", "version", "platform"):
        lines.append(f"{key} = {_toml_str(getattr(config, key))}")
    lines.append(f"kernels = {_toml_list(config.kernels)}")
    lines.append(f"python_packages = {_toml_list(config.python_packages)}")
    lines.append(f"abi = {_toml_str(config.abi)}")
    lines.append(f"recipe = {_toml_str(config.recipe)}")
    lines.append(f"builder = {_toml_str(config.builder)}")
    for key in ("torch", "cuda"):
        value = getattr(config, key)
        if value is not None:
            lines.append(f"{key} = {_toml_str(value)}")
    if config.arch_policy:
        lines += ["", "[tool.buildtool.arch-policy]"]
        lines += [f"{_toml_str(cuda)} = {_toml_str(archs)}" for cuda, archs in config.arch_policy.items()]
    return "\n".join(lines) + "\n"


def read_tree_config(root: Path) -> TreeConfig:
    """[tool.buildtool] of ``root``/pyproject.toml; a clear UserError when it is missing or malformed."""
    path = root / PYPROJECT
    hint = "create the tree with `buildtool prepare PACKAGE==VERSION --out DIR`"
    if not path.is_file():
        raise UserError(f"{root} is not a prepared tree: no {PYPROJECT}", hint=hint)
    try:
        data: Mapping[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    table = data.get("tool", {}).get("buildtool")
    if not isinstance(table, dict):
        raise UserError(f"{path} has no [tool.buildtool] table: not a tree written by `buildtool prepare`", hint=hint)
    try:
        return TreeConfig.model_validate(table)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(table)'}: {e['msg']}" for e in exc.errors())
        raise UserError(f"{path} [tool.buildtool]: {problems}", hint=hint) from None
