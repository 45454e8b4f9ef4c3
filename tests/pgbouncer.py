"""A real PgBouncer (Debian's `pgbouncer` package, which `make test` installs) in transaction
pooling in front of the test server, on a free port, with a generated ini file."""

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

# Few server connections for many clients: server connections change hands all the time.
SERVER_CONNECTIONS = 3


def executable() -> str:
    """PgBouncer's binary (Debian puts it in /usr/sbin, which may not be on PATH)."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found is None:
        raise RuntimeError("PgBouncer is not installed: run `make pgbouncer` (apt-get, as root)")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PgBouncer:
    """`pool_mode = transaction` in front of the server of `server_url`, for every database
    on it (a wildcard entry), trusting the server's user."""

    def __init__(self, server_url: str) -> None:
        server = urlsplit(server_url)
        # pgserver's URLs name a socket directory (?host=/dir); DATABASE_URL a TCP address.
        host = parse_qs(server.query).get("host", [server.hostname or "127.0.0.1"])[0]
        self._user = server.username or "postgres"
        target = f"host={host} port={server.port or 5432}"
        # PgBouncer refuses to run as root: as root, it runs as the owner of the server's
        # socket directory (pgserver's is private to its user), or as nobody.
        self._run_as = (
            pwd.getpwuid(Path(host).stat().st_uid).pw_name if host[0] == "/" else "nobody"
        )
        if server.password:
            target += f" user={self._user} password={server.password}"
        self.port = _free_port()
        # Readable by that user (pytest's own temporary directories are private to root).
        self._dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self._dir.chmod(0o755)
        self._ini = self._dir / "pgbouncer.ini"
        users = self._dir / "userlist.txt"
        users.write_text(f'"{self._user}" ""\n')
        self._ini.write_text(
            f"""[databases]
* = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
admin_users = {self._user}
pool_mode = transaction
default_pool_size = {SERVER_CONNECTIONS}
max_client_conn = 500
log_connections = 1
log_disconnections = 0
"""
        )
        for path in (self._ini, users):
            path.chmod(0o644)
        self.log_path = self._dir / "pgbouncer.log"
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database_url: str) -> str:
        """The same database as `database_url`, through PgBouncer."""
        name = urlsplit(database_url).path
        return urlunsplit(("postgresql", f"{self._user}@127.0.0.1:{self.port}", name, "", ""))

    async def start(self) -> None:
        """Start and wait until it lets a client in (it connects to the server lazily)."""
        command = [executable(), str(self._ini)]
        if os.geteuid() == 0:
            command[1:1] = ["-u", self._run_as]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"PgBouncer stopped at start:\n{self.logs()}")
            try:
                conn = await asyncpg.connect(
                    self.url("/postgres"), statement_cache_size=0, timeout=2
                )
            except (OSError, TimeoutError, asyncpg.PostgresError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
                continue
            await conn.close()
            return

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Called once its clients are gone (which newer versions wait for on SIGTERM)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
