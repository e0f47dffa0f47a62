"""Raw RFC 5322 email: one customer message, or the reason it is not one.

Email is the messiest channel: any MIME shape, charsets that lie about themselves,
replies that carry the whole earlier thread, and machines answering machines. This
module turns that into one `ParsedMessage` (the customer's new text, metadata of the
attachments, the thread ids a reply needs) or one `Skipped` (auto-replies, bounces,
bulk mail, our own outgoing mail). Only `ParseError` escapes, and only when the bytes
are not a customer's email at all.

Thread keys: a reply's References start with the id of the mail that opened the thread,
so that root id is the conversation key, and replies land in their conversation:

    References: <root@customer> <reply-1@exchange>   ->  conversation_key "root@customer"
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from itertools import islice

from inscriptis import get_text  # type: ignore[import-untyped]
from inscriptis.css_profiles import CSS_PROFILES  # type: ignore[import-untyped]
from inscriptis.html_properties import Display  # type: ignore[import-untyped]
from inscriptis.model.config import ParserConfig as HtmlConfig  # type: ignore[import-untyped]
from inscriptis.model.html_element import HtmlElement  # type: ignore[import-untyped]

from services.ingest.model import ParsedMessage, ParseError, ParserConfig, ParseResult, Skipped
from services.ingest.parsers.common import (
    MAX_ID_CHARS,
    MAX_LINE_CHARS,
    clean_line,
    clean_text,
    normalise_email,
)
from shared.contracts.common import Provider
from shared.contracts.messages import Attachment, EmailThread, Identity

PROVIDER: Provider = "smtp"

# Reasons are Prometheus label values: a small fixed set.
ERROR_EMPTY = "email: empty"
ERROR_NO_SENDER = "email: no sender"
ERROR_MALFORMED = "email: malformed"
ERROR_TOO_MANY_PARTS = "email: too many parts"
SKIP_AUTO_REPLY = "email: auto reply"
SKIP_BULK = "email: bulk"
SKIP_BOUNCE = "email: bounce"
SKIP_REPORT = "email: report"
SKIP_OWN_ADDRESS = "email: own address"

_PARSER = BytesParser(policy=policy.default)
_LENIENT_PARSER = BytesParser(policy=policy.compat32)

# Text and markup are cut to this many times max_text_chars before conversion and
# quote stripping: enough for the new text plus a long quoted history, while a
# 20 MB body cannot make one message cost seconds.
_WORK_FACTOR = 10
_MAX_SUBJECT_CHARS = 998  # RFC 5322's line limit
_MAX_FILENAME_CHARS = 255
_MAX_ATTACHMENTS = 100
# MIME parts a mail may have. Python's parser spends milliseconds on each multipart
# part (it parses the Content-Type header over and over): 20,000 nested parts fit in
# a megabyte and cost a minute, with the consumer's heartbeats starved meanwhile.
# Real mail has a few dozen at most.
_MAX_PARTS = 500
# Long threads carry dozens of ids; the root and the most recent ones are what
# threading needs (RFC 5322 3.6.4 trims the same way).
_MAX_REFERENCES = 20

_BOUNCE_SENDERS = frozenset({"mailer-daemon", "postmaster"})
_AUTO_REPLY_PRECEDENCE = frozenset({"auto_reply"})
_BULK_PRECEDENCE = frozenset({"bulk", "junk"})
_AUTO_REPLY_SUBJECT = re.compile(
    r"\s*(?:[\[【(（]\s*)?(?:自动回复|自動回覆|自动答复|自動回復)"
    r"|\s*(?:automatic reply|auto[- ]?reply|auto[- ]?response|out of (?:the )?office)\s*[:：]",
    re.IGNORECASE,
)
# Signature parts are transport, not something the customer attached.
_NOT_ATTACHMENTS = frozenset({"application/pgp-signature", "application/pkcs7-signature"})

# Declared label (as Python's codec name) -> codecs to try, strictest first. Mail
# labelled gb2312 is usually GBK (GB2312 lacks many common characters), and GB18030
# is a superset of both; Big5 and ISO-2022-JP mail often uses vendor extensions.
_CHARSET_CANDIDATES: dict[str, tuple[str, ...]] = {
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "gb18030": ("gb18030",),
    "big5": ("big5", "cp950", "big5hkscs"),
    "cp950": ("cp950", "big5hkscs"),
    "big5hkscs": ("big5hkscs", "cp950"),
    "iso2022_jp": ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2", "iso2022_jp_3"),
    "shift_jis": ("shift_jis", "cp932"),
    "euc_kr": ("euc_kr", "cp949"),
    # As browsers do: mail labelled latin-1 is usually Windows-1252.
    "latin_1": ("cp1252", "latin_1"),
}
# Codecs that decode escapes or host names rather than mail text.
_NOT_MAIL_CODECS = frozenset(
    {"unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined"}
)
_FALLBACK_CODECS = ("utf-8", "gb18030")

_SURROGATES = re.compile("[\ud800-\udfff]")
_FOLD = re.compile(r"\r\n|\r|\n")
_WHITESPACE = re.compile(r"\s+")
_BLANK_RUNS = re.compile(r"\n{3,}")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_MSG_ID = re.compile(r"<([^<>\s]+)>")
_BOUNDARY_PARAM = re.compile(rb'(?i)boundary(\*[^=\s]*)?\s*=\s*("[^"\r\n]*"|[^\s;]+)')
# A line starting with "--"; lines end at CR, LF or CRLF, as the parser splits them.
_DASH_LINE = re.compile(rb"(?:\A|[\r\n])--([^\r\n]*)")

# Reply quoting, line by line. Every pattern is anchored and free of nested
# repetition: customer text must not be able to make a regex run for seconds.
_QUOTED = re.compile(r"\s*>")
_SEPARATOR = re.compile(
    r"[-_=][-_=\s]*(?:original message|原始邮件|原始郵件)[-_=\s]*", re.IGNORECASE
)
_FORWARD = re.compile(
    r"[-_=\s]*(?:forwarded message|begin forwarded message:?|转发邮件|轉寄郵件)[-_=\s]*",
    re.IGNORECASE,
)
_HEADER_FROM = re.compile(r"\*?(?:from|发件人|寄件者|寄件人)\*?\s*[:：]", re.IGNORECASE)
_HEADER_SENT = re.compile(
    r"\*?(?:sent|date|发送时间|时间|日期|寄件日期|傳送時間)\*?\s*[:：]", re.IGNORECASE
)
_ZH_ATTRIBUTION_START = re.compile(r"在\s*\d|.{0,200}?于\s*\d")
_ZH_ATTRIBUTION_END = ("写道：", "写道:", "寫道：", "寫道:")
_ATTRIBUTION_LINES = 3
_MAX_ATTRIBUTION_CHARS = 300
_HEADER_BLOCK_LINES = 4
_RULE_LINE = re.compile(r"[-_=*~\s]+")
_MOBILE_FOOTER = re.compile(
    r"(?:sent from my \S.*|get outlook for \S.*|发自我的\S.*|从我的\S.*发送)", re.IGNORECASE
)

# Firefox's defaults, with blockquotes hidden: in mail HTML they hold the quoted thread.
_HTML_CSS = {**CSS_PROFILES["strict"], "blockquote": HtmlElement(display=Display.none)}
_HTML_TAG = re.compile(r"<[^>]*>")


def parse_email(raw: bytes, config: ParserConfig) -> ParseResult:
    if not raw.strip():
        raise ParseError(ERROR_EMPTY)
    if _delimiter_lines(raw) > _MAX_PARTS:
        raise ParseError(ERROR_TOO_MANY_PARTS)
    return [_parse(_parse_mime(raw), raw, config)]


def _delimiter_lines(raw: bytes) -> int:
    """Lines that can start a MIME part: "--" and a boundary some header declares.

    An upper bound of the parts the parser will make, counted in one pass without
    parsing. Boundaries in RFC 2231 form (`boundary*0=`, `boundary*=utf-8''...`) are
    joined or decoded by the parser, so with one of those every "--" line counts.
    """
    params = _BOUNDARY_PARAM.findall(raw)
    if not params:
        return 0
    exact = not any(star for star, _ in params)
    boundaries = {value.strip(b'"').rstrip() for _, value in params}
    count = 0
    for match in _DASH_LINE.finditer(raw):
        # "--boundary" or "--boundary--", white space after (RFC 2046 5.1.1).
        delimiter = match.group(1).rstrip()
        if not exact or delimiter in boundaries or delimiter.removesuffix(b"--") in boundaries:
            count += 1
    return count


def _parse_mime(raw: bytes) -> Message:
    try:
        return _PARSER.parsebytes(raw)
    except RecursionError as exc:
        # Thousands of nested multiparts exhaust the stack; the old parser recurses too.
        raise ParseError(ERROR_MALFORMED) from exc
    # CPython's modern header parser raises IndexError, ValueError, ... on some garbled
    # parameters (`Content-Type: text/plain; charset*`): the compat32 parser reads
    # them the old, lenient way, and the customer's text survives.
    except Exception:
        return _parse_mime_leniently(raw)


def _parse_mime_leniently(raw: bytes) -> Message:
    try:
        return _LENIENT_PARSER.parsebytes(raw)
    except Exception as exc:
        raise ParseError(ERROR_MALFORMED) from exc


def _parse(message: Message, raw: bytes, config: ParserConfig) -> ParsedMessage | Skipped:
    headers = _first_headers(message)
    subject = _subject(headers.get("subject"))
    sender_name, sender_address = _first_address(headers.get("from"))
    own_addresses = {address.lower() for address in config.own_email_addresses}

    skip = _skip_reason(message, headers, subject, sender_address)
    if skip is None and sender_address in own_addresses:
        skip = SKIP_OWN_ADDRESS
    if skip is not None:
        return Skipped(reason=skip)
    sender = normalise_email(sender_address)
    if sender is None:
        raise ParseError(ERROR_NO_SENDER)

    message_id = _first_id(headers.get("message-id"))
    references = _ids(headers.get("references")) or _ids(headers.get("in-reply-to"))[:1]
    if len(references) > _MAX_REFERENCES:
        references = [references[0], *references[1 - _MAX_REFERENCES :]]
    chain = tuple(references) + (
        (message_id,) if message_id and message_id not in references else ()
    )
    provider_message_id = message_id or "sha256:" + hashlib.sha256(raw).hexdigest()

    leaves = list(_leaves(message))
    plain, html = _body_parts(leaves)
    text = _body_text(plain, html, config.max_text_chars * _WORK_FACTOR)
    _, reply_to = _first_address(headers.get("reply-to"))
    return ParsedMessage(
        channel="email",
        provider=PROVIDER,
        provider_message_id=provider_message_id,
        conversation_key=chain[0] if chain else provider_message_id,
        sent_at=_sent_at(headers.get("date")),
        identities=(Identity(kind="email", value=sender),),
        sender_name=sender_name or None,
        subject=subject,
        text=clean_text(_strip_quotes(text), config.max_text_chars),
        attachments=_attachments(leaves, (plain, html)),
        email_thread=EmailThread(
            message_id=message_id,
            references=chain,
            subject=subject,
            reply_to=normalise_email(reply_to),
        ),
    )


# --- headers ---------------------------------------------------------------------------


def _first_headers(message: Message) -> dict[str, str]:
    """First value of each header, unfolded, as it arrived.

    `raw_items` rather than the policy's header objects: those decode 8-bit header
    bytes as UTF-8 (GBK subjects turn into U+FFFD) and encoded words with the label's
    codec (GBK text labelled gb2312 loses characters); `_decode_words` does better.
    """
    found: dict[str, str] = {}
    for name, value in message.raw_items():
        found.setdefault(name.strip().lower(), _FOLD.sub("", str(value)))
    return found


def _skip_reason(
    message: Message, headers: dict[str, str], subject: str | None, sender_address: str
) -> str | None:
    # Bounces first: they often carry Auto-Submitted too, and "bounce" says more.
    content_type = _content_type(message)
    if content_type == "message/delivery-status":
        return SKIP_BOUNCE
    if content_type == "multipart/report":
        report_type = str(message.get_param("report-type", "delivery-status")).lower()
        return SKIP_BOUNCE if report_type == "delivery-status" else SKIP_REPORT
    if sender_address.partition("@")[0] in _BOUNCE_SENDERS:
        return SKIP_BOUNCE
    # RFC 3834: any Auto-Submitted value but "no" (comments and parameters aside).
    auto_submitted = headers.get("auto-submitted", "").split(";")[0].split("(")[0]
    if auto_submitted.strip().lower() not in ("", "no"):
        return SKIP_AUTO_REPLY
    if "x-autoreply" in headers or "x-autorespond" in headers:
        return SKIP_AUTO_REPLY
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in _AUTO_REPLY_PRECEDENCE:
        return SKIP_AUTO_REPLY
    if precedence in _BULK_PRECEDENCE:
        return SKIP_BULK
    if subject and _AUTO_REPLY_SUBJECT.match(subject):
        return SKIP_AUTO_REPLY
    return None


def _subject(value: str | None) -> str | None:
    if value is None:
        return None
    subject = _one_line(_decode_words(value), _MAX_SUBJECT_CHARS)
    return subject or None


def _first_address(value: str | None) -> tuple[str, str]:
    """(display name, lower-cased address) of the first mailbox; empty strings if none."""
    if value is None:
        return "", ""
    # Decode 8-bit bytes first so the address parser sees characters; encoded words
    # stay encoded until the display name has been split off (they may hide a comma).
    addresses = getaddresses([_decode_raw(value)])
    if not addresses:
        return "", ""
    name, address = addresses[0]
    return _one_line(_decode_words(name), MAX_LINE_CHARS), clean_line(address, 320).lower()


def _first_id(value: str | None) -> str | None:
    ids = _ids(value)
    return ids[0] if ids else None


def _ids(value: str | None) -> list[str]:
    """Message ids, angle brackets stripped, duplicates dropped, in header order."""
    if value is None:
        return []
    text = clean_line(_decode_raw(value), len(value))
    # Ids without brackets break the spec, but some mailers send a bare one.
    found = _MSG_ID.findall(text) or text.split()
    return list(dict.fromkeys(_normalise_id(found_id) for found_id in found))


def _normalise_id(value: str) -> str:
    # Ids become Kafka keys and database keys, so an overlong one is replaced by its
    # hash, the same way wherever it appears (own Message-ID or a later References).
    if len(value) <= MAX_ID_CHARS:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


def _sent_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        sent_at = parsedate_to_datetime(_one_line(_decode_raw(value), _MAX_SUBJECT_CHARS))
        # "-0000" means "zone unknown"; UTC is the least surprising reading.
        if sent_at.tzinfo is None:
            sent_at = sent_at.replace(tzinfo=UTC)
        return sent_at.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _one_line(value: str, max_chars: int) -> str:
    return clean_line(_WHITESPACE.sub(" ", value), max_chars)


# --- charsets --------------------------------------------------------------------------


def _decode_raw(value: str) -> str:
    """Header text with raw 8-bit bytes (kept by the parser as surrogates) decoded."""
    if not _SURROGATES.search(value):
        return value
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", value)
    return _decode_bytes(data, None)


def _decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded with our charset fallbacks.

    Adjacent words in one charset are joined before decoding, because mailers split
    long Chinese subjects between the bytes of one character.
    """
    value = _decode_raw(value)
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        data = _word_bytes(match.group(2), match.group(3))
        if data is None:
            continue
        between = value[position : match.start()]
        # RFC 2047 6.2: whitespace between two encoded words is not part of the text.
        if pending_charset is None or between.strip():
            if pending_charset is not None:
                out.append(_decode_bytes(bytes(pending), pending_charset))
                pending.clear()
            out.append(between)
        charset = match.group(1).partition("*")[0]  # RFC 2231 adds "*language"
        if pending_charset is not None and charset.lower() != pending_charset.lower():
            out.append(_decode_bytes(bytes(pending), pending_charset))
            pending.clear()
        pending_charset = charset
        pending += data
        position = match.end()
    if pending_charset is not None:
        out.append(_decode_bytes(bytes(pending), pending_charset))
    out.append(value[position:])
    return "".join(out)


def _word_bytes(encoding: str, text: str) -> bytes | None:
    data = text.encode("utf-8", "replace")
    try:
        if encoding in "bB":
            return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        return binascii.a2b_qp(data, header=True)
    except (binascii.Error, ValueError):
        return None


def _decode_bytes(data: bytes, declared: str | None) -> str:
    """Declared charset (and its supersets), then UTF-8, then GB18030, then lossy."""
    codec = _codec_name(declared)
    candidates = (*_CHARSET_CANDIDATES.get(codec, (codec,)), *_FALLBACK_CODECS) if codec else ()
    for candidate in candidates or _FALLBACK_CODECS:
        try:
            text = data.decode(candidate)
        except (LookupError, UnicodeError):
            continue
        # UTF-7 can decode to lone surrogates, which cannot be published as UTF-8.
        if not _SURROGATES.search(text):
            return text
    if codec:
        try:
            return _SURROGATES.sub("\ufffd", data.decode(codec, "replace"))
        except (LookupError, UnicodeError):
            pass
    # Every byte is a Latin-1 character: this cannot fail, and loses nothing.
    return data.decode("latin-1")


def _codec_name(label: str | None) -> str | None:
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().strip("\"'")).name
    except (LookupError, ValueError):
        return None
    return None if name in _NOT_MAIL_CODECS else name


# --- body ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Leaf:
    """What we read from one non-multipart MIME part, once."""

    content_type: str
    filename: str
    is_file: bool
    size_bytes: int
    text: str  # decoded for inline text parts only: the body candidates


# Listed, so the agent knows something is there, when a part's headers are unreadable.
_OPAQUE = _Leaf("application/octet-stream", "", is_file=True, size_bytes=0, text="")


def _leaves(message: Message) -> Iterator[_Leaf]:
    """The non-multipart parts, in document order; message/rfc822 stays one part.

    Iterative, unlike `walk()`: a deeply nested MIME tree must not exhaust the stack.
    """
    stack: list[Message] = [message]
    while stack:
        part = stack.pop()
        if _content_type(part).partition("/")[0] != "multipart":
            yield _read_leaf(part)
            continue
        payload = part.get_payload()
        # A multipart without its boundary keeps a str payload: nothing to descend into.
        if isinstance(payload, list):
            stack.extend(child for child in reversed(payload) if isinstance(child, Message))


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    # CPython's header parser raises IndexError, ValueError, ... on some garbled
    # parameters (a fuzzer finds them in seconds); the part then counts as opaque.
    except Exception:
        return _OPAQUE.content_type


def _read_leaf(part: Message) -> _Leaf:
    try:
        content_type = part.get_content_type()
        filename = part.get_filename() or ""
        is_file = bool(filename) or part.get_content_disposition() == "attachment"
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            # A forwarded message/rfc822 is kept parsed, not as bytes.
            inner = part.get_payload(0) if part.is_multipart() else None
            payload = inner.as_bytes() if isinstance(inner, Message) else b""
        is_text = content_type.startswith("text/") and not is_file
        return _Leaf(
            content_type=content_type,
            filename=_one_line(_decode_words(filename), _MAX_FILENAME_CHARS),
            is_file=is_file,
            size_bytes=len(payload),
            text=_decode_bytes(payload, part.get_content_charset()) if is_text else "",
        )
    # As in `_content_type`; the generator behind `as_bytes` can fail the same way.
    except Exception:
        return _OPAQUE


def _body_parts(leaves: list[_Leaf]) -> tuple[_Leaf | None, _Leaf | None]:
    """The first inline text/plain and text/html parts.

    Not `EmailMessage.get_body()`: it raises AttributeError on a multipart/related
    without parts (truncated mail), and it only looks at the root of a related part.
    """
    plain = next((leaf for leaf in leaves if _is_body(leaf, "text/plain")), None)
    html = next((leaf for leaf in leaves if _is_body(leaf, "text/html")), None)
    return plain, html


def _is_body(leaf: _Leaf, content_type: str) -> bool:
    return leaf.content_type == content_type and not leaf.is_file


def _body_text(plain: _Leaf | None, html: _Leaf | None, max_chars: int) -> str:
    text = plain.text[:max_chars] if plain is not None else ""
    # Some mailers send an empty or placeholder plain alternative next to the real HTML.
    if not text.strip() and html is not None:
        text = _html_to_text(html.text[:max_chars])
    return text


def _html_to_text(markup: str) -> str:
    if not markup.strip():
        return ""
    try:
        return str(get_text(markup, HtmlConfig(css=_HTML_CSS)))
    # lxml and inscriptis face hostile markup here; a crude strip beats losing the message.
    except Exception:
        return _HTML_TAG.sub(" ", markup)


def _strip_quotes(text: str) -> str:
    """The customer's new text: earlier messages, quotes and the signature removed.

    Top-posted replies are cut at the first reply header. An attribution line
    ("On ... wrote:", "在 ...写道：") followed by ">" lines only introduces a quote, so
    text after the quote (bottom-posting, inline answers) is kept. A forwarded
    message is content: everything from its marker on is kept.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ").split("\n")
    kept: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        if _FORWARD.fullmatch(stripped):
            kept.extend(lines[index:])
            break
        if _QUOTED.match(line):
            index += 1
            continue
        if line.rstrip() == "--" or _SEPARATOR.fullmatch(stripped):
            break
        if _starts_header_block(lines, index):
            break
        attribution = _attribution_lines(lines, index)
        if attribution:
            index += attribution
            following = index
            while following < len(lines) and not lines[following].strip():
                following += 1
            if following < len(lines) and not _QUOTED.match(lines[following]):
                break
            continue
        kept.append(line)
        index += 1
    while kept and (
        not kept[-1].strip()
        or _RULE_LINE.fullmatch(kept[-1])
        or _MOBILE_FOOTER.fullmatch(kept[-1].strip())
    ):
        kept.pop()
    stripped_text = _BLANK_RUNS.sub("\n\n", "\n".join(line.rstrip() for line in kept)).strip()
    # A bare forward in Outlook's style (no marker, just a header block) is all content.
    return stripped_text or text.strip()


def _starts_header_block(lines: list[str], index: int) -> bool:
    # Outlook: "From: ..." with "Sent: ..." (or Date, 发送时间, ...) a line or few below.
    if not _HEADER_FROM.match(lines[index].lstrip()):
        return False
    below = lines[index + 1 : index + 1 + _HEADER_BLOCK_LINES]
    return any(_HEADER_SENT.match(line.lstrip()) for line in below)


def _attribution_lines(lines: list[str], index: int) -> int:
    """How many lines (mailers wrap long ones) the attribution starting here spans; 0 if none."""
    first = lines[index].strip()
    if first.startswith("On "):
        endings: tuple[str, ...] = ("wrote:",)
    elif _ZH_ATTRIBUTION_START.match(first):
        endings = _ZH_ATTRIBUTION_END
    elif first.endswith(_ZH_ATTRIBUTION_END):
        # "2026年11月20日 10:00，客服 写道：" on one line, with no leading 在/于.
        endings = _ZH_ATTRIBUTION_END
    else:
        return 0
    joined = ""
    for count, line in enumerate(lines[index : index + _ATTRIBUTION_LINES], start=1):
        joined = f"{joined} {line.strip()}"
        if len(joined) > _MAX_ATTRIBUTION_CHARS:
            return 0
        # Real attributions carry a date; "your agent wrote:" in prose does not.
        if joined.endswith(endings) and any(char.isdigit() for char in joined):
            return count
    return 0


# --- attachments -----------------------------------------------------------------------


def _attachments(
    leaves: list[_Leaf], body: tuple[_Leaf | None, _Leaf | None]
) -> tuple[Attachment, ...]:
    """Metadata of every attached or inline file, in document order; never the content."""
    found = (
        Attachment(name=leaf.filename, content_type=leaf.content_type, size_bytes=leaf.size_bytes)
        for leaf in leaves
        if not any(leaf is body_leaf for body_leaf in body)
        and leaf.content_type not in _NOT_ATTACHMENTS
        # Unnamed inline text is an alternative rendering of the body, or stray text;
        # an unnamed inline image is a pasted screenshot, worth listing.
        and (leaf.is_file or not leaf.content_type.startswith("text/"))
    )
    return tuple(islice(found, _MAX_ATTACHMENTS))
