"""Rich text to Atlassian Document Format, validated against Atlassian's own schema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from providers.adf import to_adf, to_text

SAMPLES = [
    "",
    "plain text",
    "Checkout API latency\n\n- Service: checkout-api\n- PagerDuty: https://x.pagerduty.com/i/1",
    "# Diagnostics\nline one\nline two\n\n1. first\n2) second\n\n* star bullet",
    "Run `SELECT 1` and see [the runbook](https://wiki.example.com/rb), **now**.",
    "```sql\nSELECT pid\nFROM pg_stat_activity;\n```\nafter the code",
    "```\n```",
    "unclosed ``` fence\n```python\nprint(1)",
    "odd * and ** and [brackets] and (parens) and http://",
    "Diagnostics: 1 ok, 0 warn, 1 fail\n- OK api: HTTP 200 in 12 ms (12 ms)\n- FAIL db (3 ms)",
]


@pytest.fixture
def adf_validator(contract: Callable[[str], Any]) -> jsonschema.Draft4Validator:
    schema = contract("jira/adf-schema-v1-full.json")
    return jsonschema.Draft4Validator(schema)


@pytest.mark.contracts
@pytest.mark.parametrize("text", SAMPLES)
def test_every_conversion_is_valid_adf(
    adf_validator: jsonschema.Draft4Validator, text: str
) -> None:
    doc = to_adf(text)
    errors = sorted(adf_validator.iter_errors(doc), key=str)
    assert not errors, f"{text!r} -> {doc}: {errors[0].message}"


def test_structure() -> None:
    doc = to_adf("Title\n\n- a `x`\n- [b](https://b.example)\n\n```sh\nls\n```")
    assert [n["type"] for n in doc["content"]] == ["paragraph", "bulletList", "codeBlock"]
    first, second = (item["content"][0]["content"] for item in doc["content"][1]["content"])
    assert first[1] == {"type": "text", "text": "x", "marks": [{"type": "code"}]}
    assert second[0]["marks"] == [{"type": "link", "attrs": {"href": "https://b.example"}}]
    assert doc["content"][2] == {
        "type": "codeBlock",
        "attrs": {"language": "sh"},
        "content": [{"type": "text", "text": "ls"}],
    }


def test_adf_round_trips_to_text_and_passes_through() -> None:
    doc = to_adf("one\ntwo\n\n- three")
    assert to_text(doc) == "one\ntwo\nthree"
    assert to_adf(doc) == doc
    with pytest.raises(ValueError, match="type 'doc'"):
        to_adf({"type": "paragraph"})


@pytest.mark.contracts
def test_vendor_examples_round_trip(contract: Callable[[str], Any]) -> None:
    example = contract("jira/jira-examples.json")["minimal_adf_comment_body"]["body"]
    assert to_adf(to_text(example)) == example
