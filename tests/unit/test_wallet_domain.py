from dataclasses import replace

import pytest

from shared.addresses import address_problem, base58check_encode
from shared.errors import InvalidArgument
from shared.networks import KNOWN_NETWORKS
from wallet_pool_service.domain import (
    Allocation,
    HeldWallet,
    NetworkMismatch,
    OrderAlreadyReleased,
    OrderPlace,
    check_address_field,
    check_addresses,
    demo_addresses,
    existing_allocation,
    split_repeats,
)

VALID = {
    # Bitcoin's genesis block address (P2PKH) and a well-known P2SH address.
    "BTC": [
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
        "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
        # BIP-173's P2WPKH and BIP-350's P2TR test vectors.
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
    ],
    "ETH": [
        "0x52908400098527886E0F7030069857D2E4169EE7",
        "0xde709f2102306220921060314715629080e2fb77",
    ],
    # The USDT contract address on TRON.
    "TRON": ["TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"],
}
INVALID = {
    "BTC": [
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb",
        "0x52908400098527886E0F7030069857D2E4169EE7",
        "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
        "bc1",
        "hello",
    ],
    "ETH": [
        "52908400098527886E0F7030069857D2E4169EE7",
        "0x1234",
        "0xZZ908400098527886E0F7030069857D2E4169EE7",
    ],
    "TRON": ["1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u"],
}


@pytest.mark.parametrize(("network", "address"), [(n, a) for n, xs in VALID.items() for a in xs])
def test_published_addresses_are_accepted(network: str, address: str) -> None:
    assert address_problem(network, address) is None


@pytest.mark.parametrize(("network", "address"), [(n, a) for n, xs in INVALID.items() for a in xs])
def test_malformed_or_foreign_addresses_are_refused(network: str, address: str) -> None:
    assert address_problem(network, address) is not None


def test_check_addresses_names_the_bad_entry_and_limits_the_batch() -> None:
    with pytest.raises(InvalidArgument, match=r"^addresses\[1\]: "):
        check_addresses("ETH", [VALID["ETH"][0], "0xnope"])
    with pytest.raises(InvalidArgument, match=r"^addresses: "):
        check_addresses("ETH", [])
    with pytest.raises(InvalidArgument, match=r"^addresses: "):
        check_addresses("ETH", demo_addresses("ETH", 1001))


def test_segwit_and_eth_addresses_are_stored_and_looked_up_in_lower_case() -> None:
    upper = "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4"
    assert check_addresses("BTC", [upper]) == [upper.lower()]
    assert check_address_field(upper) == upper.lower()
    # A checksummed and a plain spelling of one ETH account are one wallet.
    eth = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    assert check_addresses("ETH", [eth, eth.lower()]) == [eth.lower(), eth.lower()]
    assert check_address_field(eth) == eth.lower()
    # Base58Check is case-sensitive: kept as given.
    tron = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
    assert check_addresses("TRON", [tron]) == [tron]
    assert check_address_field(tron) == tron


def test_a_lookup_address_that_no_network_takes_is_refused_with_each_reason() -> None:
    checksummed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    wrong_checksum = checksummed[:-1] + "D"
    with pytest.raises(InvalidArgument) as raised:
        check_address_field(wrong_checksum)
    assert raised.value.field == "address"
    assert "ETH: mixed case that does not match the EIP-55 checksum" in raised.value.problem
    # Whatever AddWallets refuses on every network, lookups refuse too.
    for address in INVALID["BTC"][:1] + INVALID["TRON"][1:] + ["hello"]:
        with pytest.raises(InvalidArgument, match=r"^address: .* is not a valid address"):
            check_address_field(address)
    # A spelling some network takes is looked up as stored; an optional one may be empty.
    assert check_address_field(checksummed) == checksummed.lower()
    assert all(check_address_field(a) for addresses in VALID.values() for a in addresses)
    assert check_address_field("", required=False) == ""


def test_demo_addresses_are_valid_and_distinct() -> None:
    for network in KNOWN_NETWORKS:
        addresses = demo_addresses(network, 20)
        assert len(set(addresses)) == 20
        assert all(address_problem(network, a) is None for a in addresses)


def test_base58check_encoding_reproduces_a_known_address() -> None:
    payload = bytes.fromhex("0062e907b15cbf27d5425399ebf6f0fb50ebb88f18")
    assert base58check_encode(payload) == "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"


def test_repeats_within_a_request_are_split_off_in_order() -> None:
    assert split_repeats(["a", "b", "a", "c", "b"]) == (["a", "b", "c"], ["a", "b"])


def test_an_order_keeps_what_it_has_on_its_network_and_a_released_one_gets_nothing() -> None:
    nothing = OrderPlace(released=False, held=None, waiting=None)
    holding = OrderPlace(released=False, held=HeldWallet("0xabc", "ETH"), waiting=None)
    waiting = OrderPlace(released=False, held=None, waiting=("ETH", 3))
    assert existing_allocation(nothing, "ETH") is None
    assert existing_allocation(holding, "ETH") == Allocation(address="0xabc")
    assert existing_allocation(waiting, "ETH") == Allocation(queue_position=3)
    for place in (holding, waiting):
        with pytest.raises(NetworkMismatch):
            existing_allocation(place, "BTC")
    for place in (nothing, holding, waiting):
        with pytest.raises(OrderAlreadyReleased):
            existing_allocation(replace(place, released=True), "ETH")
