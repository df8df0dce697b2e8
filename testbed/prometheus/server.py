"""A real Prometheus server (Debian's package) that scrapes the job's `/metrics`, and its `promtool`.

The binaries are unpacked from Debian's `prometheus` package into .cache/prometheus/ once
(`testbed.support.debian`); `PrometheusServer` runs one on a free port with a generated
config that scrapes the given targets every `scrape_interval_s`, and answers PromQL
through its HTTP API (`query`).

    python -m testbed.prometheus.server build          # prints the server binary's path
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from testbed.support import debian
from testbed.support.cached_build import build_main
from testbed.support.local_ports import NotListening, free_ports, terminate, wait_listening

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "prometheus"
BINARY = CACHE_DIR / "root" / "usr" / "bin" / "prometheus"
PROMTOOL = CACHE_DIR / "root" / "usr" / "bin" / "promtool"
READY_TIMEOUT_S = 30.0


class PrometheusError(RuntimeError):
    """Prometheus could not be fetched, started or queried; the message says why."""


def fetch(force: bool = False) -> Path:
    """The server binary (promtool next to it), unpacked from Debian's package on first use."""
    binary = debian.unpack(["prometheus"], CACHE_DIR / "root", BINARY, PrometheusError, force)
    if not PROMTOOL.is_file():
        raise PrometheusError(f"Debian's prometheus package has no {PROMTOOL.name} at {PROMTOOL}")
    return binary


def config(targets: list[str], scrape_interval_s: float) -> str:
    return (f"global:\n  scrape_interval: {scrape_interval_s:g}s\n  scrape_timeout: {scrape_interval_s:g}s\n"
            f"scrape_configs:\n  - job_name: payment-enrichment\n"
            f"    static_configs:\n      - targets: {json.dumps(targets)}\n")


class PrometheusServer:
    """Prometheus on a free port, scraping `targets` (host:port) every `scrape_interval_s`."""

    def __init__(self, targets: list[str], scrape_interval_s: float = 1.0) -> None:
        self.targets, self.scrape_interval_s = targets, scrape_interval_s
        self.port = free_ports(1)[0]
        self._dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        binary = fetch()
        conf = self._dir / "prometheus.yml"
        conf.write_text(config(self.targets, self.scrape_interval_s))
        log = (self._dir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [str(binary), f"--config.file={conf}", f"--storage.tsdb.path={self._dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_listening(self._proc, self.port, READY_TIMEOUT_S)
        except NotListening as exc:
            self.stop()
            raise PrometheusError(f"prometheus {exc}: {self.log_tail()}") from None
        return self

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant query's result vector (`[{"metric": {...}, "value": [t, "v"]}, ...]`)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.load(resp)
        if doc.get("status") != "success":
            raise PrometheusError(f"query {promql!r}: {doc}")
        return doc["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The single value of a query that yields one series (None: no series)."""
        result = self.query(promql)
        if len(result) > 1:
            raise PrometheusError(f"query {promql!r} gave {len(result)} series, expected one")
        return float(result[0]["value"][1]) if result else None

    def targets_up(self) -> dict[str, str]:
        """Each scrape target's health ("up", "down", "unknown")."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as resp:
            active = json.load(resp)["data"]["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in active}

    def log_tail(self) -> str:
        path = self._dir / "prometheus.log"
        return path.read_text(errors="replace")[-800:] if path.exists() else ""

    def stop(self) -> None:
        terminate(self._proc)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    return build_main("prometheus.server", __doc__.split("\n")[0], "Prometheus binary", fetch, PrometheusError, argv)


if __name__ == "__main__":
    sys.exit(main())
