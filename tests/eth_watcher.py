"""A small ETH chain watcher for the tests (not part of the product): it reads blocks of a
real chain through web3.py (in the tests, eth-tester's in-process chain) and reports each
block's ether transfers and ERC-20 Transfer logs, and the height it has scanned, to the
wallet pool through gRPC. It remembers the hashes of the blocks it reported: when the chain
no longer has one (a reorganisation), it retracts that block's deposits and reports the new
branch."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from web3 import Web3

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from shared.timestamps import to_timestamp
from tests.erc20 import ABI, TRANSFER_TOPIC


def ether(wei: int) -> str:
    """A plain decimal string of ether (never an exponent)."""
    return format(Decimal(wei) / Decimal(10**18), "f")


class EthWatcher:
    """Scans the chain from block 1 on; each `scan()` reports the blocks mined since the last
    one, with the deposits in them, and their last height as the scanned height."""

    def __init__(
        self,
        w3: Web3,
        pool: pool_grpc.WalletPoolServiceAsyncStub,
        metadata: tuple[tuple[str, str], ...],
        follow_confirmations: int = 0,
    ) -> None:
        """`follow_confirmations`: deposits are reported again, with their confirmations,
        until they have this many (0: reported once)."""
        self._w3 = w3
        self._follow = follow_confirmations
        self._pool = pool
        self._metadata = metadata
        self.scanned = 0
        # Per block reported: its hash and its deposits.
        self._blocks: dict[int, tuple[bytes, list[wpb.ChainDeposit]]] = {}
        self._decimals: dict[str, int] = {}

    def _token_deposits(
        self, tx_hash: bytes, number: int, block_time: datetime, tip: int
    ) -> list[wpb.ChainDeposit]:
        """The ERC-20 Transfer logs of a transaction, each keyed by its position in the
        receipt (never the block-relative logIndex: a reorg can move the transaction)."""
        deposits = []
        receipt = self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        for position, log in enumerate(receipt["logs"]):
            topics = log["topics"]
            if len(topics) != 3 or "0x" + bytes(topics[0]).hex() != TRANSFER_TOPIC:
                continue
            contract = str(log["address"])
            if contract not in self._decimals:
                token = self._w3.eth.contract(address=log["address"], abi=ABI)
                self._decimals[contract] = token.functions.decimals().call()
            units = int.from_bytes(bytes(log["data"]), "big")
            if units <= 0:
                continue
            deposits.append(
                wpb.ChainDeposit(
                    address=Web3.to_checksum_address(bytes(topics[2])[-20:]),
                    txid="0x" + bytes(tx_hash).hex(),
                    index=position,
                    amount=format(Decimal(units) / Decimal(10) ** self._decimals[contract], "f"),
                    block_height=number,
                    block_time=to_timestamp(block_time),
                    confirmations=tip - number + 1,
                    token_contract=contract,
                    kind=wpb.DEPOSIT_KIND_TOKEN,
                )
            )
        return deposits

    def _deposits(self, first: int, last: int) -> list[wpb.ChainDeposit]:
        """Every ether transfer in blocks first..last: a deposit of (txid, 0), as a plain
        transfer has no log (a token transfer would be keyed by its log index)."""
        deposits = []
        tip = self._w3.eth.block_number
        for number in range(first, last + 1):
            block = self._w3.eth.get_block(number, full_transactions=True)
            block_time = datetime.fromtimestamp(block["timestamp"], UTC)
            found: list[wpb.ChainDeposit] = []
            for tx in block["transactions"]:
                assert not isinstance(tx, bytes)
                found += self._token_deposits(tx["hash"], number, block_time, tip)
                if not tx["to"] or tx["value"] <= 0:
                    continue
                found.append(
                    wpb.ChainDeposit(
                        address=tx["to"],
                        txid="0x" + bytes(tx["hash"]).hex(),
                        index=0,
                        amount=ether(tx["value"]),
                        block_height=number,
                        block_time=to_timestamp(block_time),
                        confirmations=tip - number + 1,
                        kind=wpb.DEPOSIT_KIND_NATIVE,
                    )
                )
            self._blocks[number] = (bytes(block["hash"]), found)
            deposits += found
        return deposits

    def _orphaned(self, tip: int) -> tuple[int, list[wpb.Retraction]]:
        """The first block number to scan again, and the deposits of reported blocks that
        are no longer on the chain (a reorganisation), to retract."""
        first = self.scanned + 1
        retracted: list[wpb.Retraction] = []
        for number in sorted(self._blocks, reverse=True):
            known_hash, known = self._blocks[number]
            if number <= tip and bytes(self._w3.eth.get_block(number)["hash"]) == known_hash:
                break
            first = number
            del self._blocks[number]
            retracted += [
                wpb.Retraction(
                    txid=d.txid, kind=d.kind, index=d.index, reason=wpb.RETRACTION_REASON_ORPHANED
                )
                for d in known
            ]
        return first, retracted

    async def scan(self) -> wpb.ReportDepositsResponse:
        """Reports the blocks since the last scan (after a reorganisation: the new branch,
        retracting the deposits of the blocks it replaced, unless they are in it again).
        The scanned height never goes back: mine past it before scanning after a revert."""
        tip = self._w3.eth.block_number
        first, retracted = self._orphaned(tip)
        deposits = self._deposits(first, tip)
        for number in range(max(1, tip - self._follow + 1), first):
            for known in self._blocks.get(number, (b"", []))[1]:
                again_known = wpb.ChainDeposit()
                again_known.CopyFrom(known)
                again_known.confirmations = tip - number + 1
                deposits.append(again_known)
        again = {(d.txid, d.kind, d.index) for d in deposits}
        request = wpb.ReportDepositsRequest(
            network="ETH",
            deposits=deposits,
            scanned_height=max(tip, self.scanned),
            reverted=[r for r in retracted if (r.txid, r.kind, r.index) not in again],
        )
        response: wpb.ReportDepositsResponse = await self._pool.ReportDeposits(
            request, metadata=self._metadata
        )
        self.scanned = max(tip, self.scanned)
        return response
