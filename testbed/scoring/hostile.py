"""Hostile mode (``--hostile-every N``): every N-th answer that would be a 200 is malformed instead.

The shapes come in a fixed cycle, so a test knows what it meets: bodies cut
short on the wire (a Content-Length the connection closes before reaching),
truncated, empty or non-UTF-8 bodies, and complete JSON of every wrong shape
(not an object, too few or too many results, items that are not objects,
scores that are missing, strings, booleans, NaN, 1e999, 10**400 or 5,000
digits long, bad decisions and model versions, other transactions' ids, deep
nesting). ``retryable`` says what a client should make of each: retry when
the bytes are not the whole answer, dead-letter a wrong answer (see
``transforms/contract/codec.py``). ``GET /admin/hostile`` counts what was sent.

The malformed body is made from the valid one, after the request was admitted
and counted, so ``/stats`` sees an accepted request either way.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Doc = dict[str, Any]
_RAW = "__raw__"   # replaced by a literal json.dumps would never write


@dataclass(frozen=True)
class Shape:
    name: str
    retryable: bool
    body: Callable[[Doc], bytes]
    cut: bool = False   # declare the whole body, send half of it, close the connection


def _dumps(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _first(field: str, value: object, raw: str | None = None) -> Callable[[Doc], bytes]:
    """The valid body with `field` of the first result set to `value` (or deleted, for
    `value` None), or to the literal `raw`."""
    def body(doc: Doc) -> bytes:
        results = [dict(r) for r in doc["results"]]
        if value is None and raw is None:
            del results[0][field]
        else:
            results[0][field] = _RAW if raw is not None else value
        return _dumps({"results": results}).replace(b'"' + _RAW.encode() + b'"', (raw or "").encode())
    return body


def _results(change: Callable[[list[Any]], list[Any]]) -> Callable[[Doc], bytes]:
    return lambda doc: _dumps({"results": change(list(doc["results"]))})


def _other_ids(results: list[Doc]) -> list[Doc]:
    """The first two results swapped, or (one result) answered for another transaction."""
    if len(results) > 1:
        return [results[1], results[0], *results[2:]]
    return [{**results[0], "txn_id": results[0]["txn_id"] + "-other"}]


SHAPES = (
    Shape("cut", True, _dumps, cut=True),
    Shape("truncated", True, lambda doc: _dumps(doc)[: len(_dumps(doc)) // 2]),
    Shape("html", True, lambda doc: b"<html><body>502 Bad Gateway</body></html>"),
    Shape("empty", True, lambda doc: b""),
    Shape("not_utf8", True, lambda doc: b"\xff\xfe" + _dumps(doc)),
    Shape("not_an_object", False, lambda doc: _dumps(doc["results"])),
    Shape("results_not_a_list", False, lambda doc: _dumps({"results": {"0": doc["results"][0]}})),
    Shape("duplicate_results", False, lambda doc: _dumps(doc)[:-1] + b',"results":null}'),
    Shape("too_few_results", False, _results(lambda r: r[:-1])),
    Shape("too_many_results", False, _results(lambda r: r + r[:1])),
    Shape("result_not_an_object", False, _results(lambda r: [42, *r[1:]])),
    Shape("other_ids", False, _results(_other_ids)),
    Shape("score_missing", False, _first("score", None)),
    Shape("score_a_string", False, _first("score", "0.5")),
    Shape("score_a_bool", False, _first("score", True)),
    Shape("score_nan", False, _first("score", None, raw="NaN")),
    Shape("score_1e999", False, _first("score", None, raw="1e999")),
    Shape("score_10_pow_400", False, _first("score", None, raw="1" + "0" * 400)),
    Shape("score_5000_digits", False, _first("score", None, raw="1" + "0" * 5000)),
    Shape("decision_missing", False, _first("decision", None)),
    Shape("decision_too_long", False, _first("decision", "x" * 65)),
    Shape("decision_lone_surrogate", False, _first("decision", None, raw='"\\ud800"')),
    Shape("model_version_a_number", False, _first("model_version", 7)),
    Shape("nested_too_deep", False, lambda doc: b"[" * 50_000 + b"]" * 50_000),
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HostileAnswers:
    """Counts the would-be 200 answers to /score and spoils every `every`-th one."""

    def __init__(self, every: int) -> None:
        self.every = every
        self._answers = 0
        self.sent: Counter[str] = Counter()

    def next_shape(self) -> Shape | None:
        self._answers += 1
        if self._answers % self.every:
            return None
        shape = SHAPES[(self._answers // self.every - 1) % len(SHAPES)]
        self.sent[shape.name] += 1
        return shape

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/admin/hostile":
            return web.json_response({"every": self.every, "sent": dict(self.sent)})
        response = await handler(request)
        if request.path != "/score" or response.status != 200 or not isinstance(response, web.Response):
            return response
        shape = self.next_shape()
        if shape is None:
            return response
        assert isinstance(response.body, bytes)
        body = shape.body(json.loads(response.body))
        if shape.cut:
            return await _cut(request, body)
        return web.Response(body=body, content_type="application/json")


async def _cut(request: web.Request, body: bytes) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    assert request.transport is not None
    request.transport.close()
    return response


def middlewares(every: int) -> list[Any]:
    """What `ScoringService.app` installs: nothing unless `--hostile-every` is set."""
    return [HostileAnswers(every).middleware] if every else []
