"""A minimal ERC-20 for the tests, as deployable bytecode (no compiler can be downloaded here,
so it was assembled by hand from the listing below and is kept as a fixture).

It keeps balances (storage slot = the holder's address), gives its deployer 10^15 units (a
billion tokens of 6 decimals), and answers `transfer(address,uint256)` (emitting the standard
`Transfer(address indexed from, address indexed to, uint256 value)` log and returning true;
reverting on an insufficient balance), `balanceOf(address)` and `decimals()` (6).

Constructor: PUSH7 10^15, CALLER, SSTORE; CODECOPY the runtime; RETURN it. Runtime:
#   PUSH1 0x00
#   CALLDATALOAD
#   PUSH1 0xe0
#   SHR
#   DUP1
#   PUSH4 0xa9059cbb
#   EQ
#   PUSH2 @transfer
#   JUMPI
#   DUP1
#   PUSH4 0x70a08231
#   EQ
#   PUSH2 @balanceof
#   JUMPI
#   DUP1
#   PUSH4 0x313ce567
#   EQ
#   PUSH2 @decimals
#   JUMPI
#   PUSH1 0x00
#   DUP1
#   REVERT
#   transfer:
#   PUSH1 0x24
#   CALLDATALOAD
#   CALLER
#   SLOAD
#   DUP2
#   DUP2
#   LT
#   PUSH2 @fail
#   JUMPI
#   DUP2
#   SWAP1
#   SUB
#   CALLER
#   SSTORE
#   PUSH1 0x04
#   CALLDATALOAD
#   DUP1
#   SLOAD
#   DUP3
#   ADD
#   SWAP1
#   SSTORE
#   PUSH1 0x00
#   MSTORE
#   PUSH1 0x04
#   CALLDATALOAD
#   CALLER
#   PUSH32 %s
#   PUSH1 0x20
#   PUSH1 0x00
#   LOG3
#   PUSH1 0x01
#   PUSH1 0x00
#   MSTORE
#   PUSH1 0x20
#   PUSH1 0x00
#   RETURN
#   fail:
#   PUSH1 0x00
#   DUP1
#   REVERT
#   balanceof:
#   PUSH1 0x04
#   CALLDATALOAD
#   SLOAD
#   PUSH1 0x00
#   MSTORE
#   PUSH1 0x20
#   PUSH1 0x00
#   RETURN
#   decimals:
#   PUSH1 0x06
#   PUSH1 0x00
#   MSTORE
#   PUSH1 0x20
#   PUSH1 0x00
#   RETURN
"""

from eth_typing import HexStr
from web3 import Web3

BYTECODE = "0x" + (
    "66038d7ea4c680003355609a6016600039609a6000f360003560e01c8063a9059cbb1461002b5780"
    "6370a0823114610082578063313ce5671461008f57600080fd5b602435335481811061007d578190"
    "033355600435805482019055600052600435337fddf252ad1be2c89b69c2b068fc378daa952ba7f1"
    "63c4a11628f55a4df523b3ef60206000a3600160005260206000f35b600080fd5b60043554600052"
    "60206000f35b600660005260206000f3"
)
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
DECIMALS = 6
ABI = [
    {
        "type": "function",
        "name": "transfer",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "balanceOf",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "decimals",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    },
]


def deploy(w3: Web3) -> str:
    """Deploys the token from the chain's first account (which holds its supply); its
    checksummed address."""
    deployer = w3.eth.accounts[0]
    tx = w3.eth.send_transaction({"from": deployer, "data": HexStr(BYTECODE), "gas": 500_000})
    address = w3.eth.get_transaction_receipt(tx)["contractAddress"]
    assert address is not None
    return str(address)


def transfer(w3: Web3, token: str, to: str, units: int) -> str:
    """A transfer of `units` (smallest units) from the first account to `to`; its txid."""
    contract = w3.eth.contract(address=Web3.to_checksum_address(token), abi=ABI)
    tx = contract.functions.transfer(Web3.to_checksum_address(to), units).transact(
        {"from": w3.eth.accounts[0], "gas": 200_000}
    )
    return "0x" + bytes(tx).hex()
