"""The Beam Flink job-server jar, built locally because no mirror serves Beam's own.

deploy/local/flink/pom.xml shades `beam-runners-flink-<minor>` and its runtime
dependencies into the same kind of jar Beam releases as
`beam-runners-flink-<minor>-job-server-<beam>.jar`. The jar is cached in
.cache/flink/ (Maven's work dir beside it), so only the first
build needs the network. Beam's Python FlinkRunner takes it through
`--flink_job_server_jar`; `JobServer` runs one for a whole test session.

    python -m testbed.flink.jobserver build [--force]     # prints the jar path
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc

from pipelines.local_jars import BEAM_VERSION, FLINK_JOB_SERVER_JAR, FLINK_MINOR
from testbed.support.cached_build import build_main, maven_shaded_jar
from testbed.support.local_ports import terminate

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "deploy" / "local" / "flink" / "pom.xml"
CACHE_DIR = FLINK_JOB_SERVER_JAR.parent
JAR = FLINK_JOB_SERVER_JAR
READY_TIMEOUT_S = 120.0
JAVA_HINT = "install a JDK >= 11 (e.g. apt-get install openjdk-17-jdk-headless)"


class JobServerError(RuntimeError):
    """The jar could not be built or the job server did not start; the message says why."""


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise JobServerError(f"{tool} not found: {hint}")
    return path


def build(force: bool = False, jar: Path = JAR, profiles: Sequence[str] = ()) -> Path:
    """Return the job-server jar, building it with Maven unless it is already there.

    `profiles` are Maven profiles of the POM (`kafka-io` adds Java KafkaIO, see
    testbed/kafka/expansion.py); a jar built with other profiles needs its own path.
    """
    return maven_shaded_jar(POM, jar, JobServerError, [f"beam.version={BEAM_VERSION}", f"flink.minor={FLINK_MINOR}"],
                            profiles, force)


def runner_args(jar: Path, flink_master: str = "[local]") -> list[str]:
    """Pipeline flags that make Beam's FlinkRunner start this jar itself (one JVM per run)."""
    return [
        "--runner=FlinkRunner",
        f"--flink_job_server_jar={jar}",
        f"--flink_master={flink_master}",
        f"--flink_version={FLINK_MINOR}",
        "--environment_type=LOOPBACK",
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JobServer:
    """One long-lived job server, so many pipelines share one JVM start (≈5 s each otherwise).

    Pipelines reach it with `--runner=FlinkRunner --job_endpoint=<endpoint>`.
    """

    def __init__(self, jar: Path, flink_master: str = "[local]", log_path: Path | None = None,
                 jvm_args: Sequence[str] = ()) -> None:
        self.jar, self.flink_master, self.jvm_args = jar, flink_master, list(jvm_args)
        self.log_path = log_path or CACHE_DIR / "job-server.log"
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"localhost:{self.port}"

    def runner_args(self) -> list[str]:
        """Pipeline flags for a run on this server."""
        return ["--runner=FlinkRunner", f"--job_endpoint={self.endpoint}", "--environment_type=LOOPBACK"]

    def start(self) -> JobServer:
        java = _require("java", JAVA_HINT)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [java, *self.jvm_args, "-jar", str(self.jar), f"--flink-master={self.flink_master}",
                 f"--job-port={self.port}", "--artifact-port=0", "--expansion-port=0"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise JobServerError(f"job server exited {self._proc.returncode} (log: {self.log_path})")
            # A gRPC handshake, not a bare TCP probe (which the server logs as a broken HTTP/2 preface).
            with grpc.insecure_channel(self.endpoint) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                    return self
                except grpc.FutureTimeoutError:
                    pass
        self.stop()
        raise JobServerError(f"job server not listening on {self.endpoint} after {READY_TIMEOUT_S:.0f} s (log: {self.log_path})")

    def stop(self) -> None:
        terminate(self._proc, timeout_s=20)

    def __enter__(self) -> JobServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    return build_main("flink.jobserver", __doc__.split("\n")[0], "job-server jar", build, JobServerError, argv)


if __name__ == "__main__":
    sys.exit(main())
