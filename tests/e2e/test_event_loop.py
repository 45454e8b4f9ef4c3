"""The pool keeps answering health checks, SERVING, while it validates a full batch of
addresses (EIP-55 hashes every mixed-case ETH address), and adds the batch as sent. How long
the batch holds the event loop is a speed claim, measured by `python -m bench.keccak` (the
slowest probe answer beside AddWallets), not asserted here."""

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from tests.e2e.stack import Stack
from tests.e2e.test_release_flow import checksummed_eth_address
from wallet_pool_service.domain import MAX_ADDRESSES_PER_CALL


def checksummed_eth_addresses(count: int) -> list[str]:
    """Mixed-case EIP-55 addresses (an all-lower or all-upper one is not hashed)."""
    return [checksummed_eth_address() for _ in range(count)]


async def probe_until(
    done: asyncio.Event, address: str, answering: asyncio.Event | None = None
) -> list[float]:
    """Seconds each health check took, one after another on a connection of its own, until
    `done` is set; each must answer SERVING. `answering` is set once the first one has."""
    latencies: list[float] = []
    serving = health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        first = await health.Check(health_pb2.HealthCheckRequest(), timeout=30)  # connected
        assert first.status == serving
        if answering is not None:
            answering.set()
        while not done.is_set():
            started = time.monotonic()
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
            latencies.append(time.monotonic() - started)
            assert answer.status == serving
            await asyncio.sleep(0.005)
    return latencies


async def test_health_keeps_answering_serving_while_a_full_batch_of_checksummed_eth_is_added(
    stack: Stack,
) -> None:
    batch = checksummed_eth_addresses(MAX_ADDRESSES_PER_CALL)
    done, answering = asyncio.Event(), asyncio.Event()
    probe = asyncio.create_task(probe_until(done, stack.pool_addr, answering))
    await answering.wait()  # the probe is answered before the batch is sent
    try:
        response = await stack.pool.AddWallets(
            wpb.AddWalletsRequest(network="ETH", addresses=batch),
            metadata=stack.operator,
            timeout=60,
        )
    finally:
        done.set()
    latencies = await probe

    assert len(response.added) == MAX_ADDRESSES_PER_CALL
    assert set(response.added) == {address.lower() for address in batch}
    # A check was under way while the batch was (every one answered SERVING, or raised).
    assert latencies
