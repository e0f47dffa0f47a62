"""X (Twitter) Account Activity API webhook JSON: DMs and mentions of the exchange's account.

    {"for_user_id": "4337869213",
     "direct_message_events": [{"type": "message_create", "id": "954491830116155396",
         "created_timestamp": "1516403560557",
         "message_create": {"target": {"recipient_id": "4337869213"}, "sender_id": "3001969357",
                            "message_data": {"text": "..."}}}],
     "users": {"3001969357": {"id": "3001969357", "name": "Jordan", "screen_name": "jb"}}}

    {"for_user_id": "4337869213",
     "tweet_create_events": [{"id_str": "...", "text": "@exchange ...", "timestamp_ms": "...",
         "in_reply_to_status_id_str": null, "user": {"id_str": "...", "screen_name": "..."}}]}

One delivery can carry several events, so one payload gives one result per event.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated

from pydantic import BeforeValidator, Field, StrictBool

from services.ingest.model import ParsedMessage, ParseError, ParserConfig, ParseResult, Skipped
from services.ingest.parsers.common import (
    Id,
    Shape,
    clean_line,
    clean_text,
    from_unix,
    load_json,
    normalise_locale,
    optional_line,
    validate,
)
from shared.contracts.common import Provider
from shared.contracts.messages import Attachment, Identity

PROVIDER: Provider = "x"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# "Wed Oct 10 20:19:24 +0000 2018"; parsed by hand because strptime's %a/%b follow the locale.
_CREATED_AT = re.compile(
    r"[A-Z][a-z]{2} ([A-Z][a-z]{2}) ([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) "
    r"([+-])([0-9]{2})([0-9]{2}) ([0-9]{4})",
    re.ASCII,
)
_MEDIA_TYPES = {"photo": "image/jpeg", "video": "video/mp4", "animated_gif": "video/mp4"}


def _from_millis(value: object) -> datetime:
    # X sends epoch milliseconds as a decimal string.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("epoch milliseconds expected")
    text = str(value)
    if not text.isascii() or not text.isdigit() or len(text) > 15:
        raise ValueError("epoch milliseconds expected")
    return from_unix(int(text) / 1000)


def _from_created_at(value: object) -> datetime:
    match = _CREATED_AT.fullmatch(value) if isinstance(value, str) else None
    if match is None or match[1] not in _MONTHS:
        raise ValueError("created_at like 'Wed Oct 10 20:19:24 +0000 2018' expected")
    month, day, hour, minute, second, sign, off_h, off_m, year = match.groups()
    offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
    try:
        local = datetime(
            int(year),
            _MONTHS.index(month) + 1,
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=timezone(offset),
        )
        return local.astimezone(UTC)
    # An impossible date, an offset of a day or more, or a year at the edge of datetime.
    except (ValueError, OverflowError) as exc:
        raise ValueError("invalid created_at") from exc


MillisTime = Annotated[datetime, BeforeValidator(_from_millis)]
CreatedAt = Annotated[datetime, BeforeValidator(_from_created_at)]


class _Media(Shape):
    id_str: Id | None = None
    type: str = "photo"
    media_url_https: str | None = None


class _DmAttachment(Shape):
    media: _Media | None = None


class _MessageData(Shape):
    text: str = ""
    attachment: _DmAttachment | None = None


class _Target(Shape):
    recipient_id: Id


class _MessageCreate(Shape):
    target: _Target
    sender_id: Id
    message_data: _MessageData


class _DmEvent(Shape):
    type: str
    id: Id
    created_timestamp: MillisTime | None = None
    message_create: _MessageCreate | None = None


class _User(Shape):
    name: str | None = None
    screen_name: str | None = None


class _TweetUser(_User):
    id_str: Id


class _ExtendedTweet(Shape):
    full_text: str


class _Tweet(Shape):
    id_str: Id
    text: str = ""
    full_text: str | None = None
    extended_tweet: _ExtendedTweet | None = None
    user: _TweetUser
    in_reply_to_status_id_str: Id | None = None
    timestamp_ms: MillisTime | None = None
    created_at: CreatedAt | None = None
    lang: str | None = None
    retweeted_status: Shape | None = None
    is_quote_status: StrictBool = False


class _Activity(Shape):
    for_user_id: Id | None = None
    direct_message_events: tuple[_DmEvent, ...] = ()
    tweet_create_events: tuple[_Tweet, ...] = ()
    users: dict[str, _User] = Field(default_factory=dict)


def parse_x(raw: bytes, config: ParserConfig) -> ParseResult:
    activity = validate(_Activity, load_json(raw, PROVIDER), PROVIDER)
    if not activity.direct_message_events and not activity.tweet_create_events:
        # favorite_events, follow_events, tweet_delete_events, typing indicators, ...
        return [Skipped(reason="x: not a message event")]
    if activity.for_user_id is None:
        # Without it we cannot tell the exchange's own messages from the customers'.
        raise ParseError("x: missing for_user_id")
    own_ids = config.own_x_account_ids | {activity.for_user_id}
    results: ParseResult = [
        _direct_message(event, activity, own_ids, config)
        for event in activity.direct_message_events
    ]
    results += [_mention(tweet, own_ids, config) for tweet in activity.tweet_create_events]
    return results


def _direct_message(
    event: _DmEvent, activity: _Activity, own_ids: frozenset[str], config: ParserConfig
) -> ParsedMessage | Skipped:
    create = event.message_create
    if event.type != "message_create" or create is None:
        return Skipped(reason="x: not a message event")
    sender_id = create.sender_id
    if sender_id in own_ids:
        return Skipped(reason="x: own account")
    text = clean_text(create.message_data.text, config.max_text_chars)
    attachments = _dm_attachments(create.message_data)
    if not text and not attachments:
        return Skipped(reason="x: empty message")
    sender = activity.users.get(sender_id, _User())
    first, second = sorted((sender_id, create.target.recipient_id))
    return ParsedMessage(
        channel="social",
        provider=PROVIDER,
        provider_message_id=f"dm:{event.id}",
        conversation_key=f"dm:{first}:{second}",
        sent_at=event.created_timestamp,
        identities=(Identity(kind="x", value=sender_id),),
        sender_name=optional_line(sender.name) or optional_line(sender.screen_name),
        text=text,
        attachments=attachments,
    )


def _dm_attachments(data: _MessageData) -> tuple[Attachment, ...]:
    media = data.attachment.media if data.attachment else None
    if media is None:
        return ()
    url_name = (media.media_url_https or "").rsplit("/", 1)[-1]
    return (
        Attachment(
            name=clean_line(url_name) or media.id_str or media.type,
            content_type=_MEDIA_TYPES.get(media.type, "application/octet-stream"),
            # X does not report sizes; the content is never carried anyway.
            size_bytes=0,
        ),
    )


def _mention(
    tweet: _Tweet, own_ids: frozenset[str], config: ParserConfig
) -> ParsedMessage | Skipped:
    if tweet.user.id_str in own_ids:
        return Skipped(reason="x: own account")
    if tweet.retweeted_status is not None:
        return Skipped(reason="x: retweet")
    # Tweets over 140 characters arrive truncated, with the whole text in extended_tweet.
    full_text = tweet.extended_tweet.full_text if tweet.extended_tweet else tweet.full_text
    text = clean_text(full_text or tweet.text, config.max_text_chars)
    if not text:
        return Skipped(reason="x: empty message")
    # v1.1 tweets name only their parent; the parent is the closest thread root we get.
    root = tweet.in_reply_to_status_id_str or tweet.id_str
    return ParsedMessage(
        channel="social",
        provider=PROVIDER,
        provider_message_id=f"tweet:{tweet.id_str}",
        conversation_key=f"tweet:{root}",
        sent_at=tweet.timestamp_ms or tweet.created_at,
        identities=(Identity(kind="x", value=tweet.user.id_str),),
        sender_name=optional_line(tweet.user.name) or optional_line(tweet.user.screen_name),
        text=text,
        locale_hint=normalise_locale(tweet.lang) if tweet.lang != "und" else None,
    )
