"""Hostile JSON for property tests: any JSON value, and a valid payload damaged at any depth."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st


def json_values(
    hostile: Sequence[Any], *, max_text: int | None = None, max_leaves: int = 12
) -> st.SearchStrategy[Any]:
    """Any JSON value, often one of `hostile` (operator objects, control characters, ...)."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=max_text)
        | st.sampled_from(hostile).map(copy.deepcopy),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=max_leaves,
    )


def _slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a JSON value, so a mutation can hit any depth."""
    found: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        items = []
    for key, child in items:
        found.append((value, key))
        found.extend(_slots(child))
    return found


def mutate(draw: st.DrawFn, data: Any, values: st.SearchStrategy[Any]) -> None:
    """Drops, replaces or adds one to three members of `data`, at any depth, in place."""
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(data)
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if action == "drop" and isinstance(container, dict):
            del container[key]
        elif action == "add" and isinstance(container, dict):
            container[draw(st.text(max_size=8))] = draw(values)
        else:
            container[key] = draw(values)


@st.composite
def mutations(draw: st.DrawFn, payload: dict[str, Any], values: st.SearchStrategy[Any]) -> Any:
    """A copy of `payload` with one to three members dropped, replaced or added."""
    data = copy.deepcopy(payload)
    mutate(draw, data, values)
    return data
