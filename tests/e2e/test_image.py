"""The image as production runs it, checked through the engine (`make test-containers`):
non-root, read-only root file system, its health check, what it holds matching the SBOM,
the compose stack's own services healthy, and a PostgreSQL restart survived."""

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e import containers
from tests.e2e.stack import ContainerStack, Stack
from tests.e2e.test_release_flow import add_wallets, create, eth_address

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not containers.enabled(), reason="checks the image through the engine: make test-containers"
)
SERVING = health_pb2.HealthCheckResponse.SERVING


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


def image() -> str:
    return os.environ.get("E2E_IMAGE", "exchange-local/app:e2e")


def compose_service(name: str) -> str:
    return f"{os.environ.get('E2E_COMPOSE_PROJECT', 'exchange-e2e')}-{name}-1"


async def test_the_services_run_as_a_user_other_than_root_on_a_read_only_root(
    stack: ContainerStack,
) -> None:
    for service in (stack.order_process, stack.pool_process):
        assert docker("exec", service.name, "id", "-u").stdout.strip() == "10001"
        written = docker("exec", service.name, "touch", "/opt/venv/planted")
        assert written.returncode != 0
        assert "Read-only file system" in written.stderr
        # Only /tmp is writable (a tmpfs).
        assert docker("exec", service.name, "touch", "/tmp/scratch").returncode == 0
    inspected = json.loads(docker("image", "inspect", image()).stdout)[0]["Config"]
    assert inspected["User"] == "app"


async def test_the_images_health_check_reports_healthy_for_both_services(
    stack: ContainerStack,
) -> None:
    """The HEALTHCHECK the Dockerfile declares (the service's gRPC health, on its own
    address), run by the engine on demand through `docker exec` as the engine runs it."""
    config = json.loads(docker("image", "inspect", image()).stdout)[0]["Config"]
    assert config["Healthcheck"]["Test"][-3:] == ["python", "-m", "shared.healthcheck"]
    for service in (stack.order_process, stack.pool_process):
        checked = docker("exec", service.name, "python", "-m", "shared.healthcheck")
        assert (checked.returncode, checked.stdout.strip()[-7:]) == (0, "SERVING"), checked
    # Once the order service is stopped, its check fails (run in the pool's container,
    # pointed at the order service's address on the network).
    await stack.order_process.stop()
    address = f"{stack.order_process.name}:50051"
    failed = docker("exec", stack.pool_process.name, "python", "-m", "shared.healthcheck", address)
    assert failed.returncode == 1, failed


def test_the_compose_stack_is_healthy_and_published_on_loopback_only() -> None:
    for name in ("postgres", "wallet-pool", "order"):
        state = json.loads(docker("inspect", compose_service(name)).stdout)[0]
        assert state["State"]["Health"]["Status"] == "healthy", name
        assert state["HostConfig"]["ReadonlyRootfs"] == (name != "postgres"), name
        for bindings in state["HostConfig"]["PortBindings"].values():
            assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}, name


def test_what_the_image_holds_is_what_the_sbom_lists() -> None:
    sbom_path = ROOT / "build" / "sbom.cdx.json"
    if not sbom_path.exists():
        pytest.skip("make sbom writes build/sbom.cdx.json (make test-containers does)")
    sbom = json.loads(sbom_path.read_text())
    listed = {(c["name"].lower(), c["version"]) for c in sbom["components"]}
    listed.add((sbom["metadata"]["component"]["name"].lower(), ""))
    held = docker("run", "--rm", image(), "python", "-m", "pip", "list", "--format", "json")
    assert held.returncode == 0, held.stderr
    packages = {(p["name"].lower(), p["version"]) for p in json.loads(held.stdout)}
    # The base image's own installer is no dependency of the project.
    unlisted = {(n, v) for n, v in packages if n not in ("pip", "setuptools")} - listed
    project = {n for n, _ in packages} & {n for n, v in listed if v == ""}
    assert {(n, v) for n, v in unlisted if n not in project} == set()
    assert project, "the project itself is not installed in the image"
    assert listed - {(n, v) for n, v in packages} <= {(n, "") for n in project}


async def health(stack: Stack) -> list[int]:
    statuses = []
    for channel in (stack.order_channel, stack.pool_channel):
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
            statuses.append(answer.status)
        except grpc.aio.AioRpcError:
            statuses.append(-1)
    return statuses


async def test_after_postgresql_restarts_both_services_serve_again_and_keep_what_they_had(
    stack: ContainerStack, e2e_database_url: str
) -> None:
    await add_wallets(stack, "ETH", [eth_address()])
    before = await create(stack)
    await stack.restart_database()
    deadline = time.monotonic() + 30
    while await health(stack) != [SERVING, SERVING]:
        assert time.monotonic() < deadline, "the services did not reconnect"
        await asyncio.sleep(0.2)
    after = await create(stack, network="BTC")
    assert after.id != before.id
    assert stack.order_process.running() and stack.pool_process.running()
    conn = await asyncpg.connect(e2e_database_url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM orders.orders WHERE id = ANY($1::uuid[])", [before.id, after.id]
        )
    finally:
        await conn.close()
    assert stored == 2
