"""Batch decoding and validation (agent/collector/ingest.py): pure, no store, no HTTP."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack
import pytest

from agent.collector.ingest import (
    EVENT_FIELDS,
    MalformedBody,
    SchemaViolation,
    parse_batch,
)
from tests.test_collector_process import BASE_US, batch, session_started, statement


def test_valid_batch_fills_absent_keys_with_none_and_drops_unknown_ones() -> None:
    event = statement("s1", 1, BASE_US, future_field="ignored")
    del event["rows"]
    parsed = parse_batch(msgpack.packb(batch([event], seq=3)))
    assert parsed.batch_seq == 3 and parsed.agent.agent_id == "agent-1"
    [out] = parsed.events
    assert out["rows"] is None and "future_field" not in out
    assert set(out) == {"type", "ts_us", *EVENT_FIELDS["statement.executed"]}


def test_client_map_is_checked_and_flattened_keys_kept() -> None:
    good = session_started("s1", BASE_US, client={"pid": 1, "exe": "/bin/x", "extra": 1})
    [out] = parse_batch(msgpack.packb(batch([good]))).events
    assert out["client"]["pid"] == 1 and out["client"]["uid"] is None
    bad = session_started("s1", BASE_US, client={"pid": "1"})
    expected = "event 0 (session.started): key 'client' must be a map whose 'pid' is an int"
    with pytest.raises(SchemaViolation, match=re.escape(expected)):
        parse_batch(msgpack.packb(batch([bad])))


def test_errors_are_listed_together_and_capped() -> None:
    events = [statement("s1", "x", BASE_US, query_seq=1) for _ in range(30)]
    with pytest.raises(SchemaViolation) as caught:
        parse_batch(msgpack.packb(batch(events)))
    message = str(caught.value)
    assert message.count("key 'seq' must be an int") == 10
    assert message.startswith("event 0 (statement.executed)") and "event 9 " in message
    assert message.endswith("(further problems not listed)")


def test_values_are_never_echoed_in_errors() -> None:
    secret = "SELECT 'credit card 4111111111111111'"
    with pytest.raises(SchemaViolation) as caught:
        parse_batch(msgpack.packb(batch([statement("s1", 1, BASE_US, fingerprint=[secret])])))
    assert "4111" not in str(caught.value)


@pytest.mark.parametrize("body", [b"", b"\xc1", msgpack.packb({}) + b"\x01", msgpack.packb(1)])
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        parse_batch(body)


def _doc_sections() -> dict[str, str]:
    """docs/events.md: event type -> the text of its `### \\`type\\`` section."""
    text = (Path(__file__).parent.parent / "docs" / "events.md").read_text()
    parts = re.split(r"^### `([a-z_.]+)`\s*$", text, flags=re.MULTILINE)
    return {name: body.split("\n## ")[0] for name, body in zip(parts[1::2], parts[2::2],
                                                                 strict=True)}


def test_validator_and_docs_list_the_same_keys() -> None:
    sections = _doc_sections()
    assert set(sections) == set(EVENT_FIELDS)
    for etype, fields in EVENT_FIELDS.items():
        section = sections[etype]
        table_keys = {key for line in section.splitlines() if line.startswith("| `")
                      for key in re.findall(r"`([a-z_]+)`", line.split("|")[1])}
        mentioned = set(re.findall(r"`([a-z_]+)`", section))
        if table_keys:  # events documented with a table: exactly the validator's keys
            assert table_keys - {"ts_us"} == set(fields), etype
        else:  # events documented in prose
            assert set(fields) <= mentioned, etype
        for key, (_, required) in fields.items():
            rows = [line for line in section.splitlines() if line.startswith(f"| `{key}`")]
            if required and rows:
                assert "**required**" in rows[0], (etype, key)
