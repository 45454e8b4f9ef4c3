"""Address codecs against the test vectors published with their specifications.

Sources (copied verbatim):
- BIP-173 "Test vectors" (github.com/bitcoin/bips, bip-0173.mediawiki) and BIP-350 "Test
  vectors" (bip-0350.mediawiki); the same lists are in the reference implementation's tests,
  github.com/sipa/bech32 ref/python/tests.py, which also has INVALID_ADDRESS_ENC.
- EIP-55 "Test Cases" (eips.ethereum.org/EIPS/eip-55, now ERC-55 in github.com/ethereum/ercs).
- Base58Check: the P2PKH and P2SH examples of the Bitcoin wiki's address page, the genesis
  block's address, and two TRON mainnet token contracts (WIN and USDT).
"""

import hashlib
from typing import Any

import pytest

from order_service.config import OrderSettings
from shared import addresses
from shared.addresses import (
    AddressError,
    Bech32Encoding,
    address_problem,
    base58check_decode,
    base58check_encode,
    bech32_decode,
    eip55_checksum,
    keccak256,
    segwit_decode,
    segwit_encode,
)
from shared.config import ConfigError
from shared.networks import KNOWN_NETWORKS, supported_networks
from wallet_pool_service.config import PoolSettings

# --- Keccak-256 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "digest"),
    [
        (b"", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        (b"abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"),
        # The topic of ERC-20's Transfer event, as every Ethereum log carries it.
        (
            b"Transfer(address,address,uint256)",
            "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
        ),
    ],
    ids=["empty", "abc", "erc20 transfer topic"],
)
def test_keccak256_gives_the_known_answers(message: bytes, digest: str) -> None:
    assert keccak256(message).hex() == digest


def test_keccak256_gives_erc20_transfers_function_selector() -> None:
    assert keccak256(b"transfer(address,uint256)")[:4].hex() == "a9059cbb"


def test_keccak256_is_not_sha3_256() -> None:
    assert keccak256(b"") != hashlib.sha3_256(b"").digest()


# --- EIP-55 -------------------------------------------------------------------------------------

EIP55_ALL_CAPS = [
    "0x52908400098527886E0F7030069857D2E4169EE7",
    "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
]
EIP55_ALL_LOWER = [
    "0xde709f2102306220921060314715629080e2fb77",
    "0x27b1fdb04752bbc536007a920d24acb045561c26",
]
EIP55_NORMAL = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


@pytest.mark.parametrize("address", EIP55_ALL_CAPS + EIP55_ALL_LOWER + EIP55_NORMAL)
def test_eip55_test_cases_are_valid_eth_addresses(address: str) -> None:
    assert address_problem("ETH", address) is None


@pytest.mark.parametrize("address", EIP55_NORMAL)
def test_eip55_checksum_reproduces_the_mixed_case_test_cases(address: str) -> None:
    assert eip55_checksum(address.lower()) == address
    assert eip55_checksum(address.upper().replace("0X", "0x")) == address


def _flip_case_of_first_letter(address: str) -> str:
    index = next(i for i, char in enumerate(address) if i >= 2 and char.isalpha())
    return address[:index] + address[index].swapcase() + address[index + 1 :]


@pytest.mark.parametrize("address", EIP55_NORMAL)
def test_a_mixed_case_address_with_one_letter_in_the_wrong_case_is_refused(address: str) -> None:
    mutated = _flip_case_of_first_letter(address)
    digits = mutated[2:]
    assert digits not in (digits.lower(), digits.upper())
    assert "EIP-55" in (address_problem("ETH", mutated) or "")


@pytest.mark.parametrize(
    "address",
    [
        "52908400098527886E0F7030069857D2E4169EE7",
        "0X52908400098527886E0F7030069857D2E4169EE7",
        "0x52908400098527886E0F7030069857D2E4169EE",
        "0x52908400098527886E0F7030069857D2E4169EE70",
        "0xZZ908400098527886E0F7030069857D2E4169EE7",
        "0x52908400098527886E0F7030069857D2E4169EE7\n",
    ],
    ids=["no prefix", "capital X", "39 digits", "41 digits", "not hex", "trailing newline"],
)
def test_eth_addresses_of_the_wrong_shape_are_refused(address: str) -> None:
    assert address_problem("ETH", address) == "expected 0x followed by 40 hex digits"


# --- Bech32 / Bech32m strings ------------------------------------------------------------------

VALID_BECH32 = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqc8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]
VALID_BECH32M = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]
# (string, reason given by the BIP)
INVALID_BECH32 = [
    ("\x20" + "1nwldj5", "HRP character out of range"),
    ("\x7f" + "1axkwrx", "HRP character out of range"),
    ("\x80" + "1eym55h", "HRP character out of range"),
    (
        "an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx",
        "overall max length exceeded",
    ),
    ("pzry9x0s0muk", "No separator character"),
    ("1pzry9x0s0muk", "Empty HRP"),
    ("x1b4n0q5v", "Invalid data character"),
    ("li1dgmt3", "Too short checksum"),
    ("de1lg7wt" + "\xff", "Invalid character in checksum"),
    ("A1G7SGD8", "checksum calculated with uppercase form of HRP"),
    ("10a06t8", "empty HRP"),
    ("1qzzfhee", "empty HRP"),
]
INVALID_BECH32M = [
    ("\x20" + "1xj0phk", "HRP character out of range"),
    ("\x7f" + "1g6xzxy", "HRP character out of range"),
    ("\x80" + "1vctc34", "HRP character out of range"),
    (
        "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
        "overall max length exceeded",
    ),
    ("qyrz8wqd2c9m", "No separator character"),
    ("1qyrz8wqd2c9m", "Empty HRP"),
    ("y1b0jsk6g", "Invalid data character"),
    ("lt1igcx5c0", "Invalid data character"),
    ("in1muywd", "Too short checksum"),
    ("mm1crxm3i", "Invalid character in checksum"),
    ("au1s5cgom", "Invalid character in checksum"),
    ("M1VUXWEZ", "checksum calculated with uppercase form of HRP"),
    ("16plkw9", "empty HRP"),
    ("1p2gdwpf", "empty HRP"),
]


def _checksum_cases() -> list[Any]:
    return [
        pytest.param(text, encoding, id=f"{encoding.name.lower()} {text!r}")
        for texts, encoding in [
            (VALID_BECH32, Bech32Encoding.BECH32),
            (VALID_BECH32M, Bech32Encoding.BECH32M),
        ]
        for text in texts
    ]


def _with_reasons(cases: list[tuple[str, str]]) -> list[Any]:
    return [pytest.param(text, reason, id=f"{reason}: {text!r}") for text, reason in cases]


@pytest.mark.parametrize(("text", "encoding"), _checksum_cases())
def test_valid_strings_decode_with_their_checksum(text: str, encoding: Bech32Encoding) -> None:
    hrp, _, got = bech32_decode(text)
    assert (hrp, got) == (text[: text.rfind("1")].lower(), encoding)


@pytest.mark.parametrize(("text", "encoding"), _checksum_cases())
def test_one_changed_data_character_breaks_the_checksum(
    text: str, encoding: Bech32Encoding
) -> None:
    # As the reference tests do: flip the lowest bit of the first character after the '1'.
    separator = text.rfind("1")
    changed = text[: separator + 1] + chr(ord(text[separator + 1]) ^ 1) + text[separator + 2 :]
    with pytest.raises(AddressError):
        bech32_decode(changed)


# What this module says for each reason the BIPs give.
MESSAGES = {
    "HRP character out of range": "character out of range",
    "overall max length exceeded": "longer than 90 characters",
    "No separator character": "no '1' separator",
    "Empty HRP": "empty human-readable part",
    "empty HRP": "empty human-readable part",
    "Invalid data character": "is not a bech32 character",
    "Too short checksum": "checksum too short",
    "Invalid character in checksum": "(character out of range|is not a bech32 character)",
    "checksum calculated with uppercase form of HRP": "checksum mismatch",
    "Invalid human-readable part": "human-readable part 'tc' is not",
    "Invalid checksum": "checksum mismatch",
    "Invalid checksum (Bech32 instead of Bech32m)": "must use bech32m, not bech32$",
    "Invalid checksum (Bech32m instead of Bech32)": "must use bech32, not bech32m$",
    "Invalid witness version": "witness version 17 is above 16",
    "Invalid program length": "witness program length",
    "Invalid program length (1 byte)": "witness program length 1,",
    "Invalid program length (41 bytes)": "witness program length 41,",
    "Invalid program length for witness version 0 (per BIP141)": "witness v0 program length",
    "Mixed case": "mixes upper and lower case",
    "zero padding of more than 4 bits": "more than 4 bits of padding",
    "Non-zero padding in 8-to-5 conversion": "non-zero padding",
    "Empty data section": "empty data part",
}


@pytest.mark.parametrize(("text", "reason"), _with_reasons(INVALID_BECH32 + INVALID_BECH32M))
def test_invalid_strings_are_refused_for_the_published_reason(text: str, reason: str) -> None:
    with pytest.raises(AddressError, match=MESSAGES[reason]):
        bech32_decode(text)


# --- Segwit addresses ----------------------------------------------------------------------------

# BIP-350's valid addresses with their scriptPubKey (BIP-173's v0 ones are among them).
VALID_SEGWIT = [
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    (
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
    ),
    (
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    ("BC1SW50QGDZ25J", "6002751e"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    (
        "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
        "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
        "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    ),
]
# BIP-173's valid v1+ addresses use bech32; BIP-350 made them invalid (the same programs are in
# VALID_SEGWIT with bech32m checksums).
BIP173_V1_PLUS_IN_BECH32 = [
    "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7k7grplx",
    "BC1SW50QA3JX3S",
    "bc1zw508d6qejxtdg4y5r3zarvaryvg6kdaj",
]
# (address, reason given by the BIP)
INVALID_SEGWIT_BIP173 = [
    ("tc1qw508d6qejxtdg4y5r3zarvary0c5xw7kg3g4ty", "Invalid human-readable part"),
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5", "Invalid checksum"),
    ("BC13W508D6QEJXTDG4Y5R3ZARVARY0C5XW7KN40WF2", "Invalid witness version"),
    ("bc1rw5uspcuh", "Invalid program length"),
    (
        "bc10w508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kw5rljs90",
        "Invalid program length",
    ),
    (
        "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",
        "Invalid program length for witness version 0 (per BIP141)",
    ),
    ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sL5k7", "Mixed case"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du", "zero padding of more than 4 bits"),
    (
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3pjxtptv",
        "Non-zero padding in 8-to-5 conversion",
    ),
    ("bc1gmk9yu", "Empty data section"),
]
INVALID_SEGWIT_BIP350 = [
    (
        "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut",
        "Invalid human-readable part",
    ),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",
        "Invalid checksum (Bech32 instead of Bech32m)",
    ),
    (
        "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf",
        "Invalid checksum (Bech32 instead of Bech32m)",
    ),
    (
        "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL",
        "Invalid checksum (Bech32 instead of Bech32m)",
    ),
    (
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",
        "Invalid checksum (Bech32m instead of Bech32)",
    ),
    (
        "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",
        "Invalid checksum (Bech32m instead of Bech32)",
    ),
    (
        "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4",
        "Invalid character in checksum",
    ),
    (
        "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R",
        "Invalid witness version",
    ),
    ("bc1pw5dgrnzv", "Invalid program length (1 byte)"),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav",
        "Invalid program length (41 bytes)",
    ),
    (
        "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",
        "Invalid program length for witness version 0 (per BIP141)",
    ),
    ("tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq", "Mixed case"),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf",
        "zero padding of more than 4 bits",
    ),
    (
        "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j",
        "Non-zero padding in 8-to-5 conversion",
    ),
    ("bc1gmk9yu", "Empty data section"),
]
# (hrp, witness version, program length) that encoding must refuse: reference tests.py.
INVALID_SEGWIT_ENCODE = [("BC", 0, 20), ("bc", 0, 21), ("bc", 17, 32), ("bc", 1, 1), ("bc", 16, 41)]


def _valid_segwit_cases() -> list[Any]:
    return [pytest.param(address, script, id=address) for address, script in VALID_SEGWIT]


def _script_pubkey(version: int, program: bytes) -> bytes:
    return bytes([version + 0x50 if version else 0, len(program)]) + program


@pytest.mark.parametrize(("address", "script_pubkey"), _valid_segwit_cases())
def test_valid_segwit_addresses_decode_to_their_script_pubkey(
    address: str, script_pubkey: str
) -> None:
    hrp = address[:2].lower()
    version, program = segwit_decode(hrp, address)
    assert _script_pubkey(version, program).hex() == script_pubkey
    assert segwit_encode(hrp, version, program) == address.lower()


@pytest.mark.parametrize(("address", "script_pubkey"), _valid_segwit_cases())
def test_btc_takes_the_mainnet_segwit_vectors_and_refuses_the_testnet_ones(
    address: str, script_pubkey: str
) -> None:
    problem = address_problem("BTC", address)
    if address.lower().startswith("bc1"):
        assert problem is None
    else:
        assert problem is not None


@pytest.mark.parametrize("address", BIP173_V1_PLUS_IN_BECH32)
def test_bip173_v1_plus_addresses_in_bech32_are_refused_since_bip350(address: str) -> None:
    with pytest.raises(AddressError, match=r"must use bech32m, not bech32$"):
        segwit_decode("bc", address)
    assert address_problem("BTC", address) is not None


@pytest.mark.parametrize(
    ("address", "reason"),
    _with_reasons(INVALID_SEGWIT_BIP173 + INVALID_SEGWIT_BIP350),
)
def test_invalid_segwit_addresses_are_refused_for_the_published_reason(
    address: str, reason: str
) -> None:
    own_hrp = "tb" if address.lower().startswith("tb1") else "bc"
    with pytest.raises(AddressError, match=MESSAGES[reason]):
        segwit_decode(own_hrp, address)
    for hrp in ("bc", "tb"):
        with pytest.raises(AddressError):
            segwit_decode(hrp, address)
    assert address_problem("BTC", address) is not None


@pytest.mark.parametrize(
    ("hrp", "address", "expected"),
    [
        ("bc", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd", "bech32m"),
        ("bc", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh", "bech32"),
    ],
    ids=["v1 in bech32", "v0 in bech32m"],
)
def test_the_witness_version_decides_the_checksum(hrp: str, address: str, expected: str) -> None:
    with pytest.raises(AddressError, match=f"must use {expected},"):
        segwit_decode(hrp, address)


@pytest.mark.parametrize(("hrp", "version", "length"), INVALID_SEGWIT_ENCODE, ids=str)
def test_encoding_refuses_what_decoding_would(hrp: str, version: int, length: int) -> None:
    with pytest.raises(AddressError):
        segwit_encode(hrp, version, bytes(length))


def test_btc_refuses_a_testnet_address_naming_what_it_expects() -> None:
    problem = address_problem(
        "BTC", "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7"
    )
    assert problem is not None and "bc1" in problem


# --- Base58Check: BTC and TRON ---------------------------------------------------------------

BASE58_VALID = [
    ("BTC", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", 0x00),
    ("BTC", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", 0x00),
    ("BTC", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", 0x05),
    ("TRON", "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7", 0x41),
    ("TRON", "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", 0x41),
]


@pytest.mark.parametrize(("network", "address", "version"), BASE58_VALID, ids=lambda v: str(v))
def test_known_base58check_addresses_are_accepted(network: str, address: str, version: int) -> None:
    payload = base58check_decode(address)
    assert (len(payload), payload[0]) == (21, version)
    assert base58check_encode(payload) == address
    assert address_problem(network, address) is None


def _corruptions(address: str) -> list[str]:
    last = address[-1]
    return [
        address[:-1] + ("2" if last != "2" else "3"),  # another last character
        address[:5] + address[6] + address[5] + address[7:],  # two characters swapped
        address[:-1],  # one character short
        address + "1",  # one character more
        address[:10] + "0" + address[11:],  # 0 is not in the Base58 alphabet
        address[:10] + "l" + address[11:],  # neither is l
    ]


@pytest.mark.parametrize(
    ("network", "corrupted"),
    [(network, bad) for network, address, _ in BASE58_VALID for bad in _corruptions(address)],
    ids=lambda v: str(v),
)
def test_corrupted_base58check_addresses_are_refused(network: str, corrupted: str) -> None:
    assert address_problem(network, corrupted) is not None


@pytest.mark.parametrize(
    ("network", "address"),
    [
        ("BTC", "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7"),
        ("TRON", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),
        ("TRON", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"),
        ("ETH", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),
        ("TRON", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
        ("BTC", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
        ("TRON", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),
    ],
    ids=lambda v: str(v),
)
def test_an_address_of_another_network_is_refused(network: str, address: str) -> None:
    assert address_problem(network, address) is not None


def test_a_base58check_payload_of_the_wrong_length_is_refused() -> None:
    short = base58check_encode(b"\x00" + bytes(19))
    assert address_problem("BTC", short) == "Base58Check payload is 20 bytes, expected 21"


# --- Networks -----------------------------------------------------------------------------------


def test_every_known_network_has_an_address_check_and_no_other_has() -> None:
    assert set(KNOWN_NETWORKS) == addresses.CHECKED_NETWORKS
    assert address_problem("DOGE", "DNotCheckedBecauseDogeIsUnknown") is not None


def test_supported_networks_default_to_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPPORTED_NETWORKS", raising=False)
    assert supported_networks() == KNOWN_NETWORKS
    monkeypatch.setenv("SUPPORTED_NETWORKS", " eth , BTC,eth")
    assert supported_networks() == ("ETH", "BTC")


@pytest.mark.parametrize("value", ["BTC,DOGE", ",", "LTC"])
@pytest.mark.parametrize("settings", [OrderSettings, PoolSettings], ids=lambda s: s.__name__)
def test_both_services_refuse_a_network_without_address_check_at_start_up(
    monkeypatch: pytest.MonkeyPatch, settings: type[OrderSettings | PoolSettings], value: str
) -> None:
    monkeypatch.setenv("SUPPORTED_NETWORKS", value)
    with pytest.raises(ConfigError, match=r"^SUPPORTED_NETWORKS\b.*; known: BTC, ETH, TRON$"):
        settings.from_env()
