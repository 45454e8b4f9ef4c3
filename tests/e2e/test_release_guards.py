"""End to end: a ReleaseWallet that names a wallet its order does not hold, sent with the
order service's own credential, is refused and changes nothing."""

import grpc
import pytest
from google.rpc import error_details_pb2

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
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


async def refused_release(stack: Stack, order_id: str, address: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.pool.ReleaseWallet(
            wpb.ReleaseWalletRequest(order_id=order_id, address=address), metadata=stack.service
        )
    return refused.value


def precondition_subjects(error: grpc.aio.AioRpcError) -> list[str]:
    failure = error_details_pb2.PreconditionFailure()
    [detail] = status_details(error).details
    assert detail.Unpack(failure)
    return [v.subject for v in failure.violations]


@own_stack
async def test_a_release_naming_another_orders_wallet_is_refused_and_the_queue_is_kept(
    stack: Stack,
) -> None:
    held_by_a, held_by_b = eth_address(), eth_address()
    await add_wallets(stack, "ETH", [held_by_a, held_by_b])
    a, b, c = await create(stack), await create(stack), await create(stack)
    assert (a.wallet_address, b.wallet_address, c.queue_position) == (held_by_a, held_by_b, 1)

    for order, kept in ((c, "waits in the ETH queue"), (b, f"it holds {held_by_b}")):
        refused = await refused_release(stack, order.id, held_by_a)
        assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
        details = refused.details() or ""
        assert details.startswith("address: ") and kept in details
        assert precondition_subjects(refused) == [f"order:{order.id}"]

    # B still gets its own wallet when it asks again, and C still waits first in line...
    again = await stack.pool.AllocateWallet(
        wpb.AllocateWalletRequest(order_id=b.id, network="ETH"), metadata=stack.service
    )
    assert again.address == held_by_b
    # ...so when A completes, C gets A's wallet.
    await finish(stack, a.id, opb.ORDER_STATUS_COMPLETED)
    assert (await until_shown(stack, c.id)).wallet_address == held_by_a
