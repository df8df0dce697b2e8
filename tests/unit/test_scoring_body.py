"""/score body validation: every malformed body has a one-line reason."""
import json

import pytest

from testbed.scoring.body import BadRequest, parse_batch

MALFORMED = [
    (b"", "not valid JSON"),
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'{"txn_id": "a"}', "must be a JSON array"),
    (b'"a"', "must be a JSON array"),
    (b"[]", "batch is empty"),
    (b'[{"txn_id": "a"}, 3]', "item 1 is not a JSON object"),
    (b'[{"id": "a"}]', "item 0 has no non-empty string 'txn_id'"),
    (b'[{"txn_id": 7}]', "item 0 has no non-empty string 'txn_id'"),
    (b'[{"txn_id": null}]', "item 0 has no non-empty string 'txn_id'"),
    (b'[{"txn_id": ""}]', "item 0 has no non-empty string 'txn_id'"),
    (b'[{"txn_id": "a"}, {"txn_id": "\\ud800"}]', "item 1 has a 'txn_id' that is not valid Unicode"),
    (json.dumps([{"txn_id": str(i)} for i in range(4)]).encode(), "4 items, more than the maximum 3"),
]


@pytest.mark.parametrize(("body", "reason"), MALFORMED)
def test_malformed_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_batch(body, max_batch=3)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_ids_come_back_in_order_and_extra_fields_are_ignored() -> None:
    body = json.dumps([{"txn_id": "b", "amount": 1.5, "nested": {"x": [1]}}, {"txn_id": "a"}, {"txn_id": "b"}])
    assert parse_batch(body.encode(), max_batch=3) == ["b", "a", "b"]
