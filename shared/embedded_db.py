"""The embedded PostgreSQL (pgserver) used when no DATABASE_URL is given in development."""

import warnings
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = ".data/postgres"


class EmbeddedPostgres:
    """A handle on a pgserver instance; the server stops when its last handle closes."""

    def __init__(self, data_dir: str | Path = DEFAULT_DATA_DIR) -> None:
        path = Path(data_dir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # pgserver's lock file lives in the runtime dir; falling back to /tmp is fine.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            from pgserver import get_server  # type: ignore[attr-defined]  # dev dependency only

            self._server: Any = get_server(path, cleanup_mode="stop")
        self.url: str = self._server.get_uri()

    def close(self) -> None:
        self._server.cleanup()


def resolve_database(
    url: str | None, environment: str, data_dir: str
) -> tuple[str, EmbeddedPostgres | None]:
    """The configured URL, or in development an embedded server (whose handle must be closed)."""
    if url is not None:
        return url, None
    if environment == "production":
        from shared.config import ConfigError

        raise ConfigError("a database URL is required in production (DATABASE_URL)")
    embedded = EmbeddedPostgres(data_dir)
    return embedded.url, embedded
