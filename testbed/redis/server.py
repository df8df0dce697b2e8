"""A real Redis server (Debian's `redis-server`), the fleet quota's coordinator in tests and the benchmark.

Debian's `redis-tools` holds the binary (`redis-server` is its link), and the libraries it
needs that a slim machine lacks (jemalloc, lzf) come from their own packages, all unpacked
into .cache/redis/ once (`testbed.support.debian`). `RedisServer` runs one on a free port,
without persistence; `kill()` stops it hard and `start()` brings it back on the same port
(what a coordinator outage looks like to the workers).

    python -m testbed.redis.server build          # prints the binary's path
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from testbed.support import debian
from testbed.support.cached_build import build_main
from testbed.support.local_ports import NotListening, free_ports, terminate, wait_listening

REPO_ROOT = Path(__file__).resolve().parents[2]
ROOT = REPO_ROOT / ".cache" / "redis" / "root"
BINARY = ROOT / "usr" / "bin" / "redis-check-rdb"     # acts as the server when called redis-server
PACKAGES = ["redis-server", "redis-tools", "libjemalloc2", "liblzf1"]
READY_TIMEOUT_S = 15.0


class RedisError(RuntimeError):
    """Redis could not be fetched or started; the message says why."""


def fetch(force: bool = False) -> Path:
    return debian.unpack(PACKAGES, ROOT, BINARY, RedisError, force)


class RedisServer:
    def __init__(self) -> None:
        self.port = free_ports(1)[0]
        self._dir = Path(tempfile.mkdtemp(prefix="redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = fetch()
        env = dict(os.environ, LD_LIBRARY_PATH=debian.library_path(ROOT))
        log = (self._dir / "redis.log").open("ab")
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self._dir)], executable=str(binary), env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        try:
            wait_listening(self._proc, self.port, READY_TIMEOUT_S)
        except NotListening as exc:
            self.kill()
            raise RedisError(f"redis {exc}: {self.log_tail()}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: the coordinator is gone, its state with it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def log_tail(self) -> str:
        path = self._dir / "redis.log"
        return path.read_text(errors="replace")[-500:] if path.exists() else ""

    def stop(self) -> None:
        terminate(self._proc)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    return build_main("redis.server", __doc__.split("\n")[0], "Redis binary", fetch, RedisError, argv)


if __name__ == "__main__":
    sys.exit(main())
