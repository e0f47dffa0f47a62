"""Email parser: raw RFC 5322 bytes as mail clients and MTAs really send them."""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import quopri
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.model import ParsedMessage, ParseError, ParserConfig, Skipped
from services.ingest.parsers.email import parse_email
from shared.contracts.messages import Attachment, EmailThread, Identity
from tests.support.parsers import check_contract

SUPPORT = "support@exchange.example"
CONFIG = ParserConfig(own_email_addresses=frozenset({"Support@Exchange.example"}))
# Every reason the parser may give: they become Prometheus label values.
REASONS = {
    "email: empty",
    "email: no sender",
    "email: malformed",
    "email: auto reply",
    "email: bulk",
    "email: bounce",
    "email: report",
    "email: own address",
}


def mail(headers: str, body: bytes | str = b"") -> bytes:
    """Headers written with \\n, sent as SMTP does: CRLF line ends, blank line, body."""
    head = headers.strip("\n").replace("\n", "\r\n").encode("utf-8")
    data = body.encode("utf-8") if isinstance(body, str) else body
    return head + b"\r\n\r\n" + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def parse_one(raw: bytes, config: ParserConfig = CONFIG) -> ParsedMessage:
    result = parse_email(raw, config)
    assert len(result) == 1
    assert isinstance(result[0], ParsedMessage), result[0]
    return result[0]


def skip_reason(raw: bytes) -> str:
    result = parse_email(raw, CONFIG)
    assert len(result) == 1
    assert isinstance(result[0], Skipped), result[0]
    return result[0].reason


def error_reason(raw: bytes) -> str:
    with pytest.raises(ParseError) as caught:
        parse_email(raw, CONFIG)
    return caught.value.reason


HEADERS = """\
Return-Path: <li.wei@example.cn>
Received: from mail.example.cn (mail.example.cn [203.0.113.7])
\tby mx.exchange.example with ESMTPS id 4Xq; Thu, 20 Nov 2026 10:15:02 +0000
From: "Li Wei" <Li.Wei@Example.CN>
To: Exchange Support <support@exchange.example>
Subject: Withdrawal pending for 6 hours
Date: Thu, 20 Nov 2026 18:15:00 +0800
Message-ID: <CAF=1a2b3c@mail.example.cn>
MIME-Version: 1.0"""

PLAIN = mail(
    HEADERS + "\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit",
    "Hello,\n\nMy USDT withdrawal (order 88123) is still pending.\nPlease check.\n",
)


# --- the message and its metadata --------------------------------------------------------


def test_plain_message_becomes_one_parsed_message() -> None:
    parsed = parse_one(PLAIN)

    assert parsed == ParsedMessage(
        channel="email",
        provider="smtp",
        provider_message_id="CAF=1a2b3c@mail.example.cn",
        conversation_key="CAF=1a2b3c@mail.example.cn",
        sent_at=datetime(2026, 11, 20, 10, 15, tzinfo=UTC),
        identities=(Identity(kind="email", value="li.wei@example.cn"),),
        sender_name="Li Wei",
        subject="Withdrawal pending for 6 hours",
        text="Hello,\n\nMy USDT withdrawal (order 88123) is still pending.\nPlease check.",
        email_thread=EmailThread(
            message_id="CAF=1a2b3c@mail.example.cn",
            references=("CAF=1a2b3c@mail.example.cn",),
            subject="Withdrawal pending for 6 hours",
        ),
    )


def test_reply_to_is_where_replies_go() -> None:
    raw = mail(HEADERS + "\nReply-To: Li Wei <Wei.Li+support@Work.Example>", "Please help.")

    thread = parse_one(raw).email_thread

    assert thread is not None
    assert thread.reply_to == "wei.li+support@work.example"


def test_reply_joins_the_conversation_of_its_root() -> None:
    # The customer replies to our answer, which replied to their first mail.
    raw = mail(
        HEADERS.replace("Subject: Withdrawal", "Subject: Re: Withdrawal")
        + "\nIn-Reply-To: <agent-reply-1@exchange.example>"
        + "\nReferences: <first@mail.example.cn>\n <agent-reply-1@exchange.example>",
        "Still pending.",
    )

    parsed = parse_one(raw)

    assert parsed.conversation_key == "first@mail.example.cn"
    assert parsed.email_thread is not None
    assert parsed.email_thread.references == (
        "first@mail.example.cn",
        "agent-reply-1@exchange.example",
        "CAF=1a2b3c@mail.example.cn",
    )


def test_in_reply_to_alone_still_threads() -> None:
    raw = mail(HEADERS + "\nIn-Reply-To: <agent-reply-1@exchange.example>", "Any news?")

    parsed = parse_one(raw)

    assert parsed.conversation_key == "agent-reply-1@exchange.example"
    assert parsed.email_thread is not None
    assert parsed.email_thread.references == (
        "agent-reply-1@exchange.example",
        "CAF=1a2b3c@mail.example.cn",
    )


def test_long_thread_keeps_its_root_and_the_latest_references() -> None:
    ids = [f"<m{n}@mail.example.cn>" for n in range(30)]
    raw = mail(HEADERS + "\nReferences: " + "\n ".join(ids), "Thirty mails later: still stuck.")

    parsed = parse_one(raw)

    assert parsed.conversation_key == "m0@mail.example.cn"
    assert parsed.email_thread is not None
    assert parsed.email_thread.references == (
        "m0@mail.example.cn",
        *(f"m{n}@mail.example.cn" for n in range(11, 30)),
        "CAF=1a2b3c@mail.example.cn",
    )


def test_overlong_ids_are_hashed_the_same_way_everywhere() -> None:
    long_id = "x" * 300 + "@mail.example.cn"
    first = parse_one(mail(HEADERS.replace("CAF=1a2b3c@mail.example.cn", long_id), "Hi"))
    reply = parse_one(mail(HEADERS + f"\nReferences: <{long_id}>", "Hi again"))

    assert first.provider_message_id == "sha256:" + hashlib.sha256(long_id.encode()).hexdigest()
    assert reply.conversation_key == first.conversation_key == first.provider_message_id


def test_missing_message_id_falls_back_to_a_stable_hash_of_the_bytes() -> None:
    raw = mail(HEADERS.replace("Message-ID: <CAF=1a2b3c@mail.example.cn>\n", ""), "Hi")

    first, again = parse_one(raw), parse_one(raw)

    expected = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert first.provider_message_id == again.provider_message_id == expected
    assert first.conversation_key == expected
    assert first.email_thread is not None
    assert first.email_thread.message_id is None
    assert first.email_thread.references == ()


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Thu, 20 Nov 2026 18:15:00 +0800", datetime(2026, 11, 20, 10, 15, tzinfo=UTC)),
        # "-0000" means the zone is unknown: read as UTC rather than dropped.
        ("Thu, 20 Nov 2026 10:15:00 -0000", datetime(2026, 11, 20, 10, 15, tzinfo=UTC)),
        ("yesterday around noon", None),
        ("Thu, 31 Feb 2026 25:99:00 +0000", None),
    ],
)
def test_date_header_becomes_an_aware_utc_timestamp(date: str, expected: datetime | None) -> None:
    raw = mail(HEADERS.replace("Thu, 20 Nov 2026 18:15:00 +0800", date), "Hi")

    assert parse_one(raw).sent_at == expected


def test_missing_date_gives_no_timestamp() -> None:
    raw = mail(HEADERS.replace("Date: Thu, 20 Nov 2026 18:15:00 +0800\n", ""), "Hi")

    assert parse_one(raw).sent_at is None


# --- MIME structure -----------------------------------------------------------------------


def test_multipart_alternative_uses_the_plain_part() -> None:
    raw = mail(
        HEADERS + '\nContent-Type: multipart/alternative; boundary="000000000000a1b2"',
        """--000000000000a1b2
Content-Type: text/plain; charset="UTF-8"

My deposit of 0.5 BTC has not arrived.

--000000000000a1b2
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">My deposit of <b>0.5 BTC</b> has not arrived (HTML).</div>

--000000000000a1b2--
""",
    )

    parsed = parse_one(raw)

    assert parsed.text == "My deposit of 0.5 BTC has not arrived."
    assert parsed.attachments == ()


def test_empty_plain_alternative_falls_back_to_html() -> None:
    raw = mail(
        HEADERS + "\nContent-Type: multipart/alternative; boundary=b1",
        """--b1
Content-Type: text/plain; charset=utf-8

\x20
--b1
Content-Type: text/html; charset=utf-8

<p>Only the HTML part has the text.</p>
--b1--
""",
    )

    assert parse_one(raw).text == "Only the HTML part has the text."


def test_html_only_mail_becomes_text_without_script_style_or_quoted_thread() -> None:
    raw = mail(
        HEADERS + "\nContent-Type: text/html; charset=utf-8",
        """<html><head><style>p { color: red; }</style>
<script>alert("x")</script></head>
<body><p>My account was <b>hacked</b>&nbsp;today.</p>
<ul><li>Lost: 2 ETH</li><li>Time: 09:00</li></ul>
<div>Please freeze it.</div>
<blockquote type="cite">Earlier message we sent</blockquote>
</body></html>""",
    )

    assert parse_one(raw).text == (
        "My account was hacked today.\n\n  * Lost: 2 ETH\n  * Time: 09:00\nPlease freeze it."
    )


def test_attachments_are_metadata_only() -> None:
    pdf = b"%PDF-1.7 bank statement SECRET-CONTENT " * 10
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    raw = mail(
        HEADERS + '\nContent-Type: multipart/mixed; boundary="mixed"',
        b"""--mixed
Content-Type: multipart/related; boundary="rel"

--rel
Content-Type: text/html; charset=utf-8

<p>Screenshot below, statement attached.</p><img src="cid:shot">
--rel
Content-Type: image/png
Content-ID: <shot>
Content-Transfer-Encoding: base64

"""
        + base64.encodebytes(png)
        + b"""--rel--

--mixed
Content-Type: application/pdf; name="statement.pdf"
Content-Disposition: attachment; filename*=UTF-8''%E5%AF%B9%E8%B4%A6%E5%8D%95.pdf
Content-Transfer-Encoding: base64

"""
        + base64.encodebytes(pdf)
        + b"""--mixed
Content-Type: application/pgp-signature; name="signature.asc"

-----BEGIN PGP SIGNATURE-----
-----END PGP SIGNATURE-----
--mixed--
""",
    )

    parsed = parse_one(raw)

    assert parsed.text == "Screenshot below, statement attached."
    assert parsed.attachments == (
        Attachment(name="", content_type="image/png", size_bytes=len(png)),
        Attachment(name="对账单.pdf", content_type="application/pdf", size_bytes=len(pdf)),
    )
    assert "SECRET-CONTENT" not in parsed.model_dump_json()


def test_attachment_only_mail_has_empty_text() -> None:
    raw = mail(
        HEADERS + "\nContent-Type: multipart/mixed; boundary=m",
        b"""--m
Content-Type: image/jpeg
Content-Disposition: attachment; filename="=?UTF-8?B?5oiq5Zu+LmpwZw==?="
Content-Transfer-Encoding: base64

/9j/4AAQSkZJRgABAQ==
--m--
""",
    )

    parsed = parse_one(raw)

    assert parsed.text == ""
    assert parsed.attachments == (
        Attachment(name="截图.jpg", content_type="image/jpeg", size_bytes=13),
    )


def test_forwarded_message_attachment_is_listed_not_read() -> None:
    inner = mail("From: scammer@phish.example\nSubject: Verify your wallet", "Send your seed")
    raw = mail(
        HEADERS + "\nContent-Type: multipart/mixed; boundary=m",
        b"--m\nContent-Type: text/plain\n\nIs this email from you?\n--m\n"
        b"Content-Type: message/rfc822\n\n" + inner + b"\n--m--\n",
    )

    parsed = parse_one(raw)

    assert parsed.text == "Is this email from you?"
    assert [(a.name, a.content_type) for a in parsed.attachments] == [("", "message/rfc822")]
    assert parsed.attachments[0].size_bytes > len("Send your seed")


# --- charsets and transfer encodings -------------------------------------------------------


def test_gbk_text_labelled_gb2312_keeps_every_character() -> None:
    # 喆 and 镕 are GBK but not GB2312: decoding as labelled would lose them.
    text = "我叫王喆，朱镕的账户充值未到账"
    with pytest.raises(UnicodeEncodeError):
        text.encode("gb2312")
    subject = base64.b64encode("王喆的充值".encode("gbk")).decode()
    raw = mail(
        HEADERS.replace(
            "Subject: Withdrawal pending for 6 hours", f"Subject: =?gb2312?B?{subject}?="
        )
        + "\nContent-Type: text/plain; charset=gb2312\nContent-Transfer-Encoding: 8bit",
        text.encode("gbk"),
    )

    parsed = parse_one(raw)

    assert parsed.text == text
    assert parsed.subject == "王喆的充值"


@pytest.mark.parametrize(
    ("charset", "transfer", "text"),
    [
        ("gb18030", "8bit", "提现被拒绝 €"),
        ("big5", "8bit", "我的提現還沒到帳"),
        ("iso-2022-jp", "7bit", "出金がまだ届いていません"),
        ("utf-8", "base64", "充值未到账 — deposit missing"),
        ("utf-8", "quoted-printable", "账户被盗，请立即冻结 café"),
        ("gbk", "base64", "未授权提现"),
        ("shift_jis", "8bit", "口座がロックされました"),
    ],
)
def test_charsets_and_transfer_encodings(charset: str, transfer: str, text: str) -> None:
    data = text.encode(charset)
    if transfer == "base64":
        data = base64.encodebytes(data)
    elif transfer == "quoted-printable":
        data = quopri.encodestring(data)
    raw = mail(
        HEADERS + f"\nContent-Type: text/plain; charset={charset}"
        f"\nContent-Transfer-Encoding: {transfer}",
        data,
    )

    assert parse_one(raw).text == text


@pytest.mark.parametrize(
    ("charset", "body", "text"),
    [
        # An unknown label (LookupError) falls back to UTF-8, then GB18030.
        ("x-unknown-charset", "余额不对".encode(), "余额不对"),
        ("x-unknown-charset", "余额不对".encode("gbk"), "余额不对"),
        # Labelled ASCII, sent as UTF-8.
        ("us-ascii", "Café order".encode(), "Café order"),
        # Not a text codec at all.
        ("base64", b"plain words", "plain words"),
        # UTF-8 with one broken byte keeps the rest.
        ("utf-8", b"fine \xff text", "fine \ufffd text"),
    ],
)
def test_mislabelled_and_unknown_charsets_fall_back(charset: str, body: bytes, text: str) -> None:
    raw = mail(HEADERS + f'\nContent-Type: text/plain; charset="{charset}"', body)

    assert parse_one(raw).text == text


def test_encoded_word_subject_split_inside_a_character_is_joined() -> None:
    # Mailers cut long B-encoded subjects every N bytes, even inside a character.
    data = "充值未到账，请帮忙".encode()
    first, second = base64.b64encode(data[:10]).decode(), base64.b64encode(data[10:]).decode()
    raw = mail(
        HEADERS.replace(
            "Subject: Withdrawal pending for 6 hours",
            f"Subject: Re: =?UTF-8?B?{first}?=\n =?UTF-8?B?{second}?= [#123]",
        ),
        "Hi",
    )

    parsed = parse_one(raw)

    assert parsed.subject == "Re: 充值未到账，请帮忙 [#123]"
    assert parsed.email_thread is not None
    assert parsed.email_thread.subject == "Re: 充值未到账，请帮忙 [#123]"


@pytest.mark.parametrize("charset", ["utf-8", "gbk"])
def test_raw_8bit_chinese_headers_are_decoded(charset: str) -> None:
    head = (
        "From: 王小明 <xiaoming@example.cn>\r\nSubject: 账户被盗\r\n"
        "Message-ID: <8bit@example.cn>\r\nContent-Type: text/plain; charset=" + charset
    )
    raw = head.encode(charset) + b"\r\n\r\n" + "请冻结".encode(charset)

    parsed = parse_one(raw)

    assert (parsed.sender_name, parsed.subject, parsed.text) == ("王小明", "账户被盗", "请冻结")


def test_encoded_word_display_name() -> None:
    name = base64.b64encode("张三".encode()).decode()
    raw = mail(
        HEADERS.replace('"Li Wei" <Li.Wei@Example.CN>', f"=?utf-8?B?{name}?= <z@x.cn>"), "Hi"
    )

    parsed = parse_one(raw)

    assert parsed.sender_name == "张三"
    assert parsed.identities == (Identity(kind="email", value="z@x.cn"),)


# --- quoted replies and signatures -----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        # Gmail, attribution wrapped over two lines.
        """Still not credited, tx hash 0xabc123.

On Thu, Nov 20, 2026 at 10:00 AM Exchange Support <
support@exchange.example> wrote:

> Please send us the transaction hash.
> Regards
""",
        # Outlook, with its rule line.
        """Still not credited, tx hash 0xabc123.

________________________________
From: Exchange Support <support@exchange.example>
Sent: Thursday, November 20, 2026 10:00 AM
To: Li Wei <li.wei@example.cn>
Subject: RE: Deposit

Please send us the transaction hash.
""",
        """Still not credited, tx hash 0xabc123.

-----Original Message-----
From: Exchange Support
Sent: Thursday, November 20, 2026 10:00 AM
Please send us the transaction hash.
""",
        # Signature delimiter, and a mobile footer.
        """Still not credited, tx hash 0xabc123.
--\x20
Li Wei | Senior Trader
+86 10 5555 0100
""",
        """Still not credited, tx hash 0xabc123.

Sent from my iPhone
""",
        # Quoted lines without any attribution.
        """> Please send us the transaction hash.
Still not credited, tx hash 0xabc123.
""",
    ],
    ids=["gmail", "outlook", "original-message", "signature", "mobile-footer", "quoted"],
)
def test_english_quotes_and_signatures_are_removed(body: str) -> None:
    raw = mail(HEADERS, body)

    assert parse_one(raw).text == "Still not credited, tx hash 0xabc123."


@pytest.mark.parametrize(
    "body",
    [
        # Netease / Foxmail.
        """充值还没到账，哈希是 0xabc123。

在 2026年11月20日 10:00，"Exchange Support" <support@exchange.example> 写道：
> 请提供交易哈希。
""",
        # Gmail in Chinese.
        """充值还没到账，哈希是 0xabc123。

Exchange Support <support@exchange.example> 于2026年11月20日周四 10:00写道：

> 请提供交易哈希。
""",
        # QQ Mail.
        """充值还没到账，哈希是 0xabc123。

------------------ 原始邮件 ------------------
发件人: "Exchange Support"<support@exchange.example>;
发送时间: 2026年11月20日(星期四) 上午10:00
收件人: "王小明"<xiaoming@example.cn>;
主题: 回复：充值

请提供交易哈希。
""",
        # Outlook in Chinese.
        """充值还没到账，哈希是 0xabc123。

发件人: Exchange Support <support@exchange.example>
发送时间: 2026年11月20日 10:00
收件人: 王小明
主题: 答复: 充值

请提供交易哈希。
""",
        """充值还没到账，哈希是 0xabc123。

发自我的iPhone
""",
    ],
    ids=["netease", "gmail-zh", "qq", "outlook-zh", "mobile-footer-zh"],
)
def test_chinese_quotes_are_removed(body: str) -> None:
    raw = mail(HEADERS, body)

    assert parse_one(raw).text == "充值还没到账，哈希是 0xabc123。"


def test_text_after_a_quote_is_kept() -> None:
    # Bottom-posting and inline answers: the attribution only introduces the quote.
    raw = mail(
        HEADERS,
        """On Thu, Nov 20, 2026 at 10:00 AM Exchange Support <support@exchange.example> wrote:
> Which network did you use?

TRC20.

> And the amount?

500 USDT.
""",
    )

    assert parse_one(raw).text == "TRC20.\n\n500 USDT."


def test_prose_that_mentions_writing_is_kept() -> None:
    body = "On Monday your agent wrote:\nthat the withdrawal was sent. It was not."
    raw = mail(HEADERS, body)

    assert parse_one(raw).text == body


def test_forwarded_message_is_content() -> None:
    raw = mail(
        HEADERS,
        """Is this really from you?

---------- Forwarded message ---------
From: Exchange Security <security@exchange-verify.example>
Date: Thu, Nov 20, 2026 at 9:00 AM
Subject: Verify your wallet

Reply with your 12-word phrase to unlock withdrawals.
""",
    )

    text = parse_one(raw).text

    assert text.startswith("Is this really from you?\n\n---------- Forwarded message")
    assert text.endswith("Reply with your 12-word phrase to unlock withdrawals.")


def test_html_reply_quote_is_removed() -> None:
    raw = mail(
        HEADERS + "\nContent-Type: text/html; charset=utf-8",
        """<div dir="ltr">Still pending.</div><br><div class="gmail_quote">
<div dir="ltr" class="gmail_attr">On Thu, Nov 20, 2026 at 10:00 AM Exchange Support
&lt;support@exchange.example&gt; wrote:<br></div>
<blockquote class="gmail_quote">Please wait 24 hours.</blockquote></div>""",
    )

    assert parse_one(raw).text == "Still pending."


# --- limits ----------------------------------------------------------------------------


def test_text_is_truncated_at_max_text_chars() -> None:
    raw = mail(HEADERS, "x" * 500)

    parsed = parse_one(raw, ParserConfig(max_text_chars=120))

    assert parsed.text == "x" * 120


@pytest.mark.timeout(10)
def test_adversarial_quote_headers_take_linear_time() -> None:
    # email-reply-parser needs minutes for a few thousand "On "; customers control this text.
    body = "On " * 20_000 + "\n" + "On 1 wrote:\n" * 5_000 + "在 1" * 10_000
    started = time.perf_counter()

    parse_one(mail(HEADERS, body))

    assert time.perf_counter() - started < 5


# --- not a customer's message -----------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("Auto-Submitted: auto-replied", "email: auto reply"),
        ("Auto-Submitted: auto-generated (vacation)", "email: auto reply"),
        ("X-Autoreply: yes", "email: auto reply"),
        ("X-Autorespond: Out of office", "email: auto reply"),
        ("Precedence: auto_reply", "email: auto reply"),
        ("Precedence: bulk", "email: bulk"),
        ("Precedence: junk", "email: bulk"),
    ],
)
def test_auto_replies_and_bulk_mail_are_skipped(extra: str, reason: str) -> None:
    assert skip_reason(mail(HEADERS + "\n" + extra, "I am away")) == reason


def test_auto_submitted_no_is_a_person() -> None:
    assert parse_one(mail(HEADERS + "\nAuto-Submitted: no", "Hi")).text == "Hi"


@pytest.mark.parametrize(
    "subject",
    [
        "自动回复: Withdrawal pending",
        "【自动回复】您好",
        "=?UTF-8?B?6Ieq5Yqo5Zue5aSN77ya5YWF5YC8?=",  # 自动回复：充值
        "Automatic reply: Withdrawal pending",
        "Out of Office: Withdrawal pending",
    ],
)
def test_auto_reply_subjects_are_skipped(subject: str) -> None:
    raw = mail(HEADERS.replace("Withdrawal pending for 6 hours", subject), "休假中")

    assert skip_reason(raw) == "email: auto reply"


def test_delivery_status_report_is_a_bounce() -> None:
    raw = mail(
        """From: Mail Delivery System <MAILER-DAEMON@mx.example.cn>
To: support@exchange.example
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="r"
""",
        """--r
Content-Type: text/plain

The mail system could not deliver your message.
--r
Content-Type: message/delivery-status

Final-Recipient: rfc822; nobody@example.cn
Action: failed
Status: 5.1.1
--r--
""",
    )

    assert skip_reason(raw) == "email: bounce"


@pytest.mark.parametrize(
    "sender",
    ["MAILER-DAEMON@mx.example.cn", "postmaster@example.cn", "MAILER-DAEMON (Mail Delivery)"],
)
def test_mail_from_mailer_daemon_or_postmaster_is_a_bounce(sender: str) -> None:
    raw = mail(f"From: {sender}\nSubject: Returned mail\nContent-Type: text/plain", "failed")

    assert skip_reason(raw) == "email: bounce"


def test_read_receipt_is_skipped_as_a_report() -> None:
    raw = mail(
        HEADERS
        + '\nContent-Type: multipart/report; report-type="disposition-notification"; boundary=r',
        "--r\nContent-Type: text/plain\n\nRead.\n--r--\n",
    )

    assert skip_reason(raw) == "email: report"


def test_mail_from_our_own_address_is_skipped() -> None:
    raw = mail(HEADERS.replace('"Li Wei" <Li.Wei@Example.CN>', f"Support <{SUPPORT.upper()}>"))

    assert skip_reason(raw) == "email: own address"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "email: empty"),
        (b"  \r\n\r\n ", "email: empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10", "email: no sender"),
        (b"just some words, not an email", "email: no sender"),
        (mail("Subject: hello\nTo: support@exchange.example", "no From"), "email: no sender"),
        (mail("From: not an address\nSubject: hello", "Hi"), "email: no sender"),
    ],
)
def test_not_an_email_raises_parse_error(raw: bytes, reason: str) -> None:
    assert error_reason(raw) == reason


def test_thousands_of_nested_multiparts_raise_parse_error() -> None:
    nested = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(5_000)
    )

    assert error_reason(b"From: a@example.com\r\n" + nested) == "email: too many parts"


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n", b"\r"])
def test_a_mail_of_thousands_of_parts_is_refused_before_parsing(line_end: bytes) -> None:
    # 10,000 parts fit in half a megabyte and cost the stdlib parser half a minute (it
    # parses each multipart's Content-Type again and again); real mail has a few dozen.
    part = b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    raw = mail("From: a@example.com\nContent-Type: multipart/mixed; boundary=b", part * 10_000)
    started = time.perf_counter()
    assert error_reason(raw.replace(b"\r\n", line_end)) == "email: too many parts"
    assert time.perf_counter() - started < 0.5


def test_boundaries_in_rfc2231_form_count_every_dash_line() -> None:
    part = b"--bc\r\nContent-Type: multipart/mixed; boundary*0=b; boundary*1=c\r\n\r\n"
    raw = mail("From: a@example.com\nContent-Type: multipart/mixed; boundary*0=b; boundary*1=c")
    assert error_reason(raw + part * 1_000) == "email: too many parts"


def test_a_mail_with_a_few_hundred_parts_and_dash_lines_in_its_text_is_read() -> None:
    text = "my deposit is missing\n" + "-- not a boundary\n" * 1_000
    attachments = "".join(
        f"--b\nContent-Type: image/png\nContent-Disposition: attachment; filename=s{i}.png\n"
        "Content-Transfer-Encoding: base64\n\niVBORw0KGgo=\n"
        for i in range(300)
    )
    body = f"--b\nContent-Type: text/plain\n\n{text}\n{attachments}--b--\n"
    message = parse_one(
        mail("From: a@example.com\nContent-Type: multipart/mixed; boundary=b", body)
    )
    assert "my deposit is missing" in message.text
    assert len(message.attachments) == 100  # the listed maximum


def test_five_thousand_recipients_cost_milliseconds() -> None:
    # To and Cc are not read; From is read for its first mailbox only.
    many = ", ".join(f'"Person {i}" <p{i}@example.com>' for i in range(5_000))
    raw = mail(f"From: {many}\nTo: {many}\nCc: {many}\nSubject: hi\nMessage-ID: <m@x>", "help")
    started = time.perf_counter()
    message = parse_one(raw)
    assert time.perf_counter() - started < 1.0
    assert message.identities == (Identity(kind="email", value="p0@example.com"),)


# --- robustness --------------------------------------------------------------------------


def test_truncated_related_part_does_not_lose_the_text() -> None:
    # A multipart/related cut off before its first boundary: the stdlib's get_body()
    # raises AttributeError on it.
    raw = mail(
        HEADERS + "\nContent-Type: multipart/alternative; boundary=a",
        """--a
Content-Type: multipart/related; boundary=r

<p>cut off here
--a
Content-Type: text/plain

My withdrawal is stuck.
--a--
""",
    )

    parsed = parse_one(raw)

    assert (parsed.text, parsed.attachments) == ("My withdrawal is stuck.", ())


def test_garbled_content_type_parameter_keeps_the_text() -> None:
    # The modern header parser raises IndexError on a parameter cut after its "*".
    raw = mail(HEADERS + "\nContent-Type: text/plain; charset*", "Header cut off, text intact.")

    parsed = parse_one(raw)

    assert (parsed.text, parsed.subject) == (
        "Header cut off, text intact.",
        "Withdrawal pending for 6 hours",
    )


def test_unreadable_attachment_headers_list_an_opaque_file() -> None:
    raw = mail(
        HEADERS + "\nContent-Type: multipart/mixed; boundary=m",
        """--m
Content-Type: text/plain

See attached.
--m
Content-Type: image/png
Content-Disposition: attachment; filename*

iVBORw0KGgo=
--m--
""",
    )

    parsed = parse_one(raw)

    assert parsed.text == "See attached."
    assert parsed.attachments == (
        Attachment(name="", content_type="application/octet-stream", size_bytes=0),
    )


def check_email(raw: bytes) -> None:
    """Whatever the bytes: one result, or a ParseError with a known reason."""
    assert len(check_contract(parse_email, raw, CONFIG, REASONS)) <= 1


def _corpus_dir() -> Path | None:
    try:
        package = importlib.import_module("test.test_email")
    except ImportError:
        return None
    path = Path(os.path.dirname(package.__file__ or "")) / "data"
    return path if path.is_dir() else None


CORPUS = _corpus_dir()


@pytest.mark.skipif(CORPUS is None, reason="this Python ships without its test suite")
def test_cpython_email_corpus_parses_or_raises_parse_error() -> None:
    assert CORPUS is not None
    files = sorted(path for path in CORPUS.iterdir() if path.is_file())
    outcomes: dict[str, int] = {}
    for path in files:
        raw = path.read_bytes()
        check_email(raw)
        try:
            kind = type(parse_email(raw, CONFIG)[0]).__name__
        except ParseError:
            kind = "ParseError"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    # The corpus holds real messages as well as images: both kinds must show up.
    assert outcomes.get("ParsedMessage", 0) >= 20
    assert outcomes.get("ParseError", 0) >= 10


VALID_MESSAGES = [
    PLAIN,
    mail(
        HEADERS + "\nReferences: <a@x> <b@y>\nContent-Type: multipart/alternative; boundary=b1",
        "--b1\nContent-Type: text/plain; charset=gb2312\nContent-Transfer-Encoding: base64\n\n"
        + base64.b64encode("充值未到账".encode("gbk")).decode()
        + "\n--b1\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: "
        "quoted-printable\n\n<p>=E5=85=85=E5=80=BC</p><blockquote>old</blockquote>\n--b1--\n",
    ),
    mail(
        HEADERS.replace("Withdrawal pending for 6 hours", "=?gb2312?B?s+TWtcO7tb3Vyw==?=")
        + "\nContent-Type: multipart/mixed; boundary=m",
        "--m\nContent-Type: text/plain\n\nHi\n\nOn 1 Jan 2026 X wrote:\n> old\n--m\n"
        'Content-Type: image/png\nContent-Disposition: attachment; filename="a.png"\n'
        "Content-Transfer-Encoding: base64\n\niVBORw0KGgo=\n--m--\n",
    ),
]
SPLICES = [
    b"\r\n",
    b"\r\n\r\n",
    b'Content-Type: multipart/mixed; boundary="zz"\r\n',
    b'Content-Type: text/html; charset="x-unknown"\r\n',
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Disposition: attachment; filename*=gb2312''%B3%E4\r\n",
    b"Subject: =?gb2312?B?s+TW?= =?utf-8?Q?=E5=85?=\r\n",
    b"From: =?utf-8?B?5byg?= <a@b.example>, c@d\r\n",
    b"References: <<>> <a@\r\n",
    b"--b1\r\n",
    b"--zz--\r\n",
    b"\xff\xfe\x00",
    b"=?",
    b"> ",
]


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(VALID_MESSAGES)))
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(raw)))
        operation = draw(st.sampled_from(["flip", "truncate", "splice", "delete"]))
        if operation == "flip" and at < len(raw):
            raw[at] ^= draw(st.integers(1, 255))
        elif operation == "truncate":
            del raw[at:]
        elif operation == "splice":
            raw[at:at] = draw(st.sampled_from(SPLICES))
        else:
            del raw[at : at + draw(st.integers(1, 40))]
    return bytes(raw)


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(raw=st.binary(max_size=2_000))
def test_random_bytes_only_raise_parse_error(raw: bytes) -> None:
    check_email(raw)


@PROPERTY
@given(raw=mutated_messages())
def test_mutated_messages_only_raise_parse_error(raw: bytes) -> None:
    check_email(raw)


# Garbled MIME parameters (RFC 2231 continuations, stray quotes and encoded words)
# reach code paths in CPython's header parser that raise IndexError and friends.
MIME_ATOMS = [
    *("name", "filename", "charset", "boundary", "report-type", "attachment", "inline"),
    *("filename*", "charset*", "name*0*", "; x*"),
    *("=", ";", '"', "'", "''", "*", "*0*", "*1", "%E4%B8", "(", ")", "<", ">", ",", "@"),
    *(" ", "\t", "\r\n ", "\\", "/", ":", "--", "\udcff", "张"),
    *("text/plain", "text/html", "multipart/mixed", "message/rfc822", "image/png"),
    *("utf-8", "gb2312", "x-unknown", "base64", "quoted-printable", "=?utf-8?B?5byg?="),
]
PART_HEADERS = ["Content-Type", "Content-Disposition", "Content-Transfer-Encoding", "Subject"]
garbled = st.lists(st.sampled_from(MIME_ATOMS), max_size=12).map("".join)


@st.composite
def mime_parts(draw: st.DrawFn, depth: int = 0) -> str:
    headers = draw(st.lists(st.tuples(st.sampled_from(PART_HEADERS), garbled), max_size=4))
    lines = [f"{name}: {value}" for name, value in headers]
    if depth < 2 and draw(st.booleans()):
        subtype = draw(st.sampled_from(["mixed", "alternative", "related", "report"]))
        lines.append(f"Content-Type: multipart/{subtype}; boundary=b{depth}")
        children = draw(st.lists(mime_parts(depth + 1), max_size=3))
        body = "".join(f"--b{depth}\r\n{child}\r\n" for child in children)
        body += draw(st.sampled_from(["", f"--b{depth}--\r\n"]))
    else:
        body = draw(garbled)
    return "\r\n".join(lines) + "\r\n\r\n" + body


@PROPERTY
@given(part=mime_parts())
def test_garbled_mime_headers_only_raise_parse_error(part: str) -> None:
    raw = "From: Ann <ann@example.com>\r\n" + part
    check_email(raw.encode("utf-8", "surrogateescape"))
