"""Validation of a /score body: a client mistake must become a 400 with a reason, never a 500."""
from __future__ import annotations

import json


class BadRequest(ValueError):
    """The body is not a batch the service accepts (message is the one-line reason)."""


def parse_batch(body: bytes, max_batch: int) -> list[str]:
    """Return the ``txn_id`` of every item, in order; other fields are ignored."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # bad UTF-8 / JSON, or absurd nesting
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(doc, list):
        raise BadRequest("body must be a JSON array of transactions")
    if not doc:
        raise BadRequest("batch is empty")
    if len(doc) > max_batch:
        raise BadRequest(f"batch has {len(doc)} items, more than the maximum {max_batch}")
    txn_ids: list[str] = []
    for index, item in enumerate(doc):
        if not isinstance(item, dict):
            raise BadRequest(f"item {index} is not a JSON object")
        txn_id = item.get("txn_id")
        if not isinstance(txn_id, str) or not txn_id:
            raise BadRequest(f"item {index} has no non-empty string 'txn_id'")
        txn_ids.append(txn_id)
    try:
        "".join(txn_ids).encode("utf-8")  # one pass instead of one per item
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800" cannot be hashed
        bad = next(i for i, txn_id in enumerate(txn_ids) if _unencodable(txn_id))
        raise BadRequest(f"item {bad} has a 'txn_id' that is not valid Unicode") from None
    return txn_ids


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
