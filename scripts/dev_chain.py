"""The development chains of `make run`: per network, a simulated chain that mines a block
every DEV_CHAIN_BLOCK_SECONDS (one a second) and reports each block, with the payments sent
to it, to the wallet pool through `ReportDeposits` with the watcher credential, exactly as a
real chain watcher reports (the pool cannot tell them apart, and its guard works unchanged).
The services never start it: production heights come from real watchers.

`make run` starts them as one process beside the services (`python -m scripts.dev_chain run`,
with WATCHER_TOKEN and DEV_DATA_DIR in its environment). Payments reach a chain through its
mempool, a directory of one JSON file per payment: `python -m scripts.dev_chain pay NETWORK
ADDRESS AMOUNT` drops one there and waits until the block that holds it was reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from shared.timestamps import to_timestamp
from wallet_pool_service.addresses import address_problem

ROOT = Path(__file__).resolve().parents[1]
# A new chain starts here; a chain continues from the height it last reported (kept in its
# directory), or from the pool's, when the pool has seen more (a database kept from before).
GENESIS_HEIGHT = 1000
_REPORT_TIMEOUT_SECONDS = 5.0
# The pool's refusal of a height below one it had, with the height it had.
_ALREADY_REPORTED = re.compile(r"height already reported \((\d+)\)")


def data_dir() -> Path:
    """`make run`'s data directory: DEV_DATA_DIR, or .data in the project."""
    return Path(os.environ.get("DEV_DATA_DIR") or ROOT / ".data")


def chain_dir(data: Path, network: str) -> Path:
    return data / "dev_chain" / network


@dataclass(frozen=True)
class Payment:
    """A payment waiting in the mempool (`path`), to be mined into the next block."""

    path: Path
    address: str
    amount: str

    @classmethod
    def read(cls, path: Path) -> Payment | None:
        try:
            body = json.loads(path.read_text())
            return cls(path, str(body["address"]), str(body["amount"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _txid(network: str) -> str:
    """A transaction id as the network spells them (ETH with 0x)."""
    digits = secrets.token_hex(32)
    return "0x" + digits if network == "ETH" else digits


class DevChain:
    """One network's simulated chain and its watcher."""

    def __init__(
        self,
        network: str,
        pool: pool_grpc.WalletPoolServiceAsyncStub,
        watcher_token: str,
        directory: Path,
        log: Path,
    ) -> None:
        self.network = network
        self._pool = pool
        self._metadata = (("authorization", f"Bearer {watcher_token}"),)
        self._dir = directory
        self._mempool = directory / "mempool"
        self._mined = directory / "mined"
        self._log = log
        for folder in (self._mempool, self._mined):
            folder.mkdir(parents=True, exist_ok=True)
        height_file = directory / "height"
        self.height = int(height_file.read_text()) if height_file.exists() else GENESIS_HEIGHT

    async def run(self, block_seconds: float, stop: asyncio.Event) -> None:
        """A block every `block_seconds` until `stop`. The wait is counted from the end of the
        previous block, so a slow report slows the chain down and never bunches blocks up
        (a wallet the guard holds waits at least its confirmations times the block time)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), block_seconds)
            if not stop.is_set():
                await self.mine()

    async def mine(self) -> None:
        """Mine the next block with the payments in the mempool and report it; the height
        moves only once the pool acknowledged the report (a refused payment is dropped,
        with its receipt saying why)."""
        payments = [
            p for p in map(Payment.read, sorted(self._mempool.glob("*.json"))) if p is not None
        ]
        height = self.height + 1
        now = to_timestamp(datetime.now(UTC))
        deposits = [
            wpb.ChainDeposit(
                address=p.address,
                txid=_txid(self.network),
                index=0,
                amount=p.amount,
                block_height=height,
                block_time=now,
                confirmations=1,
            )
            for p in payments
        ]
        request = wpb.ReportDepositsRequest(
            network=self.network, deposits=deposits, scanned_height=height, chain_height=height
        )
        try:
            await self._pool.ReportDeposits(
                request, metadata=self._metadata, timeout=_REPORT_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            self._refused(exc, payments)
            return
        self.height = height
        (self._dir / "height").write_text(str(height))
        for payment, deposit in zip(payments, deposits, strict=True):
            self._receipt(payment, {"height": height, "txid": deposit.txid})
            self.log(f"block {height}: {payment.amount} to {payment.address} ({deposit.txid})")

    def _refused(self, exc: grpc.aio.AioRpcError, payments: list[Payment]) -> None:
        details = exc.details() or ""
        behind = _ALREADY_REPORTED.search(details)
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and behind:
            # The pool's database has seen this network further on (it outlived our
            # directory): the chain continues from there.
            self.height = int(behind.group(1))
            self.log(f"the pool has scanned up to {self.height}; continuing from there")
            return
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and payments:
            # A payment the pool refuses would block every later block: drop it, say why.
            field = re.match(r"deposits\[(\d+)\]", details)
            refused = payments[int(field.group(1))] if field else payments[0]
            self._receipt(refused, {"error": details})
            self.log(f"payment of {refused.amount} to {refused.address} refused: {details}")
            return
        self.log(f"report of block {self.height + 1} failed ({exc.code().name}): {details}")

    def _receipt(self, payment: Payment, receipt: dict[str, object]) -> None:
        target = self._mined / payment.path.name
        target.with_suffix(".tmp").write_text(json.dumps(receipt))
        target.with_suffix(".tmp").replace(target)
        payment.path.unlink(missing_ok=True)

    def log(self, message: str) -> None:
        with self._log.open("a") as log:
            log.write(f"{datetime.now(UTC).isoformat()} {self.network} {message}\n")


async def run_chains(pool_addr: str, networks: list[str], block_seconds: float) -> None:
    """Every network's chain against the pool at `pool_addr`, until SIGINT or SIGTERM."""
    data = data_dir()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with grpc.aio.insecure_channel(pool_addr) as channel:
        pool = pool_grpc.WalletPoolServiceStub(channel)
        chains = [
            DevChain(
                n,
                pool,
                os.environ["WATCHER_TOKEN"],
                chain_dir(data, n),
                data / "logs" / "dev_chain.log",
            )
            for n in networks
        ]
        await asyncio.gather(*(chain.run(block_seconds, stop) for chain in chains))


def pay(network: str, address: str, amount: str, wait_seconds: float = 15.0) -> int:
    """Send a payment to the network's development chain and wait for its block's report."""
    problem = address_problem(network, address)
    if problem:
        print(f"address: {address!r} is not a valid {network} address: {problem}", file=sys.stderr)
        return 2
    directory = chain_dir(data_dir(), network)
    if not (directory / "mempool").is_dir():
        print(f"no development chain for {network} under {directory}: is make run up?")
        return 1
    name = f"{time.time_ns()}-{secrets.token_hex(4)}.json"
    staged = directory / "mempool" / (name + ".tmp")
    staged.write_text(json.dumps({"address": address, "amount": amount}))
    staged.replace(directory / "mempool" / name)
    receipt_path = directory / "mined" / name
    deadline = time.monotonic() + wait_seconds
    while not receipt_path.exists():
        if time.monotonic() > deadline:
            print(f"not mined within {wait_seconds:.0f} s: is make run's {network} chain running?")
            return 1
        time.sleep(0.1)
    receipt = json.loads(receipt_path.read_text())
    receipt_path.unlink()
    if "error" in receipt:
        print(f"refused by the pool: {receipt['error']}", file=sys.stderr)
        return 1
    print(
        f"paid {amount} to {address}: {network} block {receipt['height']}, "
        f"txid {receipt['txid']}, reported to the pool"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.dev_chain", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    paying = commands.add_parser("pay", help="pay to an address on a development chain")
    paying.add_argument("network", type=str.upper)
    paying.add_argument("address")
    paying.add_argument("amount")
    running = commands.add_parser("run", help="run the chains (make run does)")
    running.add_argument("--pool", required=True, help="the wallet pool's host:port")
    running.add_argument("--networks", required=True, type=lambda v: v.upper().split(","))
    running.add_argument("--block-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.command == "run":
        asyncio.run(run_chains(args.pool, args.networks, args.block_seconds))
        return 0
    return pay(args.network, args.address, args.amount)


if __name__ == "__main__":
    raise SystemExit(main())
