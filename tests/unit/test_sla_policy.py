"""SLA policy as data: which targets apply, with which calendar; broken files refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from services.sla.deadlines import SlaPolicy, load_policy
from shared.settings import REPO_POLICY_DIR

BASE: dict[str, Any] = {
    "warning_ratio": 0.8,
    "targets": {
        p: {"first_response_s": 100 * n, "next_response_s": 200 * n, "resolution_s": 1000 * n}
        for n, p in enumerate(("P1", "P2", "P3", "P4"), start=1)
    },
    "channel_overrides": {
        "chat": {"P1": {"first_response_s": 10, "next_response_s": 20, "resolution_s": 500}}
    },
    "calendars": {
        "ny_desk": {
            "timezone": "America/New_York",
            "hours": {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        }
    },
    "policies": [
        {
            "name": "vip-chat",
            "match": {"tiers": ["vip9"], "channels": ["chat"]},
            "warning_ratio": 0.5,
            "targets": {"P1": {"first_response_s": 5, "next_response_s": 6, "resolution_s": 7}},
        },
        {
            "name": "kyc-desk",
            "match": {"categories": ["kyc"]},
            "calendar": "ny_desk",
            "targets": {
                "P3": {"first_response_s": 3600, "next_response_s": 7200, "resolution_s": 28800}
            },
        },
    ],
}


def policy(**over: Any) -> SlaPolicy:
    return SlaPolicy.model_validate({**BASE, **over})


def test_the_most_specific_targets_apply() -> None:
    p = policy()
    # A matching rule wins, with its own warning ratio.
    vip = p.resolve("P1", "chat", "vip9")
    assert (vip.policy, vip.targets.first_response_s, vip.warning_ratio) == ("vip-chat", 5, 0.5)
    # The rule lists only P1: a VIP P2 chat falls through to the defaults.
    assert p.resolve("P2", "chat", "vip9").policy == "default"
    # Not VIP: the channel refinement, then the plain targets.
    assert p.target("P1", "chat", "first_response") == 10
    assert p.target("P1", "email", "first_response") == 100
    assert p.target("P4", "email", "resolution") == 4000
    assert p.resolve("P1", "email").warning_ratio == 0.8
    # A category rule brings its calendar.
    kyc = p.resolve("P3", "email", "standard", "kyc")
    assert (kyc.policy, kyc.calendar, kyc.targets.first_response_s) == ("kyc-desk", "ny_desk", 3600)
    assert p.resolve("P3", "email", "standard", "trading").calendar is None


def test_due_at_counts_business_time_when_a_calendar_applies() -> None:
    p = policy()
    friday_4pm = datetime(2026, 10, 30, 20, tzinfo=UTC)  # 16:00 EDT
    # 2 business hours: Friday 16:00-17:00 EDT, then Monday 09:00-10:00 EST (clocks went
    # back on Sunday).
    due = p.due_at("P3", "email", "next_response", friday_4pm, category="kyc")
    assert due == datetime(2026, 11, 2, 15, tzinfo=UTC)
    assert p.due_at("P1", "email", "first_response", friday_4pm) == datetime(
        2026, 10, 30, 20, 1, 40, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"targets": {"P1": BASE["targets"]["P1"]}}, "every priority needs targets"),
        ({"calendar": "nowhere"}, "unknown calendar"),
        ({"policies": [{**BASE["policies"][1], "calendar": "moon"}]}, "unknown calendar"),
        ({"policies": [BASE["policies"][0], BASE["policies"][0]]}, "unique"),
        ({"warning_ratio": 1.0}, "less than 1"),
        ({"policies": [{**BASE["policies"][0], "targets": {}}]}, "at least 1"),
        ({"policies": [{**BASE["policies"][0], "match": {"tiers": "vip9"}}]}, "list"),
        ({"deadline": 5}, "Extra inputs"),
    ],
)
def test_broken_policies_are_refused_with_the_reason(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        policy(**change)


def test_shipped_policy_keeps_its_targets_and_adds_vip_tiers(tmp_path: Path) -> None:
    shipped = load_policy(REPO_POLICY_DIR / "sla.yaml")
    # The existing keys mean what they meant (notify's estimates read them).
    assert shipped.target("P1", "chat", "first_response") == 60
    assert shipped.target("P2", "email", "first_response") == 900
    assert shipped.target("P4", "email", "first_response") == 14400
    assert shipped.resolve("P4", "email").calendar is None  # 24/7 unless a rule says so
    # VIP tiers are served faster on every channel.
    assert shipped.target("P1", "chat", "first_response", tier="vip5") == 30
    assert shipped.target("P1", "chat", "first_response", tier="vip1") == 60
    # Its example calendar is valid and knows the UK's Christmas.
    hours = shipped.hours("emea_office")
    assert hours is not None
    assert hours.day(datetime(2026, 12, 25).date()) == ()
    # A file without the new sections still loads (calendars and policies are optional).
    legacy = {
        k: v
        for k, v in yaml.safe_load((REPO_POLICY_DIR / "sla.yaml").read_text()).items()
        if k in ("warning_ratio", "targets", "channel_overrides")
    }
    (tmp_path / "sla.yaml").write_text(yaml.safe_dump(legacy))
    assert load_policy(tmp_path / "sla.yaml").target("P1", "chat", "first_response") == 60
