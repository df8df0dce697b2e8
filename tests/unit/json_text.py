"""Hypothesis strategies for JSON *text*, hostile included: what `json.dumps` never writes.

Huge integers (past float range, past Python's 4,300-digit int-string limit),
1e999, NaN/Infinity tokens, lone surrogates as escapes and as raw code points,
very long strings, deep nesting, duplicate names, and event-shaped objects in
which every field may be valid, absent, repeated or any JSON value.

How many examples each fuzz test runs: `FUZZ_EXAMPLES` (default 300, what
`make test` runs; the README gives the long campaign's command and findings).
"""
from __future__ import annotations

import json
import os

from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))

GOOD = dict(txn_id="t-1", account_id="acct-1", card_id="card-1", merchant="m-1", amount=12.5,
            currency="EUR", event_time="2026-11-26T19:00:00.123Z")

strings = st.one_of(
    st.text(max_size=40).map(json.dumps),
    st.text(max_size=40).map(lambda s: json.dumps(s, ensure_ascii=False)),  # raw code points, surrogates too
    st.sampled_from(['"\\ud800"', '"\\udfff"', '"x\\ud83d"', '"\\ud83d\\ude00"', '"\\u0000"', '"EUR\\n"', '" "']),
    st.integers(100, 70_000).map(lambda n: '"' + "x" * n + '"'),
)
numbers = st.one_of(
    st.integers().map(str),
    st.integers(10, 6_000).map(lambda n: "1" + "0" * n),   # 1 followed by up to 6,000 zeros
    st.floats().map(lambda f: json.dumps(f)),               # NaN, Infinity, -Infinity included
    st.sampled_from(["1e999", "-1e999", "1e-999", "-0", "-0.0", "5e-324", "1E400", "1000000", "1000000.0000001"]),
    st.builds("{}e{}".format, st.integers(-10**6, 10**6), st.integers(-2_000, 2_000)),
)
scalars = st.one_of(st.sampled_from(["null", "true", "false"]), numbers, strings)
names = st.one_of(st.sampled_from(sorted(GOOD)).map(json.dumps), strings)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{name}:{value}" for name, value in pairs) + "}"


values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5).map(_array),
                            st.lists(st.tuples(names, inner), max_size=5).map(_object)),
    max_leaves=20)
deep = st.builds(lambda depth, array: "[" * depth + "]" * depth if array else '{"a":' * depth + "1" + "}" * depth,
                 st.integers(1, 30_000), st.booleans())


@st.composite
def events(draw: st.DrawFn) -> tuple[str, bool]:
    """(text, valid): a good event with up to three fields absent, repeated or replaced by a
    number, a string or any JSON value, in any order, maybe with extra names; `valid` when
    nothing was changed."""
    replacements = {"number": numbers, "string": strings, "value": values, "deep": deep}
    changed = draw(st.dictionaries(st.sampled_from(sorted(GOOD)), st.sampled_from(["absent", "twice", *replacements]),
                                   max_size=3))
    pairs: list[tuple[str, str]] = []
    for name, good in GOOD.items():
        change = changed.get(name)
        if change == "absent":
            continue
        pairs.append((json.dumps(name), draw(replacements[change]) if change in replacements else json.dumps(good)))
        if change == "twice":
            pairs.append((json.dumps(name), draw(st.one_of(st.just(json.dumps(good)), values))))
    extras = draw(st.lists(st.tuples(names, values), max_size=2))  # valid JSON, but may repeat a name or be too large
    return _object(draw(st.permutations(pairs + extras))), not changed and not extras


def _replaced(name: str, value: str) -> str:
    return _object([(json.dumps(n), value if n == name else json.dumps(good)) for n, good in GOOD.items()])


#: A good event with one field replaced by any number, string or JSON value (or deep nesting).
one_field = st.builds(_replaced, st.sampled_from(sorted(GOOD)), st.one_of(numbers, strings, values, deep))


def encoded(text: str) -> bytes:
    """UTF-8, except that raw lone surrogates stay (as bytes no UTF-8 decoder accepts)."""
    return text.encode("utf-8", "surrogatepass")


#: Message values: arbitrary bytes, any JSON document, deep nesting, event-shaped objects.
message_values = st.one_of(
    st.binary(max_size=2_048),
    values.map(encoded),
    deep.map(encoded),
    events().map(lambda e: encoded(e[0])),
    one_field.map(encoded),
)
