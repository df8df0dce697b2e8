"""Hypothesis strategies for JSON *text*, hostile included: what `json.dumps` never writes.

Huge integers (past float range, past Python's 4,300-digit int-string limit),
1e999, NaN/Infinity tokens, lone surrogates as escapes and as raw code points,
very long strings, deep nesting, duplicate names, and event-shaped objects in
which every field may be valid, absent, repeated or any JSON value. The
event-shaped strategies take the good event they start from (`GOOD`, a payment
event, unless told), so they serve any contract's schema.

How many examples each fuzz test runs: `FUZZ_EXAMPLES` (default 300, what
`make test` runs; docs/guarantees.md gives the long campaign's command and findings).
"""
from __future__ import annotations

import json
import os

from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))

GOOD = dict(txn_id="t-1", account_id="acct-1", card_id="card-1", merchant="m-1", amount=12.5,
            currency="EUR", event_time="2026-11-26T19:00:00.123Z")

#: Text with lone surrogates among other code points: written raw (`ensure_ascii=False`), they
#: become bytes no UTF-8 decoder accepts (`encoded`); st.text() alone never draws a surrogate.
with_surrogates = st.builds("{}{}{}".format, st.text(max_size=5), st.characters(categories=["Cs"]), st.text(max_size=5))

strings = st.one_of(
    st.text(max_size=40).map(json.dumps),
    st.text(max_size=40).map(lambda s: json.dumps(s, ensure_ascii=False)),  # raw code points
    with_surrogates.map(lambda s: json.dumps(s, ensure_ascii=False)),        # raw lone surrogates
    with_surrogates.map(json.dumps),                                         # ... and as escapes
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


def names_of(good: dict[str, object]) -> st.SearchStrategy[str]:
    """Member names: the good event's own (so they repeat) or any string."""
    return st.one_of(st.sampled_from(sorted(good)).map(json.dumps), strings)


names = names_of(GOOD)


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
def events(draw: st.DrawFn, good_event: dict[str, object] | None = None) -> tuple[str, bool]:
    """(text, valid): a good event (`GOOD` unless given) with up to three fields absent, repeated
    or replaced by a number, a string or any JSON value, in any order, maybe with extra names;
    `valid` when nothing was changed."""
    good_event = GOOD if good_event is None else good_event
    replacements = {"number": numbers, "string": strings, "value": values, "deep": deep}
    changed = draw(st.dictionaries(st.sampled_from(sorted(good_event)),
                                   st.sampled_from(["absent", "twice", *replacements]), max_size=3))
    pairs: list[tuple[str, str]] = []
    for name, good in good_event.items():
        change = changed.get(name)
        if change == "absent":
            continue
        pairs.append((json.dumps(name), draw(replacements[change]) if change in replacements else json.dumps(good)))
        if change == "twice":
            pairs.append((json.dumps(name), draw(st.one_of(st.just(json.dumps(good)), values))))
    # valid JSON, but may repeat a name or be too large
    extras = draw(st.lists(st.tuples(names_of(good_event), values), max_size=2))
    return _object(draw(st.permutations(pairs + extras))), not changed and not extras


def _replaced(good_event: dict[str, object], name: str, value: str) -> str:
    return _object([(json.dumps(n), value if n == name else json.dumps(good)) for n, good in good_event.items()])


def one_field_of(good_event: dict[str, object]) -> st.SearchStrategy[str]:
    """The good event with one field replaced by any number, string or JSON value (or deep nesting)."""
    return st.builds(_replaced, st.just(good_event), st.sampled_from(sorted(good_event)),
                     st.one_of(numbers, strings, values, deep))


one_field = one_field_of(GOOD)


def encoded(text: str) -> bytes:
    """UTF-8, except that raw lone surrogates stay (as bytes no UTF-8 decoder accepts)."""
    return text.encode("utf-8", "surrogatepass")


def message_values_of(good_event: dict[str, object]) -> st.SearchStrategy[bytes]:
    """Message values: arbitrary bytes, any JSON document, deep nesting, objects shaped like `good_event`."""
    return st.one_of(
        st.binary(max_size=2_048),
        values.map(encoded),
        deep.map(encoded),
        events(good_event).map(lambda e: encoded(e[0])),
        one_field_of(good_event).map(encoded),
    )


message_values = message_values_of(GOOD)
