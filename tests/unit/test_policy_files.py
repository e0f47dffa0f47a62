"""The shipped policy files load and validate; a broken one fails loudly at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.ingest.classify import load_rules
from services.ingest.pipeline import load_policy as ingest_policy
from services.notify.render import load_templates
from services.router.priority import load_policy as routing_policy
from services.sla.deadlines import load_policy as sla_policy
from shared.settings import REPO_POLICY_DIR


def test_shipped_policies_load() -> None:
    ivr = ingest_policy(REPO_POLICY_DIR / "ingest.yaml").parser.ivr
    assert ivr.choose("+15550001111", ["1"]).category == "stolen_funds"
    assert ivr.choose("+85230018888", ["1", "3"]).model_dump() == {
        "category": "deposit",
        "language": "zh",
    }
    assert load_rules(REPO_POLICY_DIR / "classify.yaml") is not None
    assert routing_policy(REPO_POLICY_DIR / "routing.yaml").priority_of("stolen_funds") == "P1"
    assert sla_policy(REPO_POLICY_DIR / "sla.yaml").target("P1", "chat", "first_response") == 60
    templates = load_templates(REPO_POLICY_DIR / "templates.yaml")
    assert set(templates.anti_scam) == {"en", "zh"}
    assert all({"en", "zh"} <= set(t) for t in templates.templates.values())


def test_broken_policies_are_refused(tmp_path: Path) -> None:
    bad_sla = tmp_path / "sla.yaml"
    bad_sla.write_text("targets: {P1: {first_response_s: -5}}\n")
    with pytest.raises(ValidationError):
        sla_policy(bad_sla)
    bad_ingest = tmp_path / "ingest.yaml"
    bad_ingest.write_text("parser: {ivr: {lines: {default: {'1': {category: nope}}}}}\n")
    with pytest.raises(ValidationError):
        ingest_policy(bad_ingest)
    bad_routing = tmp_path / "routing.yaml"
    bad_routing.write_text("priorities: {P1: [stolen_funds, stolen_funds]}\n")
    with pytest.raises(ValidationError):
        routing_policy(bad_routing)
