"""Which cells a rule names: exclude rules, profiles' selects and --filter, matched by axis value."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from buildtool.errors import UserError, did_you_mean
from buildtool.spec.abitrack import TRACKS
from buildtool.spec.compat import PLATFORMS
from buildtool.spec.matrix.cell import Cell
from buildtool.spec.matrix.schema import Selector

FILTER_KEYS = ("platform", "python", "cuda", "torch", "package", "tags", "abi")


_NONE: frozenset[int] = frozenset()


def first_matching_rules(cells: Sequence[Cell], rules: Sequence[Selector]) -> dict[int, int]:
    """{cell index: index of the first rule matching it}, as ``next(k for k, r in enumerate(rules) if
    r.matches(cell))`` per cell would give, in time linear in the rules (not cells x rules): the cells are
    indexed by their axis values, each distinct rule looks up the cells it matches among those still
    unmatched, and the scan stops once every cell is matched."""
    index: dict[tuple[str, str], set[int]] = {}
    for n, cell in enumerate(cells):
        for axis in FILTER_KEYS:
            for value in axis_values(cell, axis):
                index.setdefault((axis, value), set()).add(n)
    unmatched = set(range(len(cells)))
    first: dict[int, int] = {}
    seen: set[Selector] = set()
    for k, rule in enumerate(rules):
        if not unmatched:
            break
        if rule in seen:  # a repeated rule can only match what its first copy already matched
            continue
        seen.add(rule)
        matched: set[int] | None = None  # None: no axis constrained yet (every unmatched cell)
        for axis in FILTER_KEYS:
            values = getattr(rule, axis)
            if values is None:
                continue
            within = unmatched if matched is None else matched
            on_axis: set[int] = set()
            for value in values:
                on_axis |= index.get((axis, value), _NONE) & within
            matched = on_axis
            if not matched:
                break
        if matched is None:
            matched = set(unmatched)
        for n in matched:
            first[n] = k
        unmatched -= matched
    return first


def selector_text(sel: Selector) -> str:
    parts = [f"{k}={','.join(v)}" for k, v in sel.model_dump(exclude_none=True).items()]
    return " ".join(parts) or "(everything)"


def axis_values(cell: Cell, axis: str) -> tuple[str, ...]:
    if axis == "package":
        return (cell.package, f"{cell.package}=={cell.version}")
    if axis == "tags":
        return cell.tags
    if axis == "abi":
        return (cell.abi,)
    if axis == "torch":
        return (cell.torch, cell.torch_minor)
    return (str(getattr(cell, axis)),)


def parse_filter(text: str) -> Selector:
    """'cuda=12.4,12.6' -> Selector(cuda=(12.4, 12.6))."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not value:
        raise UserError(f'filter "{text}" must look like AXIS=VALUE[,VALUE]; axes: {", ".join(FILTER_KEYS)}')
    if key not in FILTER_KEYS:
        raise UserError(f'unknown filter axis "{key}"{did_you_mean(key, FILTER_KEYS)}; axes: {", ".join(FILTER_KEYS)}')
    values = tuple(v.strip() for v in value.split(",") if v.strip())
    if key == "abi":
        for a in values:
            if a not in TRACKS:
                raise UserError(f'unknown ABI track "{a}"{did_you_mean(a, TRACKS)}; allowed: {", ".join(TRACKS)}')
    if key == "platform":
        for p in values:
            if p not in PLATFORMS:
                raise UserError(f'unknown platform "{p}"{did_you_mean(p, PLATFORMS)}; allowed: {", ".join(PLATFORMS)}')
    try:
        return Selector(**{key: values})
    except ValidationError as exc:  # a python/cuda value that is not a version: the validator's own words
        reason = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise UserError(f"--filter {text}: {reason}") from None
