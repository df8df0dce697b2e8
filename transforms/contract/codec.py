"""A contract's wire format: the request body, the response's results, the enriched record.

Request: the events' selected fields under the service's names, as a JSON
list or inside an object (`{"items": [...], "model": "v2"}`). Response: the
list of results at a path, matched to the events by position or by an id
field, each result's fields checked by type (`fields.py`). A response that is
not JSON at all is retryable (a body cut short on the way); a complete answer
of the wrong shape is the service's answer to this batch (`InvalidResponse`,
dead letters); a single result that is missing or wrong costs only its own
event (`ElementFailure`). The enriched record is the event's own bytes with
the result's fields added, so fields the schema does not name reach the output
untouched.
"""
from __future__ import annotations

import decimal
import hashlib
import json
import re
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from transforms.contract.fields import (
    FastChecks,
    FieldSpec,
    InvalidValue,
    brief,
    parse_int,
    plain_bytes,
    refuse_constant,
)
from transforms.contract.schema import Event, EventSchema
from transforms.control.signals import ElementFailure


class InvalidResponse(ValueError):
    """A success status whose body is not the documented shape; `str(e)` is the one-line reason.
    `retryable` when the bytes are not JSON at all, which another attempt may well get whole."""

    def __init__(self, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.retryable = retryable


@dataclass(frozen=True)
class RequestBody:
    fields: tuple[tuple[str, str], ...]           # (event field, name in the request)
    wrap: tuple[str, ...] = ()                    # path of the list in the body; () = the body is the list
    static: tuple[tuple[str, Any], ...] = ()      # fixed members of the wrapping object


@dataclass(frozen=True)
class ResponseBody:
    fields: tuple[FieldSpec, ...]                 # each result's fields, in result order
    results_at: tuple[str, ...] = ("results",)    # path of the list; () = the body is the list
    match: str = "position"                       # or "id"
    id_field: str | None = None                   # the results' id (required for "id"; checked for "position")
    max_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class ResultDocument:
    carry_unknown_fields: bool = True             # fields the schema does not name go to the output
    latency_ms: str | None = "enrichment_latency_ms"
    attempts: str | None = "enrichment_attempts"
    enriched_at_ms: str | None = "enriched_at_ms"
    metadata: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", tuple(n for n in (self.latency_ms, self.attempts, self.enriched_at_ms)
                                                   if n))


class Codec:
    """Built once per contract in each process (the caller and the job's writer each hold one)."""

    def __init__(self, schema: EventSchema, request: RequestBody, response: ResponseBody,
                 result: ResultDocument) -> None:
        self.schema, self.request, self.response, self.result = schema, request, response, result
        self._encode = msgspec.json.Encoder().encode
        self._request_item, self._request_picks = _request_item(schema, request)
        self._wrap_head, self._wrap_tail = _wrapping(request)
        self._decode_plain = msgspec.json.Decoder(_response_type(response)).decode
        self._checks = FastChecks(response.fields, offset=1)   # after the id
        self._by_position_unchecked = response.match == "position" and response.id_field is None
        self._tail_type, self._full_type = _result_types(schema, response, result)
        self._outputs = frozenset(self.output_names)
        self._plain_quotes = schema.plain_quotes
        kept = (bool(result.latency_ms), bool(result.attempts), bool(result.enriched_at_ms))
        self._meta_kept = None if all(kept) else kept
        self._names_an_output = re.compile(b"|".join(re.escape(json.dumps(n, ensure_ascii=False).encode()) for n in self.output_names)
                                           ).search

    @property
    def output_names(self) -> tuple[str, ...]:
        """The names a result adds to an event (its fields, then the metadata)."""
        return tuple(f.output_name for f in self.response.fields) + self.result.metadata

    # ---- request ----------------------------------------------------------------------------

    def encode_request(self, events: Sequence[Event]) -> bytes:
        make, picks = self._request_item, self._request_picks
        if picks is None:
            items = [make(*e.values) for e in events]
        else:
            items = [make(*[e.values[i] for i in picks]) for e in events]
        body = self._encode(items)
        return self._wrap_head + body + self._wrap_tail if self._wrap_head else body

    @staticmethod
    def idempotency_key(events: Sequence[Event]) -> str:
        """Stable per batch content, so a runner's bundle retry re-sends the same key."""
        return hashlib.sha256("\n".join(e.id for e in events).encode()).hexdigest()[:32]

    # ---- response ---------------------------------------------------------------------------

    def decode_response(self, body: bytes, events: Sequence[Event]) -> list[tuple[Any, ...] | ElementFailure]:
        """One result (its fields' values, in `response.fields` order) or ElementFailure per event;
        InvalidResponse if the body as a whole is not the documented shape."""
        items = self._plain_items(body)
        if items is not None:
            if len(items) == len(events) and (self._by_position_unchecked
                                              or [t[0] for t in items] == [e.id for e in events]):
                return [t[1:] for t in items]   # the common answer: every result, in order
            matched = self._matched(items, events, _first)
            if matched is not None:
                return matched
        return self._general(body, events)

    def _plain_items(self, body: bytes) -> list[tuple[Any, ...]] | None:
        """Each result as (id, *values) if the whole body is plain and valid, else None."""
        if not plain_bytes(body):
            return None
        try:
            doc = self._decode_plain(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            return None
        for name in self.response.results_at:
            doc = getattr(doc, _attr(name))
        astuple = msgspec.structs.astuple
        items = [astuple(item) for item in doc]
        checks = self._checks
        if not all(checks.ok(item) for item in items):
            return None
        return [checks.filled(item) for item in items] if checks.fills else items

    def _matched(self, items: list[Any], events: Sequence[Event], id_of: Any,
                 ) -> list[tuple[Any, ...] | ElementFailure] | None:
        """Results in event order, or None when the shape is wrong (the general path says how)."""
        response = self.response
        if response.match == "position":
            if len(items) != len(events):
                return None
            if response.id_field is not None and any(_id_text(id_of(i)) != e.id for i, e in zip(items, events)):
                return None
            return [item[1:] if isinstance(item, tuple) else item for item in items]
        if len(items) == len(events) and all(_id_text(id_of(i)) == e.id for i, e in zip(items, events)):
            return [item[1:] if isinstance(item, tuple) else item for item in items]
        by_id: defaultdict[str | None, deque[Any]] = defaultdict(deque)
        for item in items:
            by_id[_id_text(id_of(item))].append(item)
        out: list[tuple[Any, ...] | ElementFailure] = []
        for e in events:
            queue = by_id.get(e.id)
            if queue:
                item = queue.popleft()
                out.append(item[1:] if isinstance(item, tuple) else item)
            else:
                out.append(ElementFailure("missing_result", f"the response has no result for id {brief(e.id)}"))
        return out

    def _general(self, body: bytes, events: Sequence[Event]) -> list[tuple[Any, ...] | ElementFailure]:
        doc = _json_document(body)
        path = "$"
        for name in self.response.results_at:
            if not isinstance(doc, dict) or name not in doc:
                raise InvalidResponse(f"response has no {path}.{name}")
            doc, path = doc[name], f"{path}.{name}"
        if not isinstance(doc, list):
            raise InvalidResponse(f"response's {path} is not a list")
        response = self.response
        if response.match == "position" and len(doc) != len(events):
            raise InvalidResponse(f"response has {len(doc)} results for {len(events)} events")
        id_field = response.id_field

        def id_of(item: Any) -> Any:
            return item.get(id_field) if isinstance(item, dict) and id_field is not None else None

        if response.match == "position" and id_field is not None:
            for index, (item, event) in enumerate(zip(doc, events)):
                if _id_text(id_of(item)) != event.id:
                    raise InvalidResponse(f"result {index} is for {id_field} {brief(id_of(item))}, "
                                          f"not {brief(event.id)}")
        matched = self._matched(doc, events, id_of)
        assert matched is not None
        return [m if isinstance(m, ElementFailure) else self._result(m, i) for i, m in enumerate(matched)]

    def _result(self, item: Any, index: int) -> tuple[Any, ...] | ElementFailure:
        if not isinstance(item, dict):
            return ElementFailure("invalid_result", f"result {index} is not an object")
        values = []
        for spec in self.response.fields:
            value = item.get(spec.name)
            if value is None:
                if spec.required:
                    return ElementFailure("invalid_result", f"result {index} has no '{spec.name}'")
                values.append(spec.default)
                continue
            try:
                values.append(spec.check(value))
            except InvalidValue as e:
                return ElementFailure("invalid_result", f"result {index}: {e}")
        return tuple(values)

    # ---- the enriched record ----------------------------------------------------------------

    def result_document(self, raw: bytes, event: Event, result: Sequence[Any], latency_ms: float,
                        attempts: int) -> bytes:
        """The event with the result's fields (and the metadata) added, as JSON bytes."""
        meta: tuple[Any, ...] = (latency_ms, attempts, int(time.time() * 1000))
        if self._meta_kept is not None:
            meta = tuple(v for v, kept in zip(meta, self._meta_kept) if kept)
        if not self.result.carry_unknown_fields:
            return self._encode(self._full_type(*event.values, *result, *meta))
        tail = self._encode(self._tail_type(*result, *meta))
        # An event of exactly the schema's fields cannot name an output field (the loader keeps them
        # apart); others may, and escapes may hide a name.
        if b"\\" in raw or (raw.count(b'"') != self._plain_quotes and self._names_an_output(raw)):
            doc = json.loads(raw, parse_int=_int_or_decimal)
            if doc.keys() & self._outputs:
                # The event names a result field itself: the result's value wins. Re-encoded from what
                # the parser's general path accepted; a number beyond float range (1e999) becomes null.
                for name in self._outputs:
                    doc.pop(name, None)
                doc.update(msgspec.json.decode(tail))
                return _encode_numbers(doc)
        head = raw.rstrip()[:-1].rstrip()     # a JSON object: it ends with "}"
        return head + (tail[1:] if head.endswith(b"{") else b"," + tail[1:])


# Integers past Python's int-string limit are read as decimals and written back digit for digit.
_encode_numbers = msgspec.json.Encoder(decimal_format="number").encode


def _int_or_decimal(literal: str) -> int | decimal.Decimal:
    try:
        return int(literal)
    except ValueError:
        return decimal.Decimal(literal)


def _attr(name: str) -> str:
    return "f_" + hashlib.sha1(name.encode()).hexdigest()[:12]


def _first(item: tuple[Any, ...]) -> Any:
    return item[0]


def _id_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    return str(value) if isinstance(value, (str, int)) else None


def _request_item(schema: EventSchema, request: RequestBody) -> tuple[Any, list[int] | None]:
    """A struct class that encodes as one request item, and which event values it takes (None = all, in order)."""
    names = [name for name, _ in request.fields]
    attrs = [f"r{i}" for i in range(len(request.fields))]
    cls = msgspec.defstruct("RequestItem", [(a, Any) for a in attrs],
                            rename={a: wire for a, (_, wire) in zip(attrs, request.fields)})
    picks = [schema.index(n) for n in names]
    return cls, (None if picks == list(range(len(schema.fields))) else picks)


def _wrapping(request: RequestBody) -> tuple[bytes, bytes]:
    """The bytes around the encoded list: `{"model":"v2","items":` ... `}` for a wrapped list."""
    if not request.wrap:
        return b"", b""
    head, tail = b"", b""
    for depth, name in enumerate(request.wrap):
        members = b""
        if depth == 0 and request.static:
            members = json.dumps(dict(request.static), separators=(",", ":")).encode()[1:-1] + b","
        head += b"{" + members + json.dumps(name).encode() + b":"
        tail = b"}" + tail
    return head, tail


def _response_type(response: ResponseBody) -> Any:
    """The msgspec type of a plain response: nested structs down to a list of items (id, *fields)."""
    id_type: Any = str | int | None if response.id_field else Any
    item_fields: list[Any] = [("rid", id_type, None)]
    rename = {"rid": response.id_field or "__no_id__"}
    for i, spec in enumerate(response.fields):
        item_fields.append(spec.struct_field(f"v{i}"))
        rename[f"v{i}"] = spec.name
    item: Any = msgspec.defstruct("ResultItem", item_fields, rename=rename, frozen=True, kw_only=True)
    doc: Any = list[item]
    for name in reversed(response.results_at):
        doc = msgspec.defstruct("ResultPath", [(_attr(name), doc)], rename={_attr(name): name}, frozen=True)
    return doc


def _result_types(schema: EventSchema, response: ResponseBody, result: ResultDocument) -> tuple[Any, Any]:
    """Struct classes that encode the result's part of a record, and a whole record (event + result)."""
    outputs = [f.output_name for f in response.fields] + list(result.metadata)
    tail = msgspec.defstruct("ResultTail", [(f"o{i}", Any) for i in range(len(outputs))],
                             rename={f"o{i}": n for i, n in enumerate(outputs)})
    names = list(schema.names) + outputs
    full = msgspec.defstruct("ResultRecord", [(f"o{i}", Any) for i in range(len(names))],
                             rename={f"o{i}": n for i, n in enumerate(names)})
    return tail, full


def _json_document(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=refuse_constant, parse_int=parse_int)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidResponse("response body is not JSON (cut short or garbled)", retryable=True) from None
    except RecursionError:
        raise InvalidResponse("response body is nested too deeply") from None
    except ValueError as e:   # NaN or Infinity (refuse_constant): long integers are read (parse_int)
        raise InvalidResponse(f"response body is not JSON: {e}") from None
