"""One field of a contract - of an event or of a service's result - and the two ways it is checked.

A field has a JSON type (`string`, `number`, `integer`, `boolean`, `object`,
`array`, `any`) and optional constraints in JSON Schema's words
(`min_length`, `max_length`, `minimum`, `maximum`, `exclusive_minimum`,
`exclusive_maximum`, `enum`, `format: date-time`), plus `pattern` (the whole
value must match: Python `re.fullmatch`) and `not_blank`.

Every document is checked twice over, for speed and for precision: the fast
path hands msgspec a typed struct (`annotation`) that checks types, lengths,
ranges and patterns in C, then runs the checks C cannot make (`FastChecks`);
whatever the fast path refuses goes to the general path (`check`), which
decides and says precisely what is wrong. The fast path only ever accepts
what the general one accepts, as the same value (tests/unit/test_contract_fuzz.py).
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

TYPES = ("string", "number", "integer", "boolean", "object", "array", "any")
FORMATS = ("date-time",)


class InvalidValue(ValueError):
    """A value that breaks its field's rules; `str(e)` is the one-line reason."""


@dataclass(frozen=True)
class FieldSpec:
    name: str                              # as it is named in the document
    type: str = "any"
    required: bool = True
    default: Any = None                    # what an absent or null optional field becomes
    min_length: int | None = None          # strings
    max_length: int | None = None
    minimum: float | None = None           # numbers
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    pattern: str | None = None
    format: str | None = None
    enum: tuple[Any, ...] | None = None
    not_blank: bool = False
    example: Any = None                    # for the start-up probe's synthetic event
    output: str | None = None              # result fields: the name in the enriched record (`as`)

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"field {self.name!r}: type must be one of {', '.join(TYPES)} (got {self.type!r})")
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"field {self.name!r}: format must be one of {', '.join(FORMATS)}")
        string_only = (self.min_length, self.max_length, self.pattern, self.format) != (None, None, None, None)
        if (string_only or self.not_blank) and self.type != "string":
            raise ValueError(f"field {self.name!r}: length, pattern, format and not_blank apply to strings only")
        numeric = (self.minimum, self.maximum, self.exclusive_minimum, self.exclusive_maximum)
        if any(v is not None for v in numeric) and self.type not in ("number", "integer"):
            raise ValueError(f"field {self.name!r}: minimum and maximum apply to numbers only")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"field {self.name!r}: pattern is not a regular expression ({e})") from None

    @property
    def output_name(self) -> str:
        return self.output or self.name

    # ---- the general path -------------------------------------------------------------------

    def check(self, value: Any) -> Any:
        """The value as the field holds it, or InvalidValue with the reason (never anything else)."""
        if isinstance(value, HugeInteger):
            raise InvalidValue(f"field '{self.name}' is an integer literal too long to read")
        kind = self.type
        if kind == "string":
            value = self._string(value)
        elif kind in ("number", "integer"):
            value = self._number(value)
        elif kind == "boolean" and not isinstance(value, bool):
            raise self._wrong_type(value)
        elif kind == "object" and not isinstance(value, dict):
            raise self._wrong_type(value)
        elif kind == "array" and not isinstance(value, list):
            raise self._wrong_type(value)
        if kind in ("object", "array", "any"):
            problem = unwritable(value)
            if problem is not None:
                raise InvalidValue(f"field '{self.name}' {problem}")
        if self.enum is not None and value not in self.enum:
            raise InvalidValue(f"field '{self.name}' must be one of {', '.join(map(repr, self.enum))}: {brief(value)}")
        return value

    def _wrong_type(self, value: Any) -> InvalidValue:
        article = "an" if self.type[0] in "aeiou" else "a"
        return InvalidValue(f"field '{self.name}' must be {article} {self.type}, got {_json_type(value)}")

    def _string(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._wrong_type(value)
        if not encodable(value):
            raise InvalidValue(f"field '{self.name}' is not valid Unicode (lone surrogate)")
        low, high = self.min_length or 0, self.max_length
        if len(value) < low or (high is not None and len(value) > high):
            span = f"{low}-{high}" if high is not None else f"at least {low}"
            raise InvalidValue(f"field '{self.name}' must be {span} characters")
        if self.not_blank and not value.strip():
            raise InvalidValue(f"field '{self.name}' must not be blank")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise InvalidValue(f"field '{self.name}' does not match {self.pattern}: {brief(value)}")
        if self.format == "date-time" and not iso_8601(value):
            raise InvalidValue(f"field '{self.name}' is not ISO-8601: {brief(value)}")
        return value

    def _number(self, value: Any) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._wrong_type(value)
        if self.type == "integer":
            if isinstance(value, float):
                if not value.is_integer():
                    raise InvalidValue(f"field '{self.name}' must be an integer, got {brief(value)}")
                value = int(value)
            number: float | int = value
        else:
            number = _as_float(value)   # 10**400 has no float: it is out of range like an infinity
            if not math.isfinite(number):
                raise InvalidValue(f"field '{self.name}' out of range: {brief(number)}")
        if not self._in_range(number):
            raise InvalidValue(f"field '{self.name}' out of range {self._range()}: {brief(number)}")
        return number

    def _in_range(self, x: float | int) -> bool:
        return ((self.minimum is None or x >= self.minimum) and (self.maximum is None or x <= self.maximum)
                and (self.exclusive_minimum is None or x > self.exclusive_minimum)
                and (self.exclusive_maximum is None or x < self.exclusive_maximum))

    def _range(self) -> str:
        low = (f"({self.exclusive_minimum:g}" if self.exclusive_minimum is not None
               else f"[{self.minimum:g}" if self.minimum is not None else "(-inf")
        high = (f"{self.exclusive_maximum:g})" if self.exclusive_maximum is not None
                else f"{self.maximum:g}]" if self.maximum is not None else "inf)")
        return f"{low}, {high}"

    # ---- the fast path ----------------------------------------------------------------------

    def annotation(self) -> Any:
        """The msgspec type that checks in C what it can of this field (a subset of `check`)."""
        base: Any
        meta: dict[str, Any] = {}
        if self.type == "string":
            base = str
            if self.min_length:
                meta["min_length"] = self.min_length
            if self.max_length is not None:
                meta["max_length"] = self.max_length
            if self.pattern is not None:
                meta["pattern"] = rf"\A(?:{self.pattern})\Z"
        elif self.type in ("number", "integer"):
            base = float if self.type == "number" else int
            for ours, theirs in (("minimum", "ge"), ("maximum", "le"), ("exclusive_minimum", "gt"),
                                 ("exclusive_maximum", "lt")):
                if getattr(self, ours) is not None:
                    meta[theirs] = getattr(self, ours)
        else:
            base = {"boolean": bool, "object": dict, "array": list, "any": Any}[self.type]
        if self._enum_in_c:
            base = Literal[tuple(self.enum or ())]
        annotated = Annotated[base, msgspec.Meta(**meta)] if meta else base
        return annotated if self.required or self._default_in_c else annotated | None

    def struct_field(self, attr: str) -> tuple[Any, ...]:
        """This field in `msgspec.defstruct`: required, or with the default msgspec fills in (an absent
        field; a null one is left to the general path, which also makes it the default)."""
        if self.required:
            return (attr, self.annotation())
        return (attr, self.annotation(), self.default if self._default_in_c else None)

    @property
    def _default_in_c(self) -> bool:
        return not self.required and self.default is not None and isinstance(self.default, (str, int, float, bool))

    @property
    def _enum_in_c(self) -> bool:
        return self.enum is not None and self.type == "string" and all(isinstance(v, str) for v in self.enum)


class FastChecks:
    """What msgspec cannot check of a struct's fields (`not_blank`, `date-time`, an enum of other
    than strings, a default it cannot fill in), as loops over the fields' positions in its tuple.
    The fast paths read only documents without escapes, so no lone surrogate can reach here."""

    def __init__(self, specs: tuple[FieldSpec, ...], offset: int = 0) -> None:
        at = [(i + offset, f) for i, f in enumerate(specs)]
        self._blank = tuple(i for i, f in at if f.not_blank)
        self._times = tuple(i for i, f in at if f.format == "date-time")
        self._enums = tuple((i, f.enum) for i, f in at if f.enum is not None and not f._enum_in_c)
        self._fill = tuple((i, f.default) for i, f in at
                           if not f.required and f.default is not None and not f._default_in_c)

    @property
    def fills(self) -> bool:
        return bool(self._fill)

    @property
    def needed(self) -> bool:
        return bool(self._blank or self._times or self._enums or self._fill)

    def ok(self, values: tuple[Any, ...]) -> bool:
        for i in self._blank:
            v = values[i]
            if v is not None and not v.strip():
                return False
        for i in self._times:
            v = values[i]
            if v is not None and not iso_8601(v):
                return False
        for i, enum in self._enums:
            v = values[i]
            if v is not None and v not in enum:
                return False
        return True

    def filled(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """`values` with the defaults msgspec could not fill in (a list or an object: copied)."""
        if not self._fill:
            return values
        out = list(values)
        for i, default in self._fill:
            if out[i] is None:
                out[i] = copy.deepcopy(default)
        return tuple(out)


def plain_bytes(raw: bytes) -> bool:
    """Whether a fast path may read `raw`: no escapes, and valid UTF-8 throughout (msgspec does not
    check the members it skips)."""
    if b"\\" in raw:
        return False
    if raw.isascii():
        return True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class HugeInteger:
    """An integer literal past Python's int-string limit (4,300 digits), as the general paths read
    one: msgspec's fast paths skip such a literal in a member they do not read, so the general paths
    accept it there too, and refuse it only where a field reads it."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def parse_int(literal: str) -> int | HugeInteger:
    """`json.loads(parse_int=...)`."""
    try:
        return int(literal)
    except ValueError:
        return HugeInteger(literal)


def refuse_constant(name: str) -> Any:
    """`json.loads(parse_constant=...)`: NaN and Infinity are not JSON (msgspec refuses them too)."""
    raise ValueError(f"{name} is not a JSON number")


def iso_8601(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def encodable(text: str) -> bool:
    """False for a str with a lone surrogate: json.loads makes one of "\\ud800", and no
    Kafka key or UTF-8 output can hold it."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unwritable(value: Any, carried: bool = False) -> str | None:
    """Why a decoded value could not be written as JSON again - a lone surrogate anywhere, keys
    included, and, unless it is `carried` as the bytes it came in, an integer literal too long to
    read or a number beyond float range (1e999) - else None; iterative, as deep as whatever
    json.loads managed to decode."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if not encodable(item):
                return "is not valid Unicode (lone surrogate)"
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        elif carried:
            continue
        elif isinstance(item, HugeInteger):
            return "holds an integer literal too long to read"
        elif isinstance(item, float) and not math.isfinite(item):
            return "holds a number out of range"
    return None


def deeper_than(value: Any, levels: int) -> bool:
    """Whether objects and arrays in `value` nest deeper than `levels` (`{}` is one); iterative."""
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            if depth > levels:
                return True
            todo.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def _as_float(number: int | float) -> float:
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    names: dict[type, str] = {str: "string", dict: "object", list: "array"}
    return names.get(type(value), type(value).__name__)


def brief(value: object) -> str:
    """`repr(value)` cut to fit a reason line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
