"""`make run`'s own start (python -m scripts.run_local) as a real process, on free ports, with
its own data directory and database, as the tests of the development start use it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from tests.databases import ROOT

GRPCURL = ROOT / ".venv" / "bin" / "grpcurl"
# What make run picks for itself: the tests must not pass their own settings for these.
_MAKE_RUN_OWN = (
    "APP_ENV",
    "WALLET_REUSE_CONFIRMATIONS",
    "OPERATOR_TOKEN",
    "CLIENT_TOKEN",
    "SERVICE_TOKEN",
    "WATCHER_TOKEN",
    "WALLET_POOL_TARGET",
    "DEV_CHAIN",
    "DEV_CHAIN_BLOCK_SECONDS",
)


class MakeRun:
    """One `make run`; `order_addr` / `pool_addr` / `tokens` as it printed them."""

    def __init__(self, process: asyncio.subprocess.Process, data: Path, banner: str) -> None:
        self.process = process
        self.data = data
        self.banner = banner
        self.order_addr = _printed(banner, "order service")
        self.pool_addr = _printed(banner, "wallet pool service")
        self.tokens = {
            role: (data / f"{role}_token").read_text().strip()
            for role in ("operator", "client", "watcher")
        }

    @classmethod
    async def start(cls, database_url: str, data: Path) -> MakeRun:
        env = {k: v for k, v in os.environ.items() if k not in _MAKE_RUN_OWN}
        env.update(
            DATABASE_URL=database_url,
            DEV_DATA_DIR=str(data),
            # Free ports: other runs on this machine may hold the defaults.
            ORDER_SERVICE_ADDR="127.0.0.1:0",
            WALLET_POOL_SERVICE_ADDR="127.0.0.1:0",
            ORDER_METRICS_ADDR="127.0.0.1:0",
            WALLET_POOL_METRICS_ADDR="127.0.0.1:0",
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scripts.run_local",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        banner = ""
        try:
            async with asyncio.timeout(90):
                while "Logs:" not in banner:
                    line = (await process.stdout.readline()).decode()
                    if not line:
                        raise AssertionError(f"make run ended before serving:\n{banner}")
                    banner += line
        except BaseException:
            if process.returncode is None:
                process.kill()
            await process.wait()
            raise
        return cls(process, data, banner)

    async def stop(self) -> int:
        """Ctrl-C, as a user stops it; its exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(60):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode

    async def grpcurl(self, role: str, address: str, method: str, body: dict[str, Any]) -> Any:
        """One call through grpcurl, as the README makes it; its JSON answer."""
        process = await asyncio.create_subprocess_exec(
            str(GRPCURL),
            "-plaintext",
            "-emit-defaults",
            "-H",
            f"authorization: Bearer {self.tokens[role]}",
            "-d",
            json.dumps(body),
            address,
            method,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        assert process.returncode == 0, out.decode()
        return json.loads(out)


def _printed(banner: str, name: str) -> str:
    match = re.search(rf"^\s+{name}:\s+(\S+)", banner, re.MULTILINE)
    assert match, f"make run did not print the {name}'s address:\n{banner}"
    return match.group(1)
