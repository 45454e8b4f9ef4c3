"""The README's grpcurl walk-through, run as written against make run's own start."""

import asyncio
import os
import re
from pathlib import Path

import pytest

from exchange.order.v1 import order_service_pb2 as opb
from tests.databases import ROOT, DatabaseFactory
from tests.e2e.conftest import local_only
from tests.e2e.make_run import GRPCURL, MakeRun
from tests.e2e.stack import Stack


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## grpcurl cookbook", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match, "README.md has no walk-through block"
    return match.group(1)


@local_only("starts `make run` itself: its own processes on the host")
async def test_the_readme_walkthrough_works_as_written(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    if not GRPCURL.exists():
        pytest.skip("grpcurl is installed by make setup")
    # make run's own start, on free ports, with its data directory in place of .data: its
    # defaults (the watermark guard on, its development chains reporting the heights).
    data = tmp_path / "data"
    run = await MakeRun.start(await databases.create(migrated=False), data)
    stack = Stack(
        run.order_addr,
        run.pool_addr,
        (run.tokens["operator"], run.tokens["client"], ""),
    )
    try:
        script = (
            walkthrough()
            .replace("localhost:50051", run.order_addr)
            .replace("localhost:50052", run.pool_addr)
            .replace('"$PWD/.venv/bin', f'"{ROOT}/.venv/bin')
            .replace(".data/", f"{data}/")
        )
        work = tmp_path / "work"
        work.mkdir()
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script + '\necho "RESULT $ORDER $WAITING $LEFT"\n',
            cwd=work,
            # As from the project directory (python3 -m scripts.dev_chain), with make run's
            # data directory.
            env={**os.environ, "PYTHONPATH": str(ROOT), "DEV_DATA_DIR": str(data)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        raw, _ = await process.communicate()
        output = raw.decode()
        assert process.returncode == 0, output

        # The plan's check at the top: the order's wallet listed AVAILABLE again.
        check = re.search(r"^order \S+ holds (\S+)\n(.*?)^real\t", output, re.M | re.S)
        assert check and f'"address": "{check.group(1)}"' in check.group(2), output
        assert "WALLET_RELEASE_RELEASED" in output
        for expected in [
            "Unauthenticated",
            "FailedPrecondition",
            "PreconditionFailure",
            "InvalidArgument",
            "BadRequest",
            "WALLET_STATE_DISABLED",
            "key rotated",
            "paid out",
            "assign_time",
            "SERVING",
        ]:
            assert expected in output, expected
        order_id, waiting_id, left_id = output.rsplit("RESULT ", 1)[1].split()
        order = (
            await stack.orders.GetOrder(
                opb.GetOrderRequest(order_id=order_id), metadata=stack.client
            )
        ).order
        waiting = (
            await stack.orders.GetOrder(
                opb.GetOrderRequest(order_id=waiting_id), metadata=stack.client
            )
        ).order
        assert order.status == opb.ORDER_STATUS_COMPLETED
        assert waiting.wallet_address == order.wallet_address != ""
        # The watch started while the order waited printed it queued, then with the address.
        watch = output.split("--- the watch:", 1)[1]
        assert watch.index("ALLOCATION_QUEUED") < watch.index(
            f'"wallet_address": "{order.wallet_address}"'
        )
        assert "ORDER_EVENT_TYPE_RELEASE_DELIVERED" in output
        # A deposit on its order and the feed; a wallet held by the watermark until the
        # watcher scanned past it; a late deposit listed, its wallet held out.
        assert "ORDER_EVENT_TYPE_DEPOSIT_RECEIVED" in output
        # A USDT order paid, dust ignored, a retraction that takes the payment back.
        for expected in [
            "PAYMENT_STATUS_PAID",
            "DEPOSIT_DISPOSITION_DUST",
            '"reverted": 1',
            "DEPOSIT_STATUS_REVERTED",
            "ORDER_EVENT_TYPE_DEPOSIT_REVERTED",
        ]:
            assert expected in output, expected
        assert '"held_by_watermark": 1' in output
        assert re.search(
            r"waits for (the next report of the ETH watcher|the ETH watcher to scan height "
            r"\d+ \(scanned \d+\))",
            output,
        )
        assert "paid 125.5 to " in output and "reported to the pool" in output
        # The USDT order paid through the chain's token Transfer, CONFIRMED at make run's 2.
        assert "paid 125.5 USDT (0xdAC17F958D2ee523a2206206994597C13D831ec7) to " in output
        assert "DEPOSIT_STATUS_CONFIRMED" in output and "PAYMENT_STATUS_UNPAID" in output
        assert "DEPOSIT_ATTRIBUTION_LATE" in output
        late = output.split("--- late deposits:", 1)[1]
        assert f'"order_id": "{left_id}"' in late and '"late": true' in output
        assert "late deposit 0x" in output
    finally:
        await stack.close()
        assert await run.stop() == 0
