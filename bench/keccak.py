"""Keccak-256 before and after (issue 13), measured the same way in one run.

    .venv/bin/python -m bench.keccak [--baseline REV] [--rounds N]

The baseline is `wallet_pool_service/addresses.py` as it was at REV (by default the last
commit with the pure-Python permutation), read from git into a temporary file and never kept
in the product. Both implementations get the same 1,000 checksummed ETH addresses:

1. in this process: Keccak-256 per address, and the EIP-55 check of the whole batch (what one
   AddWallets of 1,000 addresses runs on the event loop), best of N rounds;
2. as real processes: a wallet pool service each (the baseline's through
   `bench.pool_with_addresses`), a health probe on a connection of its own while AddWallets
   adds a batch; the slowest probe answer is how long the batch held the event loop.
"""

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
import types
from collections.abc import Callable
from importlib import util
from pathlib import Path

import grpc

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from scripts.processes import ServiceProcess
from tests.databases import ROOT, DatabaseFactory
from tests.e2e.stack import OPERATOR_TOKEN, bearer, service_env
from tests.e2e.test_event_loop import checksummed_eth_addresses, probe_until
from wallet_pool_service import addresses as current

BATCH = 1000
ADDRESSES_PATH = "wallet_pool_service/addresses.py"


def baseline_revision() -> str:
    """The parent of the commit that took the pure-Python permutation out."""
    removal = subprocess.run(
        ["git", "log", "-1", "--format=%H", "-S", "_keccak_f1600", "--", ADDRESSES_PATH],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not removal:
        raise SystemExit("no commit in this history took the pure-Python Keccak out")
    return f"{removal}^"


def load_baseline(revision: str, folder: Path) -> tuple[types.ModuleType, Path]:
    source = subprocess.run(
        ["git", "show", f"{revision}:{ADDRESSES_PATH}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = folder / "baseline_addresses.py"
    path.write_text(source)
    spec = util.spec_from_file_location("baseline_addresses", path)
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def best_seconds(work: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def in_process(module: types.ModuleType, batch: list[str], rounds: int) -> tuple[float, float]:
    """(µs per Keccak-256 of an address's digits, ms to check the whole batch)."""
    digits = [address[2:].lower().encode("ascii") for address in batch]

    def hash_all() -> None:
        for data in digits:
            module.keccak256(data)

    def check_all() -> None:
        for address in batch:
            assert module.address_problem("ETH", address) is None

    return (
        best_seconds(hash_all, rounds) / len(batch) * 1e6,
        best_seconds(check_all, rounds) * 1e3,
    )


async def served(
    module: str, extra_env: dict[str, str], databases: DatabaseFactory, rounds: int, log: Path
) -> list[tuple[float, float, int]]:
    """(slowest probe ms, AddWallets ms, probes) for each batch added to a fresh pool."""
    env = service_env(await databases.create(migrated=False), extra=extra_env)
    process = ServiceProcess(module, env, log)
    port = await process.start()
    address = f"127.0.0.1:{port}"
    results = []
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            pool = pool_grpc.WalletPoolServiceStub(channel)
            for _ in range(rounds):
                batch = checksummed_eth_addresses(BATCH)
                done, answering = asyncio.Event(), asyncio.Event()
                probe = asyncio.create_task(probe_until(done, address, answering))
                await answering.wait()  # the probe is answered before the batch is sent
                started = time.monotonic()
                response = await pool.AddWallets(
                    wpb.AddWalletsRequest(network="ETH", addresses=batch),
                    metadata=bearer(OPERATOR_TOKEN),
                    timeout=60,
                )
                took = time.monotonic() - started
                done.set()
                latencies = await probe
                assert len(response.added) == BATCH
                results.append((max(latencies) * 1e3, took * 1e3, len(latencies)))
    finally:
        await process.stop()
    return results


async def served_both(
    baseline_path: Path, rounds: int
) -> dict[str, list[tuple[float, float, int]]]:
    databases = DatabaseFactory()
    try:
        await databases.create_template()
        return {
            "before": await served(
                "bench.pool_with_addresses",
                {"BENCH_ADDRESSES_FILE": str(baseline_path)},
                databases,
                rounds,
                baseline_path.with_suffix(".before.log"),
            ),
            "after": await served(
                "wallet_pool_service",
                {},
                databases,
                rounds,
                baseline_path.with_suffix(".after.log"),
            ),
        }
    finally:
        await databases.drop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="git revision of the old addresses.py")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    revision = options.baseline or baseline_revision()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", revision], cwd=ROOT, check=True, capture_output=True
    )
    batch = checksummed_eth_addresses(BATCH)
    with tempfile.TemporaryDirectory() as folder:
        baseline, baseline_path = load_baseline(revision, Path(folder))
        print(f"baseline: {ADDRESSES_PATH} at {commit.stdout.decode().strip()} ({revision})")
        print(f"{BATCH} checksummed ETH addresses, best of {options.rounds} rounds, in one process")
        figures = {
            name: in_process(module, batch, options.rounds)
            for name, module in (("before", baseline), ("after", current))
        }
        for name, (per_hash, per_batch) in figures.items():
            print(
                f"  {name:6}  Keccak-256 {per_hash:8.1f} µs/address   check of the batch "
                f"{per_batch:7.1f} ms"
            )
        print(f"  Keccak-256 {figures['before'][0] / figures['after'][0]:.0f} x faster")
        runs = asyncio.run(served_both(baseline_path, options.rounds))
    print(
        f"AddWallets of {BATCH} addresses to a real pool, a health probe beside it, "
        f"{options.rounds} batches each (median, max)"
    )
    for name, results in runs.items():
        slowest = [r[0] for r in results]
        took = [r[1] for r in results]
        print(
            f"  {name:6}  slowest probe {statistics.median(slowest):6.0f} ms "
            f"(max {max(slowest):4.0f})   AddWallets {statistics.median(took):6.0f} ms "
            f"(max {max(took):4.0f})"
        )


if __name__ == "__main__":
    main()
