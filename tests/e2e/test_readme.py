"""The README's grpcurl walk-through, run as written against freshly started services."""

import asyncio
import re
from pathlib import Path

import pytest

from exchange.order.v1 import order_service_pb2 as opb
from tests.databases import ROOT, DatabaseFactory
from tests.e2e.conftest import own_stack
from tests.e2e.stack import CLIENT_TOKEN, OPERATOR_TOKEN, WATCHER_TOKEN, start_stack


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## grpcurl cookbook", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match, "README.md has no walk-through block"
    return match.group(1)


@own_stack
async def test_the_readme_walkthrough_works_as_written(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    if not (ROOT / ".venv" / "bin" / "grpcurl").exists():
        pytest.skip("grpcurl is installed by make setup")
    # The defaults of `make run`: the watermark guard on (the suite's stacks turn it off).
    stack = await start_stack(
        await databases.create(),
        tmp_path,
        environment="development",
        extra_env={"WALLET_REUSE_CONFIRMATIONS": "", "DEPOSIT_SYNC_SECONDS": "1"},
    )
    try:
        script = (
            walkthrough()
            .replace("localhost:50051", stack.order_addr)
            .replace("localhost:50052", stack.pool_addr)
            .replace('"$PWD/.venv/bin', f'"{ROOT}/.venv/bin')
        )
        for role, token in [
            ("operator", OPERATOR_TOKEN),
            ("client", CLIENT_TOKEN),
            ("watcher", WATCHER_TOKEN),
        ]:
            (tmp_path / f"{role}_token").write_text(token)
            script = script.replace(f".data/{role}_token", str(tmp_path / f"{role}_token"))
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script + '\necho "RESULT $ORDER $WAITING $LEFT"\n',
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        raw, _ = await process.communicate()
        output = raw.decode()
        assert process.returncode == 0, output

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
        assert '"held_by_watermark": 1' in output
        assert "waits for the ETH watcher to scan height 1066 (scanned 1002)" in output
        assert "DEPOSIT_ATTRIBUTION_LATE" in output
        late = output.split("--- late deposits:", 1)[1]
        assert f'"order_id": "{left_id}"' in late and '"late": true' in output
        assert "late deposit 0x" in output
    finally:
        await stack.close()
