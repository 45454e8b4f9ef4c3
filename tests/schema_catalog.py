"""The services' schemas as the catalog describes them: to compare two databases, and the
surface a release's code can name (functions, views, columns), which the next release keeps.

`python -m tests.schema_catalog` prints that surface for a database migrated from zero by
this checkout (DATABASE_URL's server, or an embedded one): `make contract-release` writes it
to protos/released_schema.txt beside the released contract."""

import asyncio
import sys
from pathlib import Path

import asyncpg

from shared.db import Connection

SCHEMAS = ["orders", "wallet_pool"]
RELEASED_SCHEMA = Path(__file__).resolve().parents[1] / "protos" / "released_schema.txt"

_FUNCTIONS = """
SELECT p.oid::regprocedure::text AS signature, pg_get_functiondef(p.oid) AS definition,
       pg_get_function_result(p.oid) AS result, t.typname = 'trigger' AS is_trigger
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_type t ON t.oid = p.prorettype
WHERE n.nspname = ANY($1::text[])
"""
_COLUMNS = """
SELECT c.relnamespace::regnamespace::text || '.' || c.relname AS relation, c.relkind,
       a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS default_or_generated, a.attgenerated
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relnamespace::regnamespace::text = ANY($1::text[]) AND c.relkind IN ('r', 'v')
ORDER BY relation, a.attnum
"""
_OTHERS = """
SELECT 'index ' || indexrelid::regclass::text AS key, pg_get_indexdef(indexrelid) AS definition
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
WHERE c.relnamespace::regnamespace::text = ANY($1::text[])
UNION ALL
SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname, pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace::regnamespace::text = ANY($1::text[])
UNION ALL
SELECT 'trigger ' || tgrelid::regclass::text || ' ' || tgname, pg_get_triggerdef(oid)
FROM pg_trigger t WHERE NOT tgisinternal
  AND tgrelid::regclass::text LIKE ANY (SELECT s || '.%' FROM unnest($1::text[]) AS s)
UNION ALL
SELECT 'view ' || schemaname || '.' || viewname, definition
FROM pg_views WHERE schemaname = ANY($1::text[])
UNION ALL
SELECT 'options ' || oid::regclass::text, array_to_string(reloptions, ',')
FROM pg_class WHERE relnamespace::regnamespace::text = ANY($1::text[])
  AND reloptions IS NOT NULL
"""


async def catalog(conn: Connection) -> dict[str, str]:
    """Every function, column (in its place), index, constraint, trigger, view and storage
    option of the services' schemas, by a key naming it: two databases with the same
    catalog have the same schema."""
    found: dict[str, str] = {}
    for row in await conn.fetch(_FUNCTIONS, SCHEMAS):
        found[f"function {row['signature']}"] = row["definition"]
    columns: dict[str, list[str]] = {}
    for row in await conn.fetch(_COLUMNS, SCHEMAS):
        columns.setdefault(row["relation"], []).append(
            f"{row['attname']} {row['type']} not null={row['attnotnull']}"
            f" default={row['default_or_generated']} generated={row['attgenerated']!r}"
        )
    for relation, described in columns.items():
        found[f"columns {relation}"] = "\n".join(described)
    for row in await conn.fetch(_OTHERS, SCHEMAS):
        found[row["key"]] = row["definition"]
    return found


async def surface(conn: Connection) -> list[str]:
    """What a release's code can name, one line each: every function that is not a trigger's
    (signature and result), and every column of every table and view (name and type)."""
    lines = [
        f"function {row['signature']} -> {row['result']}"
        for row in await conn.fetch(_FUNCTIONS, SCHEMAS)
        if not row["is_trigger"]
    ]
    lines += [
        f"column {row['relation']}.{row['attname']} {row['type']}"
        for row in await conn.fetch(_COLUMNS, SCHEMAS)
        if not row["relation"].endswith((".schema_migrations", ".schema_definitions"))
    ]
    return sorted(lines)


def released_surface() -> list[str]:
    """The surface of the released schema, as `make contract-release` recorded it."""
    text = RELEASED_SCHEMA.read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


async def _print_surface() -> None:
    from tests.databases import DatabaseFactory

    databases = DatabaseFactory()
    try:
        await databases.create_template()
        conn = await asyncpg.connect(await databases.create())
        try:
            lines = await surface(conn)
        finally:
            await conn.close()
    finally:
        await databases.drop_all()
    sys.stdout.write(
        "# What the released code can name in its database (python -m tests.schema_catalog,"
        " cut by make contract-release):\n# a later release keeps all of it"
        " (tests/integration/test_definitions.py). See README, Changing the schema.\n"
    )
    sys.stdout.write("".join(f"{line}\n" for line in lines))


if __name__ == "__main__":
    asyncio.run(_print_surface())
