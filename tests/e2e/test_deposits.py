"""End to end: a chain watcher's deposit reports through the pool's gRPC API, the deposits
on the order service's GetOrder and event feed, late deposits, and the watermark guard."""

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from shared.timestamps import to_timestamp
from tests.e2e.conftest import own_stack
from tests.e2e.stack import Stack
from tests.e2e.test_release_flow import (
    add_wallets,
    create,
    eth_address,
    finish,
    status_details,
    until_shown,
)
from tests.waiting import HANG_GUARD_SECONDS

GUARDED = pytest.mark.stack_env(WALLET_REUSE_CONFIRMATIONS="ETH:3")


def chain_deposit(
    address: str,
    *,
    txid: str | None = None,
    amount: str = "0.25",
    height: int = 10,
    time: datetime | None = None,
) -> wpb.ChainDeposit:
    return wpb.ChainDeposit(
        address=address,
        txid=txid or "0x" + secrets.token_hex(32),
        index=0,
        amount=amount,
        block_height=height,
        block_time=to_timestamp(time or datetime.now(UTC)),
        confirmations=1,
    )


async def report(
    stack: Stack, scanned: int, *deposits: wpb.ChainDeposit, network: str = "ETH"
) -> wpb.ReportDepositsResponse:
    response: wpb.ReportDepositsResponse = await stack.pool.ReportDeposits(
        wpb.ReportDepositsRequest(network=network, deposits=deposits, scanned_height=scanned),
        metadata=stack.watcher,
    )
    return response


async def eventually(
    check: Callable[[], Awaitable[Any]], within: float = HANG_GUARD_SECONDS
) -> Any:
    """`check`'s first truthy result, polled until `within` seconds (a hang guard) have
    passed."""
    deadline = time.monotonic() + within
    while not (result := await check()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return result


async def eth_stats(stack: Stack) -> wpb.NetworkStats:
    response = await stack.pool.GetPoolStats(
        wpb.GetPoolStatsRequest(network="ETH"), metadata=stack.operator
    )
    [stats] = response.networks
    return stats


async def still_queued(stack: Stack, order_id: str) -> None:
    """The waiting order got no wallet from the last report. A report serves the queue
    before it answers, so the pool's own state, read now, settles it; no wait."""
    stats = await eth_stats(stack)
    assert (stats.queued, stats.available) == (1, 0), stats
    shown = await order_with_deposits(stack, order_id)
    assert (shown.order.wallet_address, shown.order.queue_position) == ("", 1)


async def order_with_deposits(stack: Stack, order_id: str) -> opb.GetOrderResponse:
    response: opb.GetOrderResponse = await stack.orders.GetOrder(
        opb.GetOrderRequest(order_id=order_id), metadata=stack.client
    )
    return response


@own_stack
@GUARDED
async def test_a_reported_deposit_appears_on_its_order_and_on_the_event_feed(
    stack: Stack,
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    order = await create(stack)
    paid = chain_deposit(address, amount="0.125", height=7)

    first = await report(stack, 8, paid)
    again = await report(stack, 9, paid)

    assert (first.recorded, first.repeated, first.late, again.recorded, again.repeated) == (
        1,
        0,
        0,
        0,
        1,
    )
    shown = await eventually(lambda: _deposits_of(stack, order.id))
    [deposit] = shown
    assert (deposit.txid, deposit.amount, deposit.block_height, deposit.late) == (
        paid.txid,
        "0.125",
        7,
        False,
    )
    events = await stack.orders.ListOrderEvents(
        opb.ListOrderEventsRequest(
            order_id=order.id, types=[opb.ORDER_EVENT_TYPE_DEPOSIT_RECEIVED]
        ),
        metadata=stack.operator,
    )
    [event] = events.events
    assert event.deposit.txid == paid.txid and event.wallet_address == address
    assert event.status == opb.ORDER_STATUS_PENDING


async def _deposits_of(stack: Stack, order_id: str) -> list[opb.OrderDeposit]:
    return list((await order_with_deposits(stack, order_id)).deposits)


@own_stack
@GUARDED
async def test_a_released_wallet_waits_for_the_watcher_to_scan_past_its_release(
    stack: Stack,
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    # The watcher is silent: a released wallet is not reused, and stats say why.
    first, waiting = await create(stack), await create(stack)
    await finish(stack, first.id, opb.ORDER_STATUS_COMPLETED)
    stats = await eth_stats(stack)
    assert (stats.reuse_guard, stats.reuse_confirmations, stats.held_by_watermark) == (True, 3, 1)
    assert "never reported" in stats.held_reason
    assert not stats.HasField("watcher_report_time")

    await report(stack, 100)
    listed = await stack.pool.ListWallets(
        wpb.ListWalletsRequest(network="ETH", state=wpb.WALLET_STATE_COOLING),
        metadata=stack.operator,
    )
    [cooling] = listed.wallets
    assert (cooling.address, cooling.release_height, cooling.reuse_height) == (address, 100, 103)
    assert cooling.cooling_reason == "waits for the ETH watcher to scan height 103 (scanned 100)"
    await report(stack, 102)
    await still_queued(stack, waiting.id)
    assert (await eth_stats(stack)).held_by_watermark == 1

    await report(stack, 103)
    assert (await until_shown(stack, waiting.id)).wallet_address == address
    assert (await eth_stats(stack)).held_by_watermark == 0


@own_stack
@GUARDED
async def test_a_late_deposit_is_listed_shown_on_its_order_and_keeps_the_wallet_out_until_enabled(
    stack: Stack,
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    await report(stack, 50)
    paid, waiting = await create(stack), await create(stack)
    await finish(stack, paid.id, opb.ORDER_STATUS_COMPLETED)
    released = datetime.now(UTC)

    late = chain_deposit(address, height=52, time=released + timedelta(seconds=2), amount="3")
    outcome = await report(stack, 60, late)

    assert (outcome.recorded, outcome.late) == (1, 1)
    listed = await stack.pool.ListLateDeposits(
        wpb.ListLateDepositsRequest(network="ETH"), metadata=stack.operator
    )
    [entry] = listed.deposits
    assert (entry.order_id, entry.amount, entry.attribution) == (
        paid.id,
        "3",
        wpb.DEPOSIT_ATTRIBUTION_LATE,
    )
    assert entry.late_by.ToTimedelta() > timedelta(seconds=1)
    [shown] = await eventually(lambda: _deposits_of(stack, paid.id))
    assert shown.late and shown.txid == late.txid
    # The watermark passed (the release counts from 60, the first report after it: 63 >= 60 +
    # 3), yet the wallet is held out, with the reason.
    await report(stack, 63)
    await still_queued(stack, waiting.id)
    disabled = await stack.pool.ListWallets(
        wpb.ListWalletsRequest(network="ETH", state=wpb.WALLET_STATE_DISABLED),
        metadata=stack.operator,
    )
    [wallet] = disabled.wallets
    assert wallet.disabled_reason.startswith(f"late deposit {late.txid}:0 of 3, ")
    assert paid.id in wallet.disabled_reason

    await stack.pool.EnableWallet(wpb.EnableWalletRequest(address=address), metadata=stack.operator)
    assert (await until_shown(stack, waiting.id)).wallet_address == address


@own_stack
async def test_a_deposit_to_an_address_not_in_the_pool_is_kept_unattributed(stack: Stack) -> None:
    stranger = chain_deposit(eth_address())
    outcome = await report(stack, 15, stranger)
    assert (outcome.recorded, outcome.unattributed) == (1, 1)
    listed = await stack.pool.ListDeposits(wpb.ListDepositsRequest(), metadata=stack.operator)
    [kept] = listed.deposits
    assert (kept.txid, kept.order_id, kept.attribution) == (
        stranger.txid,
        "",
        wpb.DEPOSIT_ATTRIBUTION_UNATTRIBUTED,
    )


def bad_request_field(error: grpc.aio.AioRpcError) -> str:
    bad = error_details_pb2.BadRequest()
    [detail] = status_details(error).details
    assert detail.Unpack(bad)
    [violation] = bad.field_violations
    field: str = violation.field
    return field


@own_stack
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": "-1"}, "deposits[0].amount"),
        ({"amount": "abc"}, "deposits[0].amount"),
        ({"amount": "0"}, "deposits[0].amount"),
        ({"amount": ""}, "deposits[0].amount"),
        ({"address": "0xnothex"}, "deposits[0].address"),
        ({"txid": ""}, "deposits[0].txid"),
        ({"block_height": 11}, "deposits[0].block_height"),
    ],
)
async def test_a_malformed_report_is_invalid_argument_naming_the_field_and_records_nothing(
    stack: Stack, change: dict[str, Any], field: str
) -> None:
    deposit = chain_deposit(eth_address())
    for name, value in change.items():
        setattr(deposit, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await report(stack, 10, deposit)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(f"{field}: ")
    assert bad_request_field(refused.value) == field
    listed = await stack.pool.ListDeposits(wpb.ListDepositsRequest(), metadata=stack.operator)
    assert list(listed.deposits) == []
    assert (await eth_stats(stack)).scanned_height == 0


@own_stack
async def test_a_height_going_back_and_a_txid_with_another_amount_are_refused_keeping_the_first(
    stack: Stack,
) -> None:
    address = eth_address()
    first = chain_deposit(address, txid="0xfeed", amount="1.5", height=20)
    await report(stack, 30, first)

    with pytest.raises(grpc.aio.AioRpcError) as backwards:
        await report(stack, 29)
    assert backwards.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (backwards.value.details() or "").startswith(
        "scanned_height: 29 is below the ETH height already reported (30)"
    )

    changed = chain_deposit(address, txid="0xfeed", amount="2.5", height=20)
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await report(stack, 31, chain_deposit(address, height=31), changed)
    assert conflict.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert (conflict.value.details() or "").startswith(
        "deposits[1]: ETH deposit 0xfeed:0 was recorded before as 1.5 to"
    )
    listed = await stack.pool.ListDeposits(wpb.ListDepositsRequest(), metadata=stack.operator)
    assert [(d.txid, d.amount) for d in listed.deposits] == [("0xfeed", "1.5")]
    assert (await eth_stats(stack)).scanned_height == 30


@own_stack
async def test_only_a_watcher_reports_deposits_and_only_operators_list_late_ones(
    stack: Stack,
) -> None:
    request = wpb.ReportDepositsRequest(network="ETH", scanned_height=1)
    for metadata in (stack.operator, stack.service, stack.client):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stack.pool.ReportDeposits(request, metadata=metadata)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.pool.ReportDeposits(request)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    for metadata in (stack.watcher, stack.service, stack.client):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stack.pool.ListLateDeposits(wpb.ListLateDepositsRequest(), metadata=metadata)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert (await eth_stats(stack)).scanned_height == 0
