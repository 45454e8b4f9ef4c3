"""PostgreSQL from pgserver's binaries in a temporary directory: what `cluster` and
`replication` share."""

import asyncio
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any


class PgBinaries:
    """pgserver's binaries (`bin`) and a temporary directory (`root`, removed on close) that
    holds the data directories, their sockets and the commands' output (`output`). As root,
    every binary runs as the user pgserver itself uses (PostgreSQL refuses to run as root).
    pg_ctl detaches the servers from this process: at exit, any still running under `root`
    is stopped."""

    def __init__(self, prefix: str, output: str) -> None:
        with warnings.catch_warnings():
            # pgserver's lock file lives in the runtime dir; falling back to /tmp is fine.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            import pgserver

        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.output = self.root / output
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = _as_system_user("pgserver", self.bin, self.root)
        atexit.register(self._stop_at_exit)

    async def run(self, *args: str, tail: Callable[[], str] | None = None) -> None:

        def run() -> None:
            # Never a pipe: the server inherits pg_ctl's output and would keep it open.
            with self.output.open("ab") as out:
                subprocess.run(
                    [*self._as_user, str(self.bin / args[0]), *args[1:]],
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    cwd=self.root,
                    timeout=90,
                )

        try:
            await asyncio.to_thread(run)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            text = tail() if tail is not None else self._output_tail()
            raise RuntimeError(f"{args[0]} failed: {exc}\n{text}") from exc

    async def initdb(self, data: Path) -> None:
        await self.run(
            "initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
            "--no-locale", "--no-sync",
        )  # fmt: skip

    async def start(
        self, data: Path, port: int, log: Path, tail: Callable[[], str] | None = None
    ) -> None:
        """The server of `data` on `port` of 127.0.0.1, its socket in `root`. Only processes
        crash here, never the machine: no need to wait for the disk (`fsync=off`)."""
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c max_connections=200"
        )
        await self.run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-l", str(log), "-o", options,
            tail=tail,
        )  # fmt: skip

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self._stop_at_exit)

    def _output_tail(self) -> str:
        return self.output.read_text(errors="replace")[-2000:] if self.output.exists() else ""

    def _stop_at_exit(self) -> None:
        for pid_file in sorted(self.root.glob("*/postmaster.pid")):
            pg_ctl = [
                str(self.bin / "pg_ctl"),
                "stop",
                "-m",
                "immediate",
                "-D",
                str(pid_file.parent),
            ]
            subprocess.run([*self._as_user, *pg_ctl], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _as_system_user(user: str, bin_dir: Path, root: Path) -> list[str]:
    """What pgserver does before it runs PostgreSQL as root: the user exists and can reach
    the binaries; here it also owns the cluster's directory. Returns a command prefix that
    runs a program as that user.

    Not `subprocess.run(user=...)`: that forks this process, whose gRPC threads make the
    child crash now and then (gRPC's fork handlers); a plain spawn of a small trampoline
    does not fork them."""
    import pwd

    from pgserver import utils

    helpers: Any = utils
    helpers.ensure_user_exists(user)
    helpers.ensure_prefix_permissions(bin_dir)
    helpers.ensure_folder_permissions(bin_dir, 0o555)
    helpers.ensure_folder_permissions(bin_dir.parent / "lib", 0o444)
    helpers.ensure_folder_permissions(bin_dir.parent / "share", 0o444)
    entry = pwd.getpwnam(user)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    trampoline = (
        "import os, sys; os.setgroups([]); "
        f"os.setgid({entry.pw_gid}); os.setuid({entry.pw_uid}); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", trampoline]
