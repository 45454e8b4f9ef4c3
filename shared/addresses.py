"""Address codecs and per-network address checks: pure functions, no I/O.

- BTC: Base58Check P2PKH (version 0x00) and P2SH (0x05); native segwit on mainnet (HRP
  "bc"): witness version 0 in bech32 (BIP-173) with a 20- or 32-byte program, versions 1 to
  16 in bech32m (BIP-350) with a 2- to 40-byte program.
- ETH: "0x" and 40 hex digits; mixed case must match the EIP-55 checksum.
- TRON: Base58Check with a 21-byte payload whose first byte is 0x41.
"""

import enum
import hashlib
import re
from collections.abc import Callable, Iterable

from Crypto.Hash import keccak

BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {char: index for index, char in enumerate(BASE58_ALPHABET)}
BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {char: index for index, char in enumerate(BECH32_CHARSET)}
_BECH32_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
BECH32_MAX_LENGTH = 90
BTC_SEGWIT_HRP = "bc"
_ETH = re.compile(r"0x[0-9a-fA-F]{40}")


class AddressError(ValueError):
    """Why a string is not a valid encoding; the message is short and meant for people."""


# Base58Check ---------------------------------------------------------------------------


def _double_sha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def base58check_decode(text: str) -> bytes:
    """The payload of a Base58Check string (version byte first)."""
    number = 0
    for char in text:
        digit = _BASE58_INDEX.get(char)
        if digit is None:
            raise AddressError(f"{char!r} is not a Base58 character")
        number = number * 58 + digit
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    raw = b"\x00" * (len(text) - len(text.lstrip("1"))) + raw
    if len(raw) < 5:
        raise AddressError("too short for Base58Check")
    payload, checksum = raw[:-4], raw[-4:]
    if _double_sha256(payload)[:4] != checksum:
        raise AddressError("Base58Check checksum mismatch")
    return payload


def base58check_encode(payload: bytes) -> str:
    raw = payload + _double_sha256(payload)[:4]
    number = int.from_bytes(raw, "big")
    chars = []
    while number:
        number, digit = divmod(number, 58)
        chars.append(BASE58_ALPHABET[digit])
    leading_zeros = len(raw) - len(raw.lstrip(b"\x00"))
    return "1" * leading_zeros + "".join(reversed(chars))


def _check_base58_version(text: str, versions: tuple[int, ...], what: str) -> None:
    payload = base58check_decode(text)
    if len(payload) != 21:
        raise AddressError(f"Base58Check payload is {len(payload)} bytes, expected 21")
    if payload[0] not in versions:
        raise AddressError(f"version byte {payload[0]:#04x} is not {what}")


# Bech32 and Bech32m (BIP-173, BIP-350) ----------------------------------------------------


class Bech32Encoding(enum.Enum):
    """The two checksums; the value is the constant the checksum is xored with."""

    BECH32 = 1
    BECH32M = 0x2BC830A3


def _polymod(values: Iterable[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for bit, generator in enumerate(_BECH32_GENERATOR):
            if (top >> bit) & 1:
                checksum ^= generator
    return checksum


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(char) >> 5 for char in hrp] + [0] + [ord(char) & 31 for char in hrp]


def bech32_decode(text: str) -> tuple[str, list[int], Bech32Encoding]:
    """(human-readable part, 5-bit data values without the checksum, checksum used)."""
    if any(not 33 <= ord(char) <= 126 for char in text):
        raise AddressError("character out of range")
    if text.lower() != text and text.upper() != text:
        raise AddressError("mixes upper and lower case")
    if len(text) > BECH32_MAX_LENGTH:
        raise AddressError(f"longer than {BECH32_MAX_LENGTH} characters")
    text = text.lower()
    separator = text.rfind("1")
    if separator < 0:
        raise AddressError("no '1' separator")
    if separator == 0:
        raise AddressError("empty human-readable part")
    if len(text) - separator - 1 < 6:
        raise AddressError("checksum too short")
    data = []
    for char in text[separator + 1 :]:
        if char not in _BECH32_INDEX:
            raise AddressError(f"{char!r} is not a bech32 character")
        data.append(_BECH32_INDEX[char])
    hrp = text[:separator]
    residue = _polymod(_hrp_expand(hrp) + data)
    for encoding in Bech32Encoding:
        if residue == encoding.value:
            return hrp, data[:-6], encoding
    raise AddressError("bech32 checksum mismatch")


def bech32_encode(hrp: str, data: list[int], encoding: Bech32Encoding) -> str:
    residue = _polymod(_hrp_expand(hrp) + data + [0] * 6) ^ encoding.value
    checksum = [(residue >> 5 * (5 - index)) & 31 for index in range(6)]
    return hrp + "1" + "".join(BECH32_CHARSET[value] for value in data + checksum)


def _convert_bits(values: Iterable[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int]:
    accumulator = 0
    bits = 0
    out = []
    top = (1 << to_bits) - 1
    for value in values:
        accumulator = (accumulator << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((accumulator >> bits) & top)
    if pad:
        if bits:
            out.append((accumulator << (to_bits - bits)) & top)
    elif bits >= from_bits:
        raise AddressError("more than 4 bits of padding")
    elif (accumulator << (to_bits - bits)) & top:
        raise AddressError("non-zero padding")
    return out


def segwit_decode(hrp: str, address: str) -> tuple[int, bytes]:
    """(witness version, witness program) of a native segwit address with this HRP."""
    got, data, encoding = bech32_decode(address)
    if got != hrp:
        raise AddressError(f"human-readable part {got!r} is not {hrp!r}")
    if not data:
        raise AddressError("empty data part")
    version = data[0]
    if version > 16:
        raise AddressError(f"witness version {version} is above 16")
    program = bytes(_convert_bits(data[1:], 5, 8, pad=False))
    if not 2 <= len(program) <= 40:
        raise AddressError(f"witness program length {len(program)}, expected 2 to 40 bytes")
    if version == 0 and len(program) not in (20, 32):
        raise AddressError(f"witness v0 program length {len(program)}, expected 20 or 32 bytes")
    expected = Bech32Encoding.BECH32 if version == 0 else Bech32Encoding.BECH32M
    if encoding is not expected:
        raise AddressError(
            f"witness v{version} must use {expected.name.lower()}, not {encoding.name.lower()}"
        )
    return version, program


def segwit_encode(hrp: str, version: int, program: bytes) -> str:
    """The address of a witness program; refuses what `segwit_decode` would refuse."""
    encoding = Bech32Encoding.BECH32 if version == 0 else Bech32Encoding.BECH32M
    address = bech32_encode(hrp, [version, *_convert_bits(program, 8, 5, pad=True)], encoding)
    segwit_decode(hrp, address)
    return address


# Keccak-256 and EIP-55 --------------------------------------------------------------------


def keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum uses it: the original Keccak padding (0x01), not SHA3-256's
    (hashlib.sha3_256 gives other digests). pycryptodome's compiled one: a pure-Python
    permutation took about 1 ms per address and held the event loop for a whole batch."""
    return keccak.new(data=data, digest_bits=256).digest()


def eip55_checksum(address: str) -> str:
    """`address` ("0x" and 40 hex digits, any case) in EIP-55 mixed case."""
    digits = address[2:].lower()
    nibbles = keccak256(digits.encode("ascii")).hex()
    return "0x" + "".join(
        char.upper() if int(nibble, 16) >= 8 else char
        for char, nibble in zip(digits, nibbles, strict=False)
    )


# Per-network checks -----------------------------------------------------------------------


def _check_btc(address: str) -> None:
    if address[:1] in ("1", "3"):
        _check_base58_version(address, (0x00, 0x05), "P2PKH (0x00) or P2SH (0x05)")
    elif address[:3].lower() == BTC_SEGWIT_HRP + "1":
        segwit_decode(BTC_SEGWIT_HRP, address)
    else:
        raise AddressError("expected Base58Check starting with 1 or 3, or segwit with bc1")


def _check_eth(address: str) -> None:
    if not _ETH.fullmatch(address):
        raise AddressError("expected 0x followed by 40 hex digits")
    digits = address[2:]
    if digits not in (digits.lower(), digits.upper()) and address != eip55_checksum(address):
        raise AddressError("mixed case that does not match the EIP-55 checksum")


def _check_tron(address: str) -> None:
    _check_base58_version(address, (0x41,), "TRON's (0x41)")


# shared.networks.KNOWN_NETWORKS lists the same networks (a unit test keeps them in step), so
# that both services refuse a SUPPORTED_NETWORKS entry that has no check here.
_CHECKS: dict[str, Callable[[str], None]] = {
    "BTC": _check_btc,
    "ETH": _check_eth,
    "TRON": _check_tron,
}
CHECKED_NETWORKS = frozenset(_CHECKS)


def address_problem(network: str, address: str) -> str | None:
    """Why `address` is not a valid address of `network`, or None if it is."""
    check = _CHECKS.get(network)
    if check is None:
        return f"addresses of {network} cannot be checked"
    try:
        check(address)
    except AddressError as exc:
        return str(exc)
    return None


def lookup_problem(address: str) -> str | None:
    """Why no checked network takes `address` (one looked up without its network), naming
    each network's reason; None if one takes it."""
    problems = []
    for network in sorted(CHECKED_NETWORKS):
        problem = address_problem(network, address)
        if problem is None:
            return None
        problems.append(f"{network}: {problem}")
    return "; ".join(problems)


def canonical_address(address: str) -> str:
    """The form an address is stored and looked up in, so that one wallet cannot enter the pool
    twice in two spellings: a BTC segwit address in lower case (BIP-173's canonical form;
    upper case is for QR codes), an ETH address in lower case (the EIP-55 checksum is only a
    spelling), anything else (Base58Check, case-sensitive) as given."""
    if _ETH.fullmatch(address):
        return address.lower()
    if address[:3].upper() == "BC1" and address.isupper():
        try:
            segwit_decode(BTC_SEGWIT_HRP, address)
        except AddressError:
            return address
        return address.lower()
    return address
