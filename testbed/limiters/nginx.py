"""A rate limiter this project did not write: nginx's `limit_req` in front of the scoring service.

nginx answers the excess with a plain `429` - no `Retry-After`, no
`RateLimit` headers - from its leaky bucket (`rate`, `burst`, `nodelay`), the
way many real APIs are fronted. The binary comes from Debian's package
(`apt-get download nginx` + `dpkg -x`, no root, nothing installed system-wide)
into .cache/nginx/ once; `NginxLimiter` runs it with a generated config.

    python -m testbed.limiters.nginx build          # prints the binary path
"""
from __future__ import annotations

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
CACHE_DIR = REPO_ROOT / ".cache" / "nginx"
BINARY = CACHE_DIR / "root" / "usr" / "sbin" / "nginx"
READY_TIMEOUT_S = 15.0


class NginxError(RuntimeError):
    """nginx could not be fetched or started; the message says why."""


def fetch(force: bool = False, binary: Path = BINARY) -> Path:
    """The nginx binary, unpacked from Debian's package on first use."""
    return debian.unpack(["nginx"], CACHE_DIR / "root", binary, NginxError, force)


def config(prefix: Path, port: int, upstream: str, rate_rps: float, burst: int) -> str:
    host_port = upstream.split("://", 1)[-1].rstrip("/")
    temp = "\n".join(f"  {name}_temp_path {prefix}/{name};" for name in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
  # One key for every client (an empty key would not be limited at all).
  limit_req_zone $binary_remote_addr zone=score:1m rate={rate_rps:g}r/s;
  limit_req_status 429;
  upstream scoring {{ server {host_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} backlog=1024;
    location /score {{
      limit_req zone=score burst={burst} nodelay;
      proxy_pass http://scoring;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
    location / {{
      proxy_pass http://scoring;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


class NginxLimiter:
    """nginx on a free port, limiting `/score` of `upstream` to `rate_rps` (burst, nodelay)."""

    def __init__(self, upstream: str, rate_rps: float = 200.0, burst: int = 10) -> None:
        self.upstream, self.rate_rps, self.burst = upstream, rate_rps, burst
        self.port = free_ports(1)[0]
        self._dir = Path(tempfile.mkdtemp(prefix="nginx-limiter-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NginxLimiter:
        binary = fetch()
        conf = self._dir / "nginx.conf"
        conf.write_text(config(self._dir, self.port, self.upstream, self.rate_rps, self.burst))
        log = (self._dir / "stdout.log").open("wb")
        self._proc = subprocess.Popen([str(binary), "-p", str(self._dir), "-c", str(conf)], stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_listening(self._proc, self.port, READY_TIMEOUT_S)
        except NotListening as exc:
            self.stop()
            raise NginxError(f"nginx {exc}: {self.log_tail()}") from None
        return self

    def log_tail(self) -> str:
        path = self._dir / "error.log"
        return path.read_text(errors="replace")[-500:] if path.exists() else ""

    def stop(self) -> None:
        terminate(self._proc)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> NginxLimiter:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    return build_main("limiters.nginx", __doc__.split("\n")[0], "nginx binary", fetch, NginxError, argv)


if __name__ == "__main__":
    sys.exit(main())
