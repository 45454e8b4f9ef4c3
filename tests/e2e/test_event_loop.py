"""The pool keeps answering while it validates a full batch of addresses: its event loop is
not held by the checks (EIP-55 hashes every mixed-case ETH address)."""

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from tests.e2e.conftest import PROXIED_LATENCY, local_only
from tests.e2e.stack import Stack
from tests.e2e.test_release_flow import checksummed_eth_address
from wallet_pool_service.domain import MAX_ADDRESSES_PER_CALL

PROBE_LIMIT_SECONDS = 0.1


def checksummed_eth_addresses(count: int) -> list[str]:
    """Mixed-case EIP-55 addresses (an all-lower or all-upper one is not hashed)."""
    return [checksummed_eth_address() for _ in range(count)]


async def probe_until(done: asyncio.Event, address: str) -> list[float]:
    """Seconds each health check took, one after another on a connection of its own, until
    `done` is set."""
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # connected
        while not done.is_set():
            started = time.monotonic()
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.005)
    return latencies


@local_only(PROXIED_LATENCY)
async def test_health_answers_within_100_ms_while_a_full_batch_of_checksummed_eth_is_added(
    stack: Stack,
) -> None:
    batch = checksummed_eth_addresses(MAX_ADDRESSES_PER_CALL)
    done = asyncio.Event()
    probe = asyncio.create_task(probe_until(done, stack.pool_addr))
    await asyncio.sleep(0.05)  # the probe is answering before the batch is sent
    started = time.monotonic()
    try:
        response = await stack.pool.AddWallets(
            wpb.AddWalletsRequest(network="ETH", addresses=batch),
            metadata=stack.operator,
            timeout=30,
        )
    finally:
        took = time.monotonic() - started
        done.set()
    latencies = await probe

    assert len(response.added) == MAX_ADDRESSES_PER_CALL
    assert set(response.added) == {address.lower() for address in batch}
    # The probe ran throughout the call: something to measure, not a gap.
    assert len(latencies) >= 5
    slowest = max(latencies)
    assert slowest < PROBE_LIMIT_SECONDS, (
        f"a health check took {slowest * 1000:.0f} ms while AddWallets ({took * 1000:.0f} ms) "
        f"validated {len(batch)} addresses; {len(latencies)} checks"
    )
