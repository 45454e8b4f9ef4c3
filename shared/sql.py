"""Named SQL blocks: a `.sql` file holds queries headed `-- name --`, loaded once into a dict."""

import re
from importlib import resources

_HEADER = re.compile(r"^--\s*([a-z_][a-z0-9_]*)\s*--\s*$", re.MULTILINE)


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


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    return parse_queries(resources.files(package).joinpath(filename).read_text(encoding="utf-8"))
