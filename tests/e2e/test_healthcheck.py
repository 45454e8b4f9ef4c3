"""`python -m shared.healthcheck`, the containers' health check, against a real pool service:
plaintext when the service serves plaintext, TLS when it serves TLS."""

import asyncio
import sys
from pathlib import Path

from scripts.processes import ServiceProcess
from tests.e2e.certificates import self_signed_certificate
from tests.e2e.conftest import local_only
from tests.e2e.stack import service_env

TLS_VARIABLES = ("TLS_CERT_FILE", "TLS_KEY_FILE", "HEALTHCHECK_TLS_CA_FILE")


async def healthcheck(address: str, env: dict[str, str]) -> tuple[int, str]:
    """The tool's exit code and output, run as a container runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.healthcheck",
        address,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


@local_only("runs the health check command on the host, with TLS files on the host's disk")
async def test_the_health_check_speaks_tls_to_a_service_that_serves_tls(
    e2e_database_url: str, tmp_path: Path
) -> None:
    # Named as in docker compose: the certificate does not name 127.0.0.1, where the
    # container's check connects.
    cert, key = self_signed_certificate(tmp_path, "wallet-pool")
    env = service_env(
        e2e_database_url,
        extra={
            "TLS_CERT_FILE": str(cert),
            "TLS_KEY_FILE": str(key),
            "HEALTHCHECK_TLS_SERVER_NAME": "wallet-pool",
        },
    )
    pool = ServiceProcess("wallet_pool_service", env, tmp_path / "pool.log")
    address = f"127.0.0.1:{await pool.start()}"
    try:
        # With the service's own environment, as in its container.
        assert await healthcheck(address, env) == (0, f"{address}: SERVING\n")
        # From elsewhere: the roots to trust named on their own.
        elsewhere = {
            **{k: v for k, v in env.items() if k not in TLS_VARIABLES},
            "HEALTHCHECK_TLS_CA_FILE": str(cert),
        }
        assert await healthcheck(address, elsewhere) == (0, f"{address}: SERVING\n")
        # Without the name the certificate carries, the server is not trusted.
        unnamed = {k: v for k, v in env.items() if k != "HEALTHCHECK_TLS_SERVER_NAME"}
        code, output = await healthcheck(address, unnamed)
        assert code == 1 and output.startswith(f"{address}: UNAVAILABLE"), output
        # Plaintext against TLS fails, as the tool did before it spoke TLS.
        plaintext = {k: v for k, v in env.items() if k not in TLS_VARIABLES}
        code, output = await healthcheck(address, plaintext)
        assert code == 1 and output.startswith(f"{address}: UNAVAILABLE"), output
    finally:
        await pool.stop()


@local_only("runs the health check command on the host, with TLS files on the host's disk")
async def test_the_health_check_speaks_plaintext_to_a_plaintext_service(
    e2e_database_url: str, tmp_path: Path
) -> None:
    env = service_env(e2e_database_url)
    pool = ServiceProcess("wallet_pool_service", env, tmp_path / "pool.log")
    address = f"127.0.0.1:{await pool.start()}"
    try:
        assert await healthcheck(address, env) == (0, f"{address}: SERVING\n")
    finally:
        await pool.stop()
    # Nobody serving there any more: the check fails.
    code, output = await healthcheck(address, env)
    assert code == 1, output


@local_only("runs the health check command on the host, with TLS files on the host's disk")
async def test_the_health_check_names_a_certificate_it_cannot_read(tmp_path: Path) -> None:
    env = {**service_env("postgresql://unused"), "TLS_CERT_FILE": str(tmp_path / "missing.pem")}
    code, output = await healthcheck("127.0.0.1:1", env)
    assert code == 2
    assert output.startswith("127.0.0.1:1: configuration error: TLS_CERT_FILE: cannot read")
