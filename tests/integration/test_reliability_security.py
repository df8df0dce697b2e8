"""Security: Kafka over TLS, the scoring token never leaks, a huge response is a dead letter.
(Redirects are refused: tests/unit/test_http_caller.py.)"""
from __future__ import annotations

import http.server
import json
import subprocess
import threading
from pathlib import Path

import pytest

from pipelines.enrich_payments import run
from testbed.kafka.admin import consume_all
from testbed.kafka.produce import produce_events
from testbed.support.local_ports import free_ports
from tests.integration.reliability_support import (
    fully_committed,
    job_args,
    make_topics,
    payments_contract,
    run_job,
    txn_ids,
)

pytestmark = pytest.mark.integration


# ---- (a) Kafka TLS -------------------------------------------------------------------------

def make_certs(d: Path) -> tuple[Path, Path]:
    """A CA and a broker key + certificate (SAN IP:127.0.0.1), all PEM; returns (ca, keystore)."""
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
        "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.pem", "-days", "2", "-extfile", "san.ext")
    ssl("pkcs8", "-topk8", "-nocrypt", "-in", "broker.key", "-out", "broker.pk8")
    keystore = d / "keystore.pem"
    keystore.write_text((d / "broker.pk8").read_text() + (d / "broker.pem").read_text())
    return d / "ca.pem", keystore


def test_pipeline_drains_over_tls(kafka_broker_factory, scoring_service, tmp_path) -> None:
    ca, keystore = make_certs(tmp_path)
    plain, controller, tls = free_ports(3)
    broker = kafka_broker_factory(port=plain, controller_port=controller, extra_properties={
        "listeners": f"PLAINTEXT://127.0.0.1:{plain},CONTROLLER://127.0.0.1:{controller},SSL://127.0.0.1:{tls}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{tls}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL",
        "ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM", "ssl.truststore.location": str(ca),
    })
    topics = make_topics(broker.bootstrap_servers, "tls", partitions=2)
    produced = produce_events(broker.bootstrap_servers, topics.inp, count=500, seed=31)
    tls_bootstrap = f"127.0.0.1:{tls}"
    summary = run(job_args(tls_bootstrap, topics, scoring_service.url, "g-tls",
                           "--kafka_property=security.protocol=SSL", f"--kafka_property=ssl.ca.location={ca}"))
    assert summary.counter("events_scored") == 500
    assert set(txn_ids(broker.bootstrap_servers, topics.out)) == set(produced.txn_ids)
    assert fully_committed(broker.bootstrap_servers, "g-tls", topics.inp)
    # A property outside the security keys that the connection needs: preflight must use it too.
    more = produce_events(broker.bootstrap_servers, topics.inp, count=50, seed=32)
    again = run(job_args(tls_bootstrap, topics, scoring_service.url, "g-tls", "--kafka_property=security.protocol=SSL",
                         "--kafka_property=enable.ssl.certificate.verification=false"))
    assert again.counter("events_scored") == 50 and set(more.txn_ids) <= set(txn_ids(broker.bootstrap_servers, topics.out))


# ---- (b) the token never leaks ---------------------------------------------------------------

TOKEN = "tok-3f9c1a7e5b2d4c6e8f0a1b3c5d7e9f11"


@pytest.mark.parametrize("source", ["env", "file"])
def test_scoring_token_is_never_printed_logged_or_exported(
        source, bootstrap_servers, scoring_service_factory, tmp_path) -> None:
    service = scoring_service_factory(token=TOKEN)
    topics = make_topics(bootstrap_servers, "token", partitions=2)
    produce_events(bootstrap_servers, topics.inp, count=300, malformed_fraction=0.05, seed=32)
    env = {}
    if source == "file":
        (tmp_path / "token").write_text(TOKEN + "\n")
        auth = {"type": "bearer", "file": str(tmp_path / "token")}
    else:
        env = {"MY_SCORING_TOKEN": TOKEN}
        auth = {"type": "bearer", "env": "MY_SCORING_TOKEN"}
    extra = [f"--contract={payments_contract(tmp_path / 'contract.yaml', auth=auth)}"]
    job = run_job(job_args(bootstrap_servers, topics, service.url, "g-token", "--progress_interval=1", *extra),
                  tmp_path, f"token-{source}", env=env)
    stats = service.stats()
    assert stats["rejected"]["unauthorized"] == 0 and stats["accepted_requests"] > 0  # the token was used
    exported = [job.stdout(), job.stderr(), job.summary_path.read_text()]
    for topic in (topics.out, topics.dlq):
        exported += [(r.key or b"").decode(errors="replace") + (r.value or b"").decode(errors="replace")
                     for r in consume_all(bootstrap_servers, topic, timeout=60)]
    assert len(exported) > 3
    assert not [text for text in exported if TOKEN in text]


# ---- (d) response size is bounded ------------------------------------------------------------

class _HugeAnswer(http.server.BaseHTTPRequestHandler):
    """200 with a 6 MiB body (the client reads at most 4 MiB), streamed without Content-Length."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        chunk = b" " * 65536
        try:
            for _ in range(96):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


def test_huge_response_becomes_a_dead_letter_not_an_oom(bootstrap_servers, tmp_path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HugeAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        topics = make_topics(bootstrap_servers, "huge", partitions=1)
        produce_events(bootstrap_servers, topics.inp, count=40, seed=33)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        summary = run(job_args(bootstrap_servers, topics, url, "g-huge", "--batch_size=10", "--probe_timeout=0"))
    finally:
        server.shutdown()
    dead = [json.loads(r.value) for r in consume_all(bootstrap_servers, topics.dlq, timeout=60)]
    assert len(dead) == 40 and summary.counter("score_dead_letters") == 40
    assert all(d["stage"] == "enrich" and d["reason"] == "response_too_large" for d in dead)
    assert summary.attempts == summary.counter("batches")     # not retried: it is not transient
    assert fully_committed(bootstrap_servers, "g-huge", topics.inp)
