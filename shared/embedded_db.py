"""The embedded PostgreSQL (pgserver) used when no DATABASE_URL is given in development."""

from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = ".data/postgres"


class EmbeddedPostgres:
    """A handle on a pgserver instance; the server stops when its last handle closes."""

    def __init__(self, data_dir: str | Path = DEFAULT_DATA_DIR) -> None:
        import pgserver  # a development dependency, not installed in containers

        path = Path(data_dir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        self._server: Any = pgserver.get_server(path, cleanup_mode="stop")
        self.url: str = self._server.get_uri()

    def close(self) -> None:
        self._server.cleanup()
