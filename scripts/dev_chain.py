"""The development chains of `make run`: per network, a simulated chain that mines a block
every DEV_CHAIN_BLOCK_SECONDS (one a second) and reports each block, with the payments sent
to it, to the wallet pool through `ReportDeposits` with the watcher credential, exactly as a
real chain watcher reports (the pool cannot tell them apart, and its guard works unchanged).
The services never start it: production heights come from real watchers.

`make run` starts them as one process beside the services (`python -m scripts.dev_chain run`,
with WATCHER_TOKEN and DEV_DATA_DIR in its environment). Payments reach a chain through its
mempool, a directory of one JSON file per payment: `python -m scripts.dev_chain pay NETWORK
ADDRESS AMOUNT [--token CONTRACT]` drops one there and waits until the block that holds it was
reported. As a real watcher does, the chain reports each payment again in every new block, its
confirmations growing (height - its block + 1), until it has its asset's confirmations (the
pool's ListAssets; unknown contracts for a bounded number of blocks). `retract NETWORK TXID`
takes a payment off the chain: the next block reports it as a Retraction (its block orphaned).
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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from shared.addresses import address_problem
from shared.timestamps import to_timestamp

ROOT = Path(__file__).resolve().parents[1]
# A new chain starts here; a chain continues from the height it last reported (kept in its
# directory), or from the pool's, when the pool has seen more (a database kept from before).
GENESIS_HEIGHT = 1000
_REPORT_TIMEOUT_SECONDS = 5.0
# How long a payment of a contract the pool does not know (ListAssets) is reported again, and
# any payment while the pool's assets could not be read: the largest built-in confirmations.
_UNKNOWN_ASSET_BLOCKS = 64
# Payments kept for a retraction once they are no longer reported (the newest).
_KEPT_PAYMENTS = 1000
# The pool's refusal of a height below one it had, with the height it had.
_ALREADY_REPORTED = re.compile(r"height already reported \((\d+)\)")


def data_dir() -> Path:
    """`make run`'s data directory: DEV_DATA_DIR, or .data in the project."""
    return Path(os.environ.get("DEV_DATA_DIR") or ROOT / ".data")


def chain_dir(data: Path, network: str) -> Path:
    return data / "dev_chain" / network


@dataclass(frozen=True)
class Payment:
    """A payment waiting in the mempool (`path`), to be mined into the next block: to an
    address (a token's Transfer when `contract` is set), or the retraction of a txid."""

    path: Path
    address: str = ""
    amount: str = ""
    contract: str = ""
    retract: str = ""

    @classmethod
    def read(cls, path: Path) -> Payment | None:
        try:
            body = json.loads(path.read_text())
            if "retract" in body:
                return cls(path, retract=str(body["retract"]))
            contract = str(body.get("contract") or "")
            return cls(path, str(body["address"]), str(body["amount"]), contract)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


@dataclass
class Mined:
    """A payment in a block, as the chain keeps it to report it again (and to retract it)."""

    address: str
    txid: str
    amount: str
    contract: str
    block_height: int
    block_time: str
    required: int

    def deposit(self, height: int) -> wpb.ChainDeposit:
        """Its report at chain height `height`."""
        deposit = wpb.ChainDeposit(
            address=self.address,
            txid=self.txid,
            index=0,
            amount=self.amount,
            block_height=self.block_height,
            block_time=to_timestamp(datetime.fromisoformat(self.block_time)),
            confirmations=height - self.block_height + 1,
            kind=wpb.DEPOSIT_KIND_TOKEN if self.contract else wpb.DEPOSIT_KIND_NATIVE,
            token_contract=self.contract,
        )
        return deposit

    def retraction(self) -> wpb.Retraction:
        kind = wpb.DEPOSIT_KIND_TOKEN if self.contract else wpb.DEPOSIT_KIND_NATIVE
        return wpb.Retraction(
            txid=self.txid, kind=kind, index=0, reason=wpb.RETRACTION_REASON_ORPHANED
        )


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
        # The payments mined, kept across restarts: reported again until confirmed, and
        # retractable.
        self._payments_file = directory / "payments.json"
        self.payments = self._load_payments()
        # The pool's assets by contract ('' the coin): symbol and confirmations; None until read.
        self._assets: dict[str, tuple[str, int]] | None = None
        self._assets_failed = False

    def _load_payments(self) -> list[Mined]:
        try:
            return [Mined(**p) for p in json.loads(self._payments_file.read_text())]
        except (OSError, ValueError, TypeError):
            return []

    def _save_payments(self) -> None:
        self.payments = self.payments[-_KEPT_PAYMENTS:]
        staged = self._payments_file.with_suffix(".tmp")
        staged.write_text(json.dumps([asdict(p) for p in self.payments]))
        staged.replace(self._payments_file)

    async def run(self, block_seconds: float, stop: asyncio.Event) -> None:
        """A block every `block_seconds` until `stop`. The wait is counted from the end of the
        previous block, so a slow report slows the chain down and never bunches blocks up
        (a wallet the guard holds waits at least its confirmations times the block time)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), block_seconds)
            if not stop.is_set():
                await self.mine()

    async def _learn_assets(self) -> None:
        """The confirmations each asset needs, from the pool (once it answers)."""
        if self._assets is not None:
            return
        try:
            answer = await self._pool.ListAssets(
                wpb.ListAssetsRequest(network=self.network),
                metadata=self._metadata,
                timeout=_REPORT_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            if not self._assets_failed:
                self._assets_failed = True
                self.log(
                    f"ListAssets failed ({exc.code().name}): payments are reported "
                    f"{_UNKNOWN_ASSET_BLOCKS} blocks deep until it answers"
                )
            return
        self._assets = {a.contract.lower(): (a.symbol, a.confirmations) for a in answer.assets}

    def _asset(self, contract: str) -> tuple[str, int]:
        """The symbol and the confirmations after which a payment is no longer reported."""
        fallback = (contract or self.network, _UNKNOWN_ASSET_BLOCKS)
        return (self._assets or {}).get(contract.lower(), fallback)

    async def mine(self) -> None:
        """Mine the next block with the payments and retractions in the mempool and report
        it, with every payment not yet at its confirmations again; the height moves only once
        the pool acknowledged the report (a refused entry is dropped, its receipt saying why)."""
        entries = [
            p for p in map(Payment.read, sorted(self._mempool.glob("*.json"))) if p is not None
        ]
        await self._learn_assets()
        height = self.height + 1
        now = datetime.now(UTC).isoformat()
        known = {m.txid: m for m in self.payments}
        retracts = []
        for entry in (e for e in entries if e.retract):
            if entry.retract in known:
                retracts.append(entry)
            else:
                error = f"no payment {entry.retract} on the {self.network} chain"
                self._receipt(entry, {"error": error, "by": "chain"})
        payments = [e for e in entries if not e.retract]
        new = [
            Mined(
                p.address,
                _txid(self.network),
                p.amount,
                p.contract,
                height,
                now,
                self._asset(p.contract)[1],
            )
            for p in payments
        ]
        gone = {e.retract for e in retracts}
        again = [
            m
            for m in self.payments
            if m.txid not in gone and height - m.block_height + 1 <= m.required
        ]
        request = wpb.ReportDepositsRequest(
            network=self.network,
            deposits=[m.deposit(height) for m in new + again],
            scanned_height=height,
            chain_height=height,
            reverted=[known[e.retract].retraction() for e in retracts],
        )
        try:
            answer = await self._pool.ReportDeposits(
                request, metadata=self._metadata, timeout=_REPORT_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            self._refused(exc, payments, again, retracts)
            return
        self._acknowledged(height, gone, list(zip(payments, new, strict=True)))
        said = MessageToDict(answer, preserving_proto_field_name=True)
        for entry in retracts:
            self._receipt(entry, {"height": height, "txid": entry.retract, "answer": said})
            self.log(f"block {height}: {entry.retract} retracted (its block orphaned)")

    def _acknowledged(
        self, height: int, gone: set[str], mined: list[tuple[Payment, Mined]]
    ) -> None:
        """The pool has the block: the chain is at its height, its payments kept to be
        reported again (the retracted ones no longer), and each payer told."""
        self.height = height
        (self._dir / "height").write_text(str(height))
        kept = [m for m in self.payments if m.txid not in gone]
        self.payments = kept + [m for _, m in mined]
        self._save_payments()
        for payment, block in mined:
            symbol, required = self._asset(payment.contract)
            self._receipt(
                payment,
                {"height": height, "txid": block.txid, "symbol": symbol, "required": required},
            )
            self.log(
                f"block {height}: {payment.amount} {symbol} to {payment.address} ({block.txid})"
            )

    def _refused(
        self,
        exc: grpc.aio.AioRpcError,
        payments: list[Payment],
        again: list[Mined],
        retracts: list[Payment],
    ) -> None:
        details = exc.details() or ""
        behind = _ALREADY_REPORTED.search(details)
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and behind:
            # The pool's database has seen this network further on (it outlived our
            # directory): the chain continues from there.
            self.height = int(behind.group(1))
            self.log(f"the pool has scanned up to {self.height}; continuing from there")
            return
        field = re.match(r"(deposits|reverted)\[(\d+)\]", details)
        refusing = exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS)
        if refusing and field and field.group(1) == "deposits":
            # An entry the pool refuses would block every later block: drop it, say why.
            at = int(field.group(2))
            if at >= len(payments):
                dropped = again[at - len(payments)]
                self.payments = [m for m in self.payments if m.txid != dropped.txid]
                self._save_payments()
                self.log(f"payment {dropped.txid} no longer reported: {details}")
                return
            refused = payments[at]
        elif refusing and (payments or retracts):
            at = int(field.group(2)) if field else 0
            refused = retracts[at] if field else (payments or retracts)[0]
        else:
            self.log(f"report of block {self.height + 1} failed ({exc.code().name}): {details}")
            return
        self._receipt(refused, {"error": details})
        self.log(f"{refused.retract or refused.amount} to {refused.address} refused: {details}")

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


def _submit(network: str, body: dict[str, str], wait_seconds: float) -> dict[str, Any] | None:
    """Drop an entry into the network's mempool and wait for its receipt (None: printed why)."""
    directory = chain_dir(data_dir(), network)
    if not (directory / "mempool").is_dir():
        print(f"no development chain for {network} under {directory}: is make run up?")
        return None
    name = f"{time.time_ns()}-{secrets.token_hex(4)}.json"
    staged = directory / "mempool" / (name + ".tmp")
    staged.write_text(json.dumps(body))
    staged.replace(directory / "mempool" / name)
    receipt_path = directory / "mined" / name
    deadline = time.monotonic() + wait_seconds
    while not receipt_path.exists():
        if time.monotonic() > deadline:
            print(f"not mined within {wait_seconds:.0f} s: is make run's {network} chain running?")
            return None
        time.sleep(0.1)
    receipt: dict[str, Any] = json.loads(receipt_path.read_text())
    receipt_path.unlink()
    if "error" in receipt:
        by = "the chain" if receipt.get("by") == "chain" else "the pool"
        print(f"refused by {by}: {receipt['error']}", file=sys.stderr)
        return None
    return receipt


def pay(
    network: str, address: str, amount: str, contract: str = "", wait_seconds: float = 15.0
) -> int:
    """Send a payment (of a token when `contract` is set) to the network's development chain
    and wait for its block's report."""
    for field, value in (("address", address), ("token", contract)):
        problem = address_problem(network, value) if value else None
        if problem:
            print(
                f"{field}: {value!r} is not a valid {network} address: {problem}", file=sys.stderr
            )
            return 2
    body = {"address": address, "amount": amount, "contract": contract}
    receipt = _submit(network, body, wait_seconds)
    if receipt is None:
        return 1
    what = f"{amount} {receipt['symbol']} ({contract})" if contract else amount
    required = int(receipt["required"])
    print(
        f"paid {what} to {address}: {network} block {receipt['height']}, "
        f"txid {receipt['txid']}, reported to the pool with 1 confirmation of {required} "
        f"({'CONFIRMING' if required > 1 else 'CONFIRMED'}; reported again each block up "
        f"to {required})"
    )
    return 0


def retract(network: str, txid: str, wait_seconds: float = 15.0) -> int:
    """Take a payment off the network's development chain: its next block reports it as a
    Retraction (its block orphaned)."""
    receipt = _submit(network, {"retract": txid}, wait_seconds)
    if receipt is None:
        return 1
    print(
        f"retracted {txid}: {network} block {receipt['height']} reported it orphaned; "
        f"the pool answered {json.dumps(receipt['answer'])}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.dev_chain", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    paying = commands.add_parser("pay", help="pay to an address on a development chain")
    paying.add_argument("network", type=str.upper)
    paying.add_argument("address")
    paying.add_argument("amount")
    paying.add_argument("--token", default="", metavar="CONTRACT", help="a token's Transfer")
    retracting = commands.add_parser("retract", help="take a payment off the chain (a reorg)")
    retracting.add_argument("network", type=str.upper)
    retracting.add_argument("txid")
    running = commands.add_parser("run", help="run the chains (make run does)")
    running.add_argument("--pool", required=True, help="the wallet pool's host:port")
    running.add_argument("--networks", required=True, type=lambda v: v.upper().split(","))
    running.add_argument("--block-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.command == "run":
        asyncio.run(run_chains(args.pool, args.networks, args.block_seconds))
        return 0
    if args.command == "retract":
        return retract(args.network, args.txid)
    return pay(args.network, args.address, args.amount, args.token)


if __name__ == "__main__":
    raise SystemExit(main())
