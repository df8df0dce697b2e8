"""The public API on the FnApiRunner against real local HTTP services, without Kafka: a user type
through a caller of the user's own (the example), any JSON service through a contract, and a job
that stops instead of dead-lettering. `make test-beam-latest` runs this file on the newest Beam too."""
from __future__ import annotations

import json
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import apache_beam as beam
import pytest

from examples.enrich_orders import RATES, enrich_orders, local_fx_service, sample_orders
from transforms.contract.http import HttpJsonCaller
from transforms.contract.loader import parse_contract
from transforms.enrichment import SUPPORTED_BEAM_VERSIONS, Enriched, Failed, ThrottledEnrichment, ThrottleSettings

FNAPI = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def test_the_example_enriches_a_user_type_through_a_rate_limited_service() -> None:
    orders = sample_orders(600)
    with local_fx_service(rate_rps=40) as url:          # 24 requests of 25: some meet a 429 and wait
        outcomes = enrich_orders(orders, url)
    assert sorted(o.element.order_id for o in outcomes) == sorted(o.order_id for o in orders)
    for outcome in outcomes:
        order = outcome.element
        if order.currency in RATES:
            assert isinstance(outcome, Enriched) and outcome.result == round(order.amount * RATES[order.currency], 2)
        else:
            assert isinstance(outcome, Failed) and outcome.reason == "unknown_currency"


_LOCK = threading.Lock()
_OUT: dict[str, list] = defaultdict(list)


class _Collect(beam.DoFn):
    def __init__(self, run: str) -> None:
        self._run = run

    def process(self, element: object) -> tuple[()]:
        with _LOCK:
            _OUT[self._run].append(element)
        return ()


class _Echo(BaseHTTPRequestHandler):
    """{"items": [{"key", "n"}]} -> {"out": [{"key", "double"}]} in reverse order; 401 when told."""
    refuse = False

    def do_POST(self) -> None:  # noqa: N802
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, body = (401, {"error": "no"}) if self.refuse else (
            200, {"out": [{"key": i["key"], "double": 2 * i["n"]} for i in reversed(doc["items"])]})
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[tuple[str, type[_Echo]]]:
    handler = type("Echo", (_Echo,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/double", handler
    server.shutdown()


def contract(url: str):
    return parse_contract({
        "event": {"id": "key", "fields": {"key": {"type": "string"}, "n": {"type": "integer"}}},
        "service": {"url": url},
        "request": {"wrap": "items"},
        "response": {"results": "out", "match": "id", "id": "key", "fields": {"double": {"type": "integer"}}},
    })


def run_contract(items: list[dict], url: str, **settings) -> list:
    c = contract(url)
    run = uuid.uuid4().hex
    with beam.Pipeline(runner=FNAPI) as p:
        (p | beam.Create(items) | beam.Map(c.schema.event)
           | ThrottledEnrichment(HttpJsonCaller(c), ThrottleSettings(**settings), shard_key=lambda e: e.key)
           | beam.ParDo(_Collect(run)))
    return _OUT.pop(run, [])


def test_any_json_service_through_a_contract(echo) -> None:
    url, _ = echo
    outcomes = run_contract([{"key": f"k{i}", "n": i} for i in range(100)], url, batch_size=7)
    assert sorted((o.element.id, o.result) for o in outcomes) == sorted((f"k{i}", (2 * i,)) for i in range(100))


def test_a_service_that_refuses_the_job_stops_the_pipeline_with_one_line(echo) -> None:
    url, handler = echo
    handler.refuse = True
    with pytest.raises(Exception, match="enrichment stopped: http_401: status 401"):
        run_contract([{"key": f"k{i}", "n": i} for i in range(10)], url)


def test_the_supported_beam_versions_include_the_one_running() -> None:
    from importlib.metadata import version

    from packaging.version import Version
    running = Version(version("apache-beam"))
    low, high = (Version(bound.lstrip("<>=")) for bound in SUPPORTED_BEAM_VERSIONS)
    assert low <= running < high, (running, SUPPORTED_BEAM_VERSIONS)
