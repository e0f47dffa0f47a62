"""Facts in a message that agents and routing rules use: hashes, addresses, amounts, ids.

Pure: text and the rules from policy/classify.yaml (`signals:`) in, `Signals` out.

    * tx hashes: 0x + 64 hex (EVM) and bare 64 hex (BTC, TRON, ...), lower-cased
      since hex case carries no meaning. A bare 64-hex string that redact kept is a
      hash by redact's rule (no private-key cue near it).
    * addresses, as written (EIP-55 capitals are a checksum, base58 is case
      sensitive): EVM 0x + 40 hex → "eth"; bc1… with a valid bech32/bech32m checksum
      and legacy 1…/3… with a valid base58check → "btc"; T… base58check version 0x41
      → "tron"; Solana (32-byte base58, no checksum to test) only with a Solana cue
      within 60 characters, since any 32–44 character base58 word would match.
    * amounts: a number followed by a known ticker or alias ("0.5 BTC", "1,200 USDT",
      "2 个 ETH", "5000u").
    * account UIDs and order ids after their labels ("UID 12345678", "订单号 …").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr

from services.ingest.redact import B58_CLASS, b58check_payload, b58decode
from shared.contracts.messages import Amount, Signals, WalletAddress

_FLAGS = re.IGNORECASE
_T = TypeVar("_T")


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, _FLAGS)
    except re.error as exc:
        raise ValueError(f"bad regex {pattern!r}: {exc}") from exc


def _compile_any(patterns: Iterable[str]) -> re.Pattern[str] | None:
    patterns = list(patterns)
    if not patterns:
        return None
    return _compile("|".join(f"(?:{p})" for p in patterns))


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SignalRules(_Strict):
    assets: tuple[str, ...]
    asset_aliases: dict[str, str] = {}
    uid_labels: tuple[str, ...]
    order_labels: tuple[str, ...]
    solana_cues: tuple[str, ...] = ()

    _amount: re.Pattern[str] = PrivateAttr()
    _uid: re.Pattern[str] = PrivateAttr()
    _order: re.Pattern[str] = PrivateAttr()
    _solana_cue: re.Pattern[str] | None = PrivateAttr()
    _assets: frozenset[str] = PrivateAttr()
    _aliases: dict[str, str] = PrivateAttr()

    def model_post_init(self, context: object, /) -> None:
        self._assets = frozenset(a.upper() for a in self.assets)
        self._aliases = {k.upper(): v.upper() for k, v in self.asset_aliases.items()}
        names = sorted({*self._assets, *self._aliases}, key=len, reverse=True)
        asset = "|".join(re.escape(n) for n in names)
        # ("1,200", ".5", " ", "USDT")
        self._amount = _compile(
            rf"(?<![0-9A-Za-z.,])(\d{{1,3}}(?:,\d{{3}})+|\d+)(\.\d+)?(\s*(?:个|枚)?\s*)({asset})(?![A-Za-z])"
        )
        separator = r"\s*(?:is|:|：|=|#|号|是|为)?\s*"
        self._uid = _compile(rf"(?:{'|'.join(self.uid_labels)}){separator}(\d{{5,12}})(?!\d)")
        self._order = _compile(
            rf"(?:{'|'.join(self.order_labels)}){separator}([A-Za-z0-9][A-Za-z0-9-]{{5,40}})"
        )
        self._solana_cue = _compile_any(self.solana_cues)


_TX_EVM = re.compile(r"(?<![0-9A-Za-z])0[xX][0-9a-fA-F]{64}(?![0-9A-Za-z])")
_TX_BARE = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{64}(?![0-9A-Za-z])")
_EVM_ADDRESS = re.compile(r"(?<![0-9A-Za-z])0[xX][0-9a-fA-F]{40}(?![0-9A-Za-z])")
_BECH32 = re.compile(
    r"(?<![0-9A-Za-z])(?:bc1[02-9ac-hj-np-z]{8,87}|BC1[02-9AC-HJ-NP-Z]{8,87})(?![0-9A-Za-z])"
)
_BTC_LEGACY = re.compile(rf"(?<![{B58_CLASS}])[13][{B58_CLASS}]{{25,34}}(?![{B58_CLASS}])")
_TRON = re.compile(rf"(?<![{B58_CLASS}])T[{B58_CLASS}]{{33}}(?![{B58_CLASS}])")
_BASE58_WORD = re.compile(rf"(?<![{B58_CLASS}])[{B58_CLASS}]{{32,44}}(?![{B58_CLASS}])")
_SOLANA_CUE_CHARS = 60
_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_CONSTANTS = (1, 0x2BC830A3)  # bech32 (segwit v0), bech32m (v1+, taproot)
_TRON_VERSION = 0x41
_BTC_VERSIONS = (0x00, 0x05)
_SOLANA_KEY_BYTES = 32


def extract_signals(text: str, rules: SignalRules) -> Signals:
    """Tx hashes, addresses, amounts, UIDs and order ids in order of appearance, deduplicated."""
    hashes = _unique(
        m.group().lower() for pattern in (_TX_EVM, _TX_BARE) for m in pattern.finditer(text)
    )
    addresses = _addresses(text, rules)
    amounts = _unique(_amounts(text, rules))
    uids = _unique(m.group(1) for m in rules._uid.finditer(text))
    orders = _unique(
        m.group(1) for m in rules._order.finditer(text) if sum(c.isdigit() for c in m.group(1)) >= 6
    )
    return Signals(
        tx_hashes=hashes,
        addresses=addresses,
        amounts=amounts,
        account_uids=uids,
        order_ids=orders,
    )


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


def _addresses(text: str, rules: SignalRules) -> tuple[WalletAddress, ...]:
    found: list[tuple[int, int, WalletAddress]] = []
    for match in _EVM_ADDRESS.finditer(text):
        found.append(
            (match.start(), match.end(), WalletAddress(chain="eth", address=match.group()))
        )
    for match in _BECH32.finditer(text):
        if _bech32_valid(match.group().lower()):
            found.append(
                (match.start(), match.end(), WalletAddress(chain="btc", address=match.group()))
            )
    for match in _BTC_LEGACY.finditer(text):
        payload = b58check_payload(match.group())
        if payload is not None and len(payload) == 21 and payload[0] in _BTC_VERSIONS:
            found.append(
                (match.start(), match.end(), WalletAddress(chain="btc", address=match.group()))
            )
    for match in _TRON.finditer(text):
        payload = b58check_payload(match.group())
        if payload is not None and len(payload) == 21 and payload[0] == _TRON_VERSION:
            found.append(
                (match.start(), match.end(), WalletAddress(chain="tron", address=match.group()))
            )
    if rules._solana_cue is not None and rules._solana_cue.search(text):
        taken = [(s, e) for s, e, _ in found]
        taken += [m.span() for pattern in (_TX_EVM, _TX_BARE) for m in pattern.finditer(text)]
        found.extend(_solana(text, rules._solana_cue, taken))
    found.sort(key=lambda item: item[0])
    return _unique(address for _, _, address in found)


def _solana(
    text: str, cue: re.Pattern[str], taken: list[tuple[int, int]]
) -> Iterator[tuple[int, int, WalletAddress]]:
    for match in _BASE58_WORD.finditer(text):
        start, end = match.span()
        if any(s < end and start < e for s, e in taken):
            continue
        near = text[max(0, start - _SOLANA_CUE_CHARS) : end + _SOLANA_CUE_CHARS]
        raw = b58decode(match.group())
        if cue.search(near) and raw is not None and len(raw) == _SOLANA_KEY_BYTES:
            yield start, end, WalletAddress(chain="sol", address=match.group())


def _bech32_valid(address: str) -> bool:
    hrp, _, data = address.rpartition("1")
    if hrp != "bc" or len(data) < 6:
        return False
    values = [_BECH32_CHARSET.find(c) for c in data]
    if -1 in values:
        return False
    checksum = 1
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + values
    generators = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    for value in expanded:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(generators):
            if (top >> i) & 1:
                checksum ^= generator
    return checksum in _BECH32_CONSTANTS


def _amounts(text: str, rules: SignalRules) -> Iterator[Amount]:
    for match in rules._amount.finditer(text):
        whole, fraction, gap, name = match.groups()
        name = name.upper()
        asset = name if name in rules._assets else rules._aliases.get(name)
        if asset is None:
            continue
        if name in rules._aliases and len(name) == 1 and gap:
            continue
        yield Amount(value=Decimal(whole.replace(",", "") + (fraction or "")), asset=asset)
