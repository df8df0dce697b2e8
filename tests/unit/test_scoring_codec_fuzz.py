"""The response codec over arbitrary bodies (strategies: json_text.py): verdicts the rest of the
path can use, or InvalidResponse with a one-line reason - never another exception, which would
travel through the runtime's future into the bundle."""
from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.json_text import FUZZ_EXAMPLES, deep, encoded, names, numbers, strings, values
from transforms.events import encodable
from transforms.scoring.codec import (
    MAX_DECISION_CHARS,
    InvalidResponse,
    Verdict,
    _general_verdicts,
    _plain_verdicts,
    decode_response,
)

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TXN_IDS = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4, unique=True)


@st.composite
def answers(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A good answer for `txn_ids`, then results dropped, added, swapped, or fields replaced."""
    txn_ids = draw(TXN_IDS)
    items = [{"txn_id": json.dumps(t), "score": "0.25", "decision": '"approve"', "model_version": '"m1"'}
             for t in txn_ids]
    for item in draw(st.lists(st.sampled_from(items), max_size=3)):
        field = draw(st.sampled_from(sorted(item)))
        item[field] = draw(st.one_of(numbers, strings, values, st.just(json.dumps(draw(st.sampled_from(txn_ids))))))
    results = [("{" + ",".join(f'"{k}":{v}' for k, v in item.items()) + "}") for item in items]
    results = draw(st.one_of(st.just(results), st.permutations(results), st.lists(st.sampled_from(results), max_size=5),
                             st.lists(values, max_size=4)))
    top = draw(st.sampled_from(['{"results":[%s]}', '[%s]', '{"results":[%s],"results":7}', '{"results":{"0":[%s]}}']))
    extra = draw(st.one_of(st.just(""), st.tuples(names, values).map(lambda p: f",{p[0]}:{p[1]}")))
    text = top % ",".join(results)
    return encoded(text[:-1] + extra + text[-1] if text.endswith("}") else text), txn_ids


bodies = st.one_of(st.binary(max_size=2_048), values.map(encoded), deep.map(encoded))


def check(body: bytes, txn_ids: list[str]) -> None:
    try:
        verdicts = decode_response(body, txn_ids)
    except InvalidResponse as e:
        assert str(e) and "\n" not in str(e) and len(str(e)) <= 200, str(e)
        return
    assert len(verdicts) == len(txn_ids)
    for v in verdicts:
        assert isinstance(v.score, float) and math.isfinite(v.score)
        assert 1 <= len(v.decision) <= MAX_DECISION_CHARS and encodable(v.decision)
        assert len(v.model_version) <= MAX_DECISION_CHARS and encodable(v.model_version)


@FUZZ
@given(answers())
def test_any_answer_shape_is_verdicts_or_a_one_line_reason(answer: tuple[bytes, list[str]]) -> None:
    check(*answer)


@FUZZ
@given(bodies, TXN_IDS)
def test_any_body_is_verdicts_or_a_one_line_reason(body: bytes, txn_ids: list[str]) -> None:
    check(body, txn_ids)


def accepted_alike(body: bytes, txn_ids: list[str]) -> None:
    """The fast path accepts only what the general path accepts, with the same verdicts."""
    fast = _plain_verdicts(body, txn_ids)
    if fast is not None:
        assert _general_verdicts(body, txn_ids) == fast


@FUZZ
@given(st.one_of(answers(), st.tuples(bodies, TXN_IDS)))
def test_the_fast_path_accepts_only_what_the_general_path_accepts(answer: tuple[bytes, list[str]]) -> None:
    accepted_alike(*answer)


def test_the_fast_path_takes_plain_answers_and_leaves_the_rest_to_the_general_path() -> None:
    item = {"txn_id": "t1", "score": 0.25, "decision": "approve", "model_version": "m1"}
    assert _plain_verdicts(json.dumps({"results": [item]}).encode(), ["t1"]) == [Verdict(0.25, "approve", "m1")]
    for body in ({"results": [item], "results ": 1}, {"results": [dict(item, txn_id="t2")]},
                 {"results": [dict(item, score=True)]}, {"results": [dict(item, decision="")]},
                 {"results": [dict(item, model_version="m" * 65)]}, {"results": [dict(item, decision="caf\u00e9")]}):
        text = json.dumps(body)
        accepted_alike(text.encode(), ["t1"])
    plain = json.dumps(item)
    for text in ('{"results":[' + plain + '],"results":7}',                  # the last name wins
                 '{"results":[' + plain[:-1] + ',"score":1e999}]}',            # so does a score out of range
                 '{"results":[' + json.dumps(dict(item, txn_id="t\\u0031")) + ']}'):  # an escape
        assert _plain_verdicts(text.encode(), ["t1"]) is None
        accepted_alike(text.encode(), ["t1"])
