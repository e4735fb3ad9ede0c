"""The frozen pydantic base every model at a stage boundary derives from: immutable, unknown fields are
errors (a typo in a YAML file or a stale JSON report fails loudly instead of being ignored)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
