"""The seed, the log directory, the options and the end of both chaos runs."""

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, Protocol


class Report(Protocol):
    violations: list[str]
    log_problems: list[str]

    def render(self) -> str: ...


def parse_args(
    description: str, *, seconds: float, seconds_help: str, workers: int, prog: str | None = None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--seconds", type=float, default=seconds, help=seconds_help)
    parser.add_argument("--seed", type=int, default=None, help="default: CHAOS_SEED or random")
    parser.add_argument("--workers", type=int, default=workers, help="concurrent order lifecycles")
    parser.add_argument("--log-dir", type=Path, default=None, help="where service logs go")
    return parser.parse_args()


def seed_and_log_dir(
    name: str, seed: int | None, log_dir: Path | None, prefix: str
) -> tuple[int, Path]:
    if seed is None:
        seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(10**9))
    print(f"{name} seed {seed} (replay with CHAOS_SEED={seed})", flush=True)
    if log_dir is None:
        log_dir = Path(tempfile.mkdtemp(prefix=prefix))
    log_dir.mkdir(parents=True, exist_ok=True)
    return seed, log_dir


def run_and_exit(name: str, run: Callable[[], Awaitable[Report]]) -> NoReturn:
    """Exit 1 on a violation or an error in the services' logs, 130 when stopped (SIGTERM,
    like Ctrl-C, stops the run and cleans up)."""

    async def main() -> Report:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run()

    try:
        report = asyncio.run(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        print(f"{name} stopped before its end; cleaned up")
        sys.exit(130)
    print(report.render())
    sys.exit(1 if report.violations or report.log_problems else 0)
