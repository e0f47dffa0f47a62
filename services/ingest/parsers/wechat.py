"""WeChat Official Account message XML (plain-text mode), as pushed to the server URL.

    <xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>
         <FromUserName><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></FromUserName>
         <CreateTime>1714564800</CreateTime><MsgType><![CDATA[text]]></MsgType>
         <Content><![CDATA[充值未到账]]></Content><MsgId>24567890123456789</MsgId></xml>

Images and videos become a message with a placeholder text and the attachment's
metadata: a screenshot of a failed withdrawal is evidence an agent must see. A link
becomes its title, description and URL. Locations, unknown types and every event
(subscribe, unsubscribe, menu clicks, ...) are skipped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from xml.etree.ElementTree import ParseError as XmlSyntaxError

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DefusedXmlException
from pydantic import BeforeValidator, Field

from services.ingest.model import ParsedMessage, ParseError, ParserConfig, ParseResult, Skipped
from services.ingest.parsers.common import Id, Shape, clean_text, from_unix, validate
from shared.contracts.common import Provider
from shared.contracts.messages import Attachment, Identity

PROVIDER: Provider = "wechat"

_MEDIA = {
    "image": ("[image]", Attachment(name="image.jpg", content_type="image/jpeg", size_bytes=0)),
    "video": ("[video]", Attachment(name="video.mp4", content_type="video/mp4", size_bytes=0)),
    "shortvideo": ("[video]", Attachment(name="video.mp4", content_type="video/mp4", size_bytes=0)),
}


def _from_unix_text(value: object) -> datetime:
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 12:
        raise ValueError("unix seconds expected")
    return from_unix(int(value))


class _Message(Shape):
    to_user: Id = Field(alias="ToUserName")
    from_user: Id = Field(alias="FromUserName", description="The sender's OpenID")
    create_time: Annotated[datetime, BeforeValidator(_from_unix_text)] = Field(alias="CreateTime")
    msg_type: str = Field(alias="MsgType")
    msg_id: Id | None = Field(default=None, alias="MsgId")
    content: str | None = Field(default=None, alias="Content")
    recognition: str | None = Field(default=None, alias="Recognition")
    title: str | None = Field(default=None, alias="Title")
    description: str | None = Field(default=None, alias="Description")
    url: str | None = Field(default=None, alias="Url")


def parse_wechat(raw: bytes, config: ParserConfig) -> ParseResult:
    fields = _fields(raw)
    if "Encrypt" in fields and "MsgType" not in fields:
        # Safe mode: the adapter must decrypt with the account's EncodingAESKey first.
        raise ParseError("wechat: encrypted message")
    message = validate(_Message, fields, PROVIDER)

    attachments: tuple[Attachment, ...] = ()
    match message.msg_type:
        case "text":
            text = message.content or ""
        case "voice":
            # Recognition is WeChat's own speech-to-text, present only when enabled.
            text = message.recognition or ""
            if not text.strip():
                return [Skipped(reason="wechat: voice without recognition")]
        case "image" | "video" | "shortvideo":
            text, attachment = _MEDIA[message.msg_type]
            attachments = (attachment,)
        case "link":
            text = "\n".join(p for p in (message.title, message.description, message.url) if p)
        case "event":
            return [Skipped(reason="wechat: event")]
        case _:
            return [Skipped(reason="wechat: unsupported message type")]

    text = clean_text(text, config.max_text_chars)
    if not text:
        return [Skipped(reason="wechat: empty message")]
    return [
        ParsedMessage(
            channel="social",
            provider=PROVIDER,
            provider_message_id=message.msg_id or _fallback_id(message),
            # An OpenID is unique per official account, and the chat is one to one.
            conversation_key=message.from_user,
            sent_at=message.create_time,
            identities=(Identity(kind="wechat", value=message.from_user),),
            text=text,
            attachments=attachments,
        )
    ]


def _fallback_id(message: _Message) -> str:
    # Only events lack a MsgId, and one user cannot trigger two in the same second.
    return f"{message.from_user}:{int(message.create_time.timestamp())}"


def _fields(raw: bytes) -> dict[str, str | None]:
    """The <xml> root's children as tag -> text; entities and DTDs are refused."""
    try:
        root = SafeElementTree.fromstring(
            raw, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise ParseError("wechat: forbidden xml construct") from exc
    # ValueError/LookupError: an encoding declaration expat does not know.
    except (XmlSyntaxError, ValueError, LookupError, RecursionError) as exc:
        raise ParseError("wechat: invalid xml") from exc
    if root.tag != "xml":
        raise ParseError("wechat: root is not <xml>")
    fields: dict[str, str | None] = {}
    for child in root:
        if not isinstance(child.tag, str) or child.tag in fields:
            raise ParseError("wechat: duplicate or invalid element")
        fields[child.tag] = child.text
    return fields
