"""Named SQL blocks: a `.sql` file holds queries headed `-- name --`, loaded once into a dict;
and what every SQL adapter does with them."""

import enum
import functools
import re
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

if TYPE_CHECKING:
    from shared.db import Connection

_HEADER = re.compile(r"^--\s*([a-z_][a-z0-9_]*)\s*--\s*$", re.MULTILINE)

T = TypeVar("T")


def parse_queries(text: str) -> dict[str, str]:
    """Split `text` at `-- name --` lines; leading `--` lines of a block describe it, dropped."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        lines = body.strip().splitlines()
        while lines and lines[0].lstrip().startswith("--"):
            lines.pop(0)
        sql = "\n".join(lines).strip()
        if not sql:
            raise ValueError(f"query {name!r} is empty")
        queries[name] = sql
    return queries


@functools.cache
def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    return parse_queries(resources.files(package).joinpath(filename).read_text(encoding="utf-8"))


def _parameter(value: object) -> object:
    return value.value if isinstance(value, enum.Enum) else value


def columns(items: Sequence[object], *fields: str) -> list[list[object]]:
    """One array per named attribute of `items` (enums as their values): the parameters of a
    statement that `unnest`s a batch, a row per item."""
    return [[_parameter(getattr(item, name)) for item in items] for name in fields]


class SqlAdapter:
    """An adapter bound to one connection, running the named queries of its service's
    `queries.sql` (the package named by QUERIES)."""

    QUERIES: ClassVar[str]

    def __init__(self, conn: "Connection") -> None:
        self._conn = conn
        self._q = load_queries(self.QUERIES)

    async def _rows(self, query: str, decode: Callable[[Any], T], *args: object) -> list[T]:
        return [decode(row) for row in await self._conn.fetch(self._q[query], *args)]

    async def _row(self, query: str, decode: Callable[[Any], T], *args: object) -> T | None:
        row = await self._conn.fetchrow(self._q[query], *args)
        return decode(row) if row is not None else None

    async def _value(self, kind: type[T], query: str, *args: object) -> T:
        """The first column of the first row, which the query gives as a `kind`."""
        return cast(T, await self._conn.fetchval(self._q[query], *args))

    async def _execute(self, query: str, *args: object) -> None:
        await self._conn.execute(self._q[query], *args)
