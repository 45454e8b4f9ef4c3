"""How soon calls answer while the pool hangs: README (Operations, the internal channel) says
every CreateOrder and UpdateOrderStatus answers within WALLET_POOL_TIMEOUT_SECONDS + 0.5 s,
40 at once. A speed claim, so it is measured here; tests/e2e/test_hung_pool.py checks, with
no clock, that every call answers what it committed while the pool is still frozen.

    .venv/bin/python -m bench.hung_pool [--rounds N]
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Awaitable
from pathlib import Path

from tests.databases import DatabaseFactory
from tests.e2e.stack import LocalStack
from tests.e2e.test_hung_pool import complete, frozen, judge, processing_orders, timed
from tests.e2e.test_release_flow import create

POOL_DEADLINE = 2.0
# README's bound beyond the pool's deadline: two statements and the answer.
ANSWER_BOUND = 0.5
CALLS = 20  # of each kind: 20 creates and 20 completes at once


async def slowest_answers(rounds: int) -> list[float]:
    databases = DatabaseFactory()
    slowest = []
    try:
        await databases.create_template()
        with tempfile.TemporaryDirectory() as folder:
            stack = await LocalStack.start(
                await databases.create(migrated=False),
                Path(folder),
                extra_env={"WALLET_POOL_TIMEOUT_SECONDS": str(POOL_DEADLINE)},
            )
            try:
                for _ in range(rounds):
                    completing = await processing_orders(stack, CALLS)
                    async with frozen(stack):
                        calls: list[Awaitable[object]] = [create(stack) for _ in range(CALLS)]
                        calls += [complete(stack, order_id) for order_id in completing]
                        timings = await asyncio.gather(*(timed(call) for call in calls))
                    judge(
                        [outcome for _, outcome in timings],
                        ["create"] * CALLS + ["complete"] * CALLS,
                    )
                    slowest.append(max(seconds for seconds, _ in timings))
            finally:
                await stack.close()
    finally:
        await databases.drop_all()
    return slowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    slowest = asyncio.run(slowest_answers(options.rounds))
    bound = POOL_DEADLINE + ANSWER_BOUND
    print(
        f"{2 * CALLS} calls at once with the pool hung, WALLET_POOL_TIMEOUT_SECONDS="
        f"{POOL_DEADLINE}: slowest answer median {statistics.median(slowest):.2f} s, "
        f"max {max(slowest):.2f} s over {options.rounds} rounds (README's bound {bound:.1f} s)"
    )
    sys.exit(0 if max(slowest) <= bound else 1)


if __name__ == "__main__":
    main()
