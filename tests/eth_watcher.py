"""A small ETH chain watcher for the tests (not part of the product): it reads blocks of a
real chain through web3.py (in the tests, eth-tester's in-process chain) and reports each
block's ether transfers, and the height it has scanned, to the wallet pool through gRPC."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from web3 import Web3

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from shared.timestamps import to_timestamp


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
    ) -> None:
        self._w3 = w3
        self._pool = pool
        self._metadata = metadata
        self.scanned = 0

    def _deposits(self, first: int, last: int) -> list[wpb.ChainDeposit]:
        """Every ether transfer in blocks first..last: a deposit of (txid, 0), as a plain
        transfer has no log (a token transfer would be keyed by its log index)."""
        deposits = []
        tip = self._w3.eth.block_number
        for number in range(first, last + 1):
            block = self._w3.eth.get_block(number, full_transactions=True)
            block_time = datetime.fromtimestamp(block["timestamp"], UTC)
            for tx in block["transactions"]:
                assert not isinstance(tx, bytes)
                if not tx["to"] or tx["value"] <= 0:
                    continue
                deposits.append(
                    wpb.ChainDeposit(
                        address=tx["to"],
                        txid="0x" + bytes(tx["hash"]).hex(),
                        index=0,
                        amount=ether(tx["value"]),
                        block_height=number,
                        block_time=to_timestamp(block_time),
                        confirmations=tip - number + 1,
                    )
                )
        return deposits

    async def scan(self) -> wpb.ReportDepositsResponse:
        tip = self._w3.eth.block_number
        request = wpb.ReportDepositsRequest(
            network="ETH",
            deposits=self._deposits(self.scanned + 1, tip),
            scanned_height=tip,
        )
        response: wpb.ReportDepositsResponse = await self._pool.ReportDeposits(
            request, metadata=self._metadata
        )
        self.scanned = tip
        return response
