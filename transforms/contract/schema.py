"""The events a job reads, by configuration: which fields they must have, of which types, which
field identifies an event and which spreads work over shards.

`EventSchema.parse(raw)` turns a message into `(values, id, key)` - the
schema's fields in schema order - or raises `InvalidEvent` with a one-line
reason. Fields the schema does not name are not parsed at all: they stay in
the message's bytes, which the result is built from (`result.py`), so they
reach the output untouched.

A plain message - no escapes, each schema field named once - is decoded and
checked by msgspec in one call (`fields.py` explains the two paths); anything
else takes the general path, which decides and gives the reason. Of the
fields the schema names, none may appear twice: with `{"amount": 5,
"amount": 5000}` parsers disagree on the amount, so no one could tell which
one was sent to the service.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from transforms.contract.fields import (
    FastChecks,
    FieldSpec,
    InvalidValue,
    brief,
    deeper_than,
    parse_int,
    plain_bytes,
    refuse_constant,
    unwritable,
)

#: How deep a value of an object, array or any field may be nested (`{}` is 1). Beam pickles
#: elements where it samples their sizes, and pickle gives up at about 460 levels; JSON parsers
#: stop somewhere too (serde_json at 128).
MAX_NESTING = 128


class InvalidEvent(ValueError):
    """A message that cannot be enriched; `str(e)` is the dead letter's detail."""


class Event(msgspec.Struct, frozen=True, gc=False):
    """An event as the schema sees it: its fields' values in schema order, its id and shard key.
    Not tracked by the garbage collector (it holds decoded JSON, which cannot refer back to it):
    one object fewer per event for every collection to walk."""
    values: tuple[Any, ...]
    id: str
    key: str


@dataclass(frozen=True)
class EventSchema:
    fields: tuple[FieldSpec, ...]
    id_field: str
    shard_key: str
    max_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if not names:
            raise ValueError("event.fields must name at least one field")
        repeated = [n for n, c in Counter(names).items() if c > 1]
        if repeated:
            raise ValueError(f"event field {repeated[0]!r} is named twice")
        for role, name in (("event.id", self.id_field), ("event.shard_key", self.shard_key)):
            spec = self.field(name)
            if spec is None:
                raise ValueError(f"{role} names {name!r}, which is not in event.fields")
            if not spec.required or spec.type not in ("string", "integer"):
                raise ValueError(f"{role} field {name!r} must be a required string or integer")
        if self.max_bytes < 1:
            raise ValueError("event.max_bytes must be >= 1")
        object.__setattr__(self, "_parser", _Parser(self))   # fails here, at load, if msgspec cannot express a field

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the parser: its msgspec classes are made at run time, in each process."""
        return {k: v for k, v in self.__dict__.items() if k != "_parser"}

    @property
    def parser(self) -> _Parser:
        """The parser (built in each process: its msgspec classes are made at run time)."""
        return self._p

    @property
    def _p(self) -> _Parser:
        parser: _Parser | None = self.__dict__.get("_parser")
        if parser is None:
            parser = _Parser(self)
            object.__setattr__(self, "_parser", parser)
        return parser

    @property
    def plain_quotes(self) -> int | None:
        """With every field required and of a scalar type, the quotes a document of exactly the
        schema's fields has, without escapes (2 per name, 2 per string value): any other count means
        another or a repeated name. None when optional or structured fields make it vary."""
        if not all(f.required and f.type in ("string", "number", "integer", "boolean") for f in self.fields):
            return None
        return 2 * len(self.fields) + 2 * sum(f.type == "string" for f in self.fields)

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def parse(self, raw: bytes | None) -> Event:
        """The event in `raw`, or InvalidEvent with a one-line reason (it raises nothing else)."""
        return self._p.parse(raw)

    def event(self, doc: Mapping[str, Any]) -> Event:
        """An event from a mapping (a user's dict), checked like a message."""
        return self._p.from_mapping(doc)


class _Parser:
    def __init__(self, schema: EventSchema) -> None:
        self._schema = schema
        self._fields = schema.fields
        self._names = schema.names
        self._id_at = schema.index(schema.id_field)
        self._key_at = schema.index(schema.shard_key)
        self._max_bytes = schema.max_bytes
        attrs = [f"f{i}" for i in range(len(self._fields))]
        struct = msgspec.defstruct("EventFields", [f.struct_field(a) for a, f in zip(attrs, self._fields)],
                                   rename=dict(zip(attrs, self._names)), frozen=True, kw_only=True)
        self._decode = msgspec.json.Decoder(struct).decode
        self._astuple = msgspec.structs.astuple
        self._quoted = [json.dumps(n, ensure_ascii=False).encode() for n in self._names]
        checks = FastChecks(self._fields)
        self._checks = checks if checks.needed else None
        self._quotes = schema.plain_quotes
        self._nestable = tuple((i, f.name) for i, f in enumerate(self._fields) if f.type in ("object", "array", "any"))

    def parse(self, raw: bytes | None) -> Event:
        if not raw:
            raise InvalidEvent("empty message")
        if len(raw) > self._max_bytes:
            raise InvalidEvent(f"message too large ({len(raw)} bytes > {self._max_bytes})")
        values = self._plain(raw)
        if values is None:
            values = self._general(raw)
        if self._nestable and raw.count(b"{") + raw.count(b"[") > MAX_NESTING:   # else it cannot nest that deep
            self._check_nesting(values)
        id_, key = values[self._id_at], values[self._key_at]
        return Event(values, id_ if id_.__class__ is str else str(id_), key if key.__class__ is str else str(key))

    def _plain(self, raw: bytes) -> tuple[Any, ...] | None:
        """The values if `raw` is a plain, valid event, else None (the general path decides)."""
        if b"\\" in raw or not (raw.isascii() or plain_bytes(raw)):
            return None
        if self._quotes is None or raw.count(b'"') != self._quotes:
            for quoted in self._quoted:
                if raw.count(quoted) > 1:   # named twice (or a value equal to a name: the general path tells)
                    return None
        try:
            values = self._astuple(self._decode(raw))
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            return None
        checks = self._checks
        if checks is None:
            return values
        return checks.filled(values) if checks.ok(values) else None

    def _general(self, raw: bytes) -> tuple[Any, ...]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent("message is not UTF-8") from None
        doc = self._json(text)
        if not isinstance(doc, dict):
            raise InvalidEvent(f"expected a JSON object, got {type(doc).__name__}")
        values = self._values(doc)
        # In a field the schema does not name: a lone surrogate would reach the output; an integer too
        # long to read goes there as it came (the record keeps the event's bytes).
        problem = unwritable(doc, carried=True)
        if problem is not None:
            raise InvalidEvent(f"a field {problem}")
        return values

    def _check_nesting(self, values: tuple[Any, ...]) -> None:
        for i, name in self._nestable:
            if deeper_than(values[i], MAX_NESTING):
                raise InvalidEvent(f"field '{name}' is nested deeper than {MAX_NESTING} levels")

    def from_mapping(self, doc: Mapping[str, Any]) -> Event:
        values = self._values(doc)
        self._check_nesting(values)
        return Event(values, str(values[self._id_at]), str(values[self._key_at]))

    def _values(self, doc: Mapping[str, Any]) -> tuple[Any, ...]:
        missing = [f.name for f in self._fields if f.required and doc.get(f.name) is None]
        if missing:
            raise InvalidEvent(f"missing field(s): {', '.join(missing)}")
        values = []
        for f in self._fields:
            value = doc.get(f.name)
            if value is None:
                values.append(f.default)
                continue
            try:
                values.append(f.check(value))
            except InvalidValue as e:
                raise InvalidEvent(str(e)) from None
        return tuple(values)

    def _json(self, text: str) -> Any:
        try:
            return json.loads(text, object_pairs_hook=self._object, parse_constant=refuse_constant,
                              parse_int=parse_int)
        except RecursionError:
            raise InvalidEvent("invalid JSON: too deeply nested") from None
        except InvalidEvent:
            raise
        except json.JSONDecodeError as e:
            raise InvalidEvent(f"invalid JSON: {e.msg}") from None
        except ValueError as e:   # NaN or Infinity (refuse_constant): long integers are read (parse_int)
            raise InvalidEvent(f"invalid JSON: {e}") from None

    def _object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        doc = dict(pairs)
        if len(doc) != len(pairs):
            repeated = [n for n, count in Counter(n for n, _ in pairs).items() if count > 1 and n in self._names]
            if repeated:
                raise InvalidEvent(f"invalid JSON: duplicate name {brief(repeated[0])}")
        return doc


def probe_event(schema: EventSchema, given: Mapping[str, Any] | None) -> Event:
    """The event the start-up probe sends: `given`, else one made of each field's `example`
    (or a plain value of its type); ValueError naming the field when that is not a valid event."""
    doc = dict(given) if given is not None else {f.name: _example(f) for f in schema.fields}
    try:
        return schema.event(doc)
    except InvalidEvent as e:
        source = "probe.event" if given is not None else "the synthetic probe event (set `example` on the field)"
        raise ValueError(f"{source} is not a valid event: {e}") from None


def _example(spec: FieldSpec) -> Any:
    if spec.example is not None:
        return spec.example
    if spec.enum:
        return spec.enum[0]
    if spec.type == "string":
        return "2026-01-01T00:00:00Z" if spec.format == "date-time" else "probe"
    if spec.type in ("number", "integer"):
        low = spec.minimum if spec.minimum is not None else spec.exclusive_minimum
        base = (low or 0) + 1
        return int(base) if spec.type == "integer" else float(base)
    return {"boolean": True, "object": {}, "array": [], "any": "probe"}[spec.type]
