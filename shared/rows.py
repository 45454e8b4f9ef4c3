"""Rows into frozen dataclasses: each field from the column of its name.

A `from_row` then says only what differs from that rule (a renamed column, a conversion, a
field built from several columns), instead of spelling out every column."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
E = TypeVar("E")


class Row(Protocol):
    """What a decoder reads: an asyncpg Record, or a dict in tests."""

    def __getitem__(self, key: str) -> Any: ...


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def from_row(
    cls: type[T],
    row: Row,
    *,
    prefix: str = "",
    columns: Mapping[str, str] | None = None,
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
    given: Mapping[str, Any] | None = None,
) -> T:
    """An instance of the dataclass `cls`: each field not `given` is read from the column
    `prefix` + its name (or the name `columns` maps it to), through `convert` where named."""
    values = dict(given or {})
    for name in _field_names(cls):
        if name in values:
            continue
        value = row[prefix + (columns or {}).get(name, name)]
        if convert and name in convert:
            value = convert[name](value)
        values[name] = value
    return cls(**values)


def optional(convert: Callable[[Any], E]) -> Callable[[Any], E | None]:
    """`convert` for a nullable column: None (or '') stays None."""
    return lambda value: convert(value) if value else None
