"""Base58 and Base58Check (Bitcoin's alphabet), to write wallet addresses and keys in tests."""

from __future__ import annotations

import hashlib

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    encoded = ""
    while number:
        number, digit = divmod(number, 58)
        encoded = _ALPHABET[digit] + encoded
    # Each leading zero byte is a leading "1".
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + encoded


def b58check(payload: bytes) -> str:
    """`payload` and the first four bytes of its double SHA-256, in Base58."""
    return b58(payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4])
