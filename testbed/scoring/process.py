"""Start and drive a scoring-service subprocess (shared by the tests and the benchmark).

The service is always a real process: its event loop, sockets and timings must
not share an interpreter with the client under test.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from testbed.scoring.config import TOKEN_ENV
from testbed.scoring.server import LISTENING
from testbed.support.local_ports import terminate


class ServiceStartError(RuntimeError):
    """The service exited or stayed silent instead of announcing its URL."""


def service_args(**flags: Any) -> list[str]:
    """Keyword flags to argv: ``rate=500, overload_mode=True, faults=[...]`` ->
    ``["--rate", "500", "--overload-mode", "--faults", "[...]"]`` (False/None are left out)."""
    args: list[str] = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not None and value is not False:
            args += [flag, json.dumps(value) if isinstance(value, (list, dict)) else str(value)]
    return args


class ScoringServiceProcess:
    """``python -m testbed.scoring --port 0 ARGS`` with a small client for its endpoints.

    ``token`` is handed to the child through ``$SCORING_TOKEN`` (not argv, so it
    never shows in ``ps``) and sent on every helper call. Logs go to
    ``log_dir`` if given, else to a temporary directory removed by :meth:`stop`.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        token: str | None = None,
        port: int = 0,
        log_dir: Path | None = None,
        startup_timeout_s: float = 20.0,
        python: str = sys.executable,
    ) -> None:
        self.args = ["--port", str(port), *args]
        self.token = token
        self.startup_timeout_s = startup_timeout_s
        self.python = python
        self._own_dir = log_dir is None
        self.log_dir = log_dir or Path()  # a temporary directory is made by start()
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._http = requests.Session()
        if token is not None:
            self._http.headers["Authorization"] = f"Bearer {token}"

    # ---- life cycle ---------------------------------------------------------------

    def start(self) -> ScoringServiceProcess:
        """Spawn the service and wait for its listening line; raise with its stderr if it dies."""
        env = dict(os.environ)
        env.pop(TOKEN_ENV, None)
        if self.token is not None:
            env[TOKEN_ENV] = self.token
        if self._own_dir:
            self.log_dir = Path(tempfile.mkdtemp(prefix="scoring-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out_path, err_path = self.log_dir / "scoring.stdout", self.log_dir / "scoring.stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            self._proc = subprocess.Popen(
                [self.python, "-m", "testbed.scoring", *self.args], stdout=out, stderr=err, env=env
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            for line in out_path.read_text(errors="replace").splitlines():
                if line.startswith(LISTENING):
                    self.url = line[len(LISTENING) :].strip()
                    return self
            code = self._proc.poll()
            if code is not None or time.monotonic() > deadline:
                why = f"exited with code {code}" if code is not None else f"was silent for {self.startup_timeout_s:g} s"
                stderr = err_path.read_text(errors="replace").strip()
                self.stop()
                raise ServiceStartError(f"scoring service {why}: {stderr}")
            time.sleep(0.02)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code (None if never started)."""
        self._http.close()
        code = None
        if self._proc is not None:
            code = terminate(self._proc, timeout_s)
            if self._own_dir:
                shutil.rmtree(self.log_dir, ignore_errors=True)
        return code

    def __enter__(self) -> ScoringServiceProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    # ---- client ---------------------------------------------------------------------

    def _call(self, method: str, path: str, body: object = None) -> Any:
        response = self._http.request(method, self.url + path, json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def score(self, batch: object, headers: dict[str, str] | None = None) -> requests.Response:
        """POST /score and return the raw response (status and headers matter to callers)."""
        return self._http.post(self.url + "/score", json=batch, headers=headers, timeout=30)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def txn_attempts(self) -> dict[str, int]:
        return self._call("GET", "/stats/txns")["attempts"]

    def fault(
        self, kind: str, duration_s: float, *, start_s: float = 0.0, factor: float | None = None
    ) -> list[dict[str, Any]]:
        """Schedule a fault ``start_s`` from now; returns the active faults."""
        body: dict[str, Any] = {"kind": kind, "start_s": start_s, "duration_s": duration_s}
        if factor is not None:
            body["factor"] = factor
        return self._call("POST", "/admin/fault", body)["active_faults"]

    def configure(self, **settings: float) -> dict[str, Any]:
        """Change live settings (rate, burst, max_concurrency, latency_ms, ...); returns the config."""
        return self._call("POST", "/admin/config", settings)["config"]

    def reset(self) -> None:
        self._call("POST", "/admin/reset")
