"""A real single-node Kafka 4.x broker (KRaft, combined mode) for tests and local runs.

No Docker and no tarball: the classpath comes from Maven Central through
deploy/local/kafka/pom.xml and is cached in .cache/kafka/lib, so only the very
first start needs the network. The broker runs detached (own session), so the
CLI can start it and exit; `down`/`status` find it again through the pid file.

    python -m testbed.kafka.broker fetch
    python -m testbed.kafka.broker up [--port 9092] [--controller-port 9093] [--workdir .cache/run/kafka]
    python -m testbed.kafka.broker status | down
"""
from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import psutil

from testbed.support.local_ports import free_ports, port_open

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

KAFKA_VERSION = os.environ.get("KAFKA_VERSION", "4.4.0")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy" / "local" / "kafka"
LIB_DIR = REPO_ROOT / ".cache" / "kafka" / "lib"
DEFAULT_WORKDIR = REPO_ROOT / ".cache" / "run" / "kafka"
STAMP_NAME = ".kafka-version"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 17
READY_TIMEOUT_S = float(os.environ.get("KAFKA_START_TIMEOUT_S", "60"))  # raise on very slow machines
STOP_TIMEOUT_S = 20.0
JVM_OPTS = (
    "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)
PropertyValue = str | int | bool


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped; the message says why."""


class PrerequisiteError(BrokerError):
    """A required tool (java >= 17, mvn) is missing; the message names what to install."""


# ---- classpath -----------------------------------------------------------------------

def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise PrerequisiteError(f"cannot read the Java version from `{java} -version`: {out.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8" means Java 8


def find_java() -> str:
    """The `java` to run the broker with: $JAVA_HOME/bin/java, else PATH; must be >= 17."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else shutil.which("java")
    if not java:
        raise PrerequisiteError(f"java not found: install a JDK >= {MIN_JAVA} (e.g. apt-get install openjdk-17-jre-headless)")
    major = _java_major(java)
    if major < MIN_JAVA:
        raise PrerequisiteError(f"{java} is Java {major}; Kafka 4.x needs Java >= {MIN_JAVA}: install openjdk-17 or newer")
    return java


def jars_present(lib_dir: Path = LIB_DIR, version: str = KAFKA_VERSION) -> bool:
    stamp = lib_dir / STAMP_NAME
    return stamp.is_file() and stamp.read_text().strip() == version


def fetch_jars(lib_dir: Path = LIB_DIR, version: str = KAFKA_VERSION) -> bool:
    """Copy the broker classpath from Maven into lib_dir; False if it was already there.

    Fetches into a temporary sibling directory and renames it into place, so an
    interrupted download never leaves a half-filled lib dir behind a valid stamp.
    """
    if jars_present(lib_dir, version):
        return False
    mvn = shutil.which("mvn")
    if not mvn:
        raise PrerequisiteError("mvn not found: install Apache Maven >= 3.6 (e.g. apt-get install maven) to fetch the Kafka jars")
    find_java()
    staging = lib_dir.with_name(f"{lib_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn, "-B", "-q", "-Dstyle.color=never", f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={staging}", f"-Dkafka.version={version}",
        "-f", str(DEPLOY_DIR / "pom.xml"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not any(staging.glob(f"kafka_2.13-{version}.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        lines = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr).splitlines()
        errors = [line for line in lines if line.startswith("[ERROR] ") and line.strip() != "[ERROR]"]
        reason = (errors or lines or ["no output"])[0]
        raise BrokerError(f"mvn could not fetch kafka_2.13:{version} (exit {result.returncode}): {reason}")
    (staging / STAMP_NAME).write_text(version + "\n")
    shutil.rmtree(lib_dir, ignore_errors=True)
    try:
        staging.rename(lib_dir)
    except OSError:  # a concurrent fetch got there first
        shutil.rmtree(staging, ignore_errors=True)
        if not jars_present(lib_dir, version):
            raise
    return True


# ---- broker ----------------------------------------------------------------------------

def _cluster_id() -> str:
    """A Kafka Uuid (22-char URL-safe base64); Kafka never issues ids starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _render(value: PropertyValue) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class KafkaBroker:
    """One KRaft broker+controller process bound to 127.0.0.1, with its data in `workdir`.

    `extra_properties` override or extend server.properties; to add e.g. a SASL/TLS
    listener, set `listeners` and `listener.security.protocol.map` using
    `self.port`/`self.controller_port` (free ports are chosen at construction).
    `stop_with_parent` (Linux, via util-linux `setpriv`) SIGTERMs the broker when the
    thread that started it dies, so a killed test run leaves no orphan JVM behind.
    """

    def __init__(
        self,
        workdir: Path | str,
        port: int | None = None,
        controller_port: int | None = None,
        extra_properties: Mapping[str, PropertyValue] | None = None,
        lib_dir: Path = LIB_DIR,
        stop_with_parent: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        if port is None or controller_port is None:
            picked = iter(p for p in free_ports(3) if p not in (port, controller_port))
            port = port if port is not None else next(picked)
            controller_port = controller_port if controller_port is not None else next(picked)
        self.port = port
        self.controller_port = controller_port
        self.extra_properties = dict(extra_properties or {})
        self.lib_dir = lib_dir
        self.stop_with_parent = stop_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- paths and config --
    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "kafka.pid"

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def properties(self) -> dict[str, str]:
        props: dict[str, PropertyValue] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": 1,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "auto.create.topics.enable": False,  # a missing topic must be a clear error
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 10,  # 50 by default: ~2 s more until groups work
            "transaction.state.log.num.partitions": 5,  # 50 by default: slows the first init_transactions()
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # A start after kill() waits until the old registration's session expires (9 s default).
            "broker.session.timeout.ms": 4000,
            "broker.heartbeat.interval.ms": 500,
        }
        props.update(self.extra_properties)
        return {key: _render(value) for key, value in props.items()}

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [f"{key}={value}" for key, value in self.properties().items()]
        self.config_path.write_text("# generated by testbed.kafka.broker\n" + "\n".join(lines) + "\n")

    def _java_cmd(self, java: str, main: str, *args: str) -> list[str]:
        return [
            java, *JVM_OPTS,
            f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
            "-cp", f"{self.lib_dir}/*", main, *args,
        ]

    def _format(self, java: str) -> None:
        if (self.data_dir / "meta.properties").exists():
            return  # formatted before: keep the data (restart, `up` after `down`)
        cmd = self._java_cmd(java, "kafka.tools.StorageTool", "format", "--standalone",
                             "-t", _cluster_id(), "-c", str(self.config_path))
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"kafka-storage format failed (exit {result.returncode}): {(result.stdout + result.stderr).strip()[-2000:]}")

    # -- process control --
    def pid(self) -> int | None:
        """Pid of this workdir's running broker (from the pid file), or None."""
        try:
            pid = int(self.pid_path.read_text().strip())
            cmdline = psutil.Process(pid).cmdline()
        except (OSError, ValueError, psutil.Error):
            return None
        return pid if "kafka.Kafka" in cmdline and str(self.config_path) in cmdline else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the broker wrote since the latest start()."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:]) or "(broker log is empty)"

    def start(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Start the broker; return the seconds until it answered metadata and group-offset
        requests (so a test's first commit cannot meet NOT_COORDINATOR)."""
        if self.is_running():
            raise BrokerError(f"a broker is already running from {self.workdir} (pid {self.pid()})")
        java = find_java()
        if not jars_present(self.lib_dir):
            raise BrokerError(f"Kafka jars missing in {self.lib_dir}: run `make kafka-jars` (python -m testbed.kafka.broker fetch)")
        for port in (self.port, self.controller_port):
            if port_open(port):
                raise BrokerError(f"port {port} on 127.0.0.1 is already in use")
        began = time.monotonic()
        self._write_config()
        self._format(java)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        setpriv = shutil.which("setpriv") if self.stop_with_parent else None
        watchdog = [setpriv, "--pdeathsig", "TERM"] if setpriv else []  # setpriv execs java: same pid
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [*watchdog, *self._java_cmd(java, "kafka.Kafka", str(self.config_path))],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True,  # survives the CLI and Ctrl-C in make
            )
        self.pid_path.write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return time.monotonic() - began

    def _wait_ready(self, timeout: float) -> None:
        from testbed.kafka.admin import admin_client, group_coordinator_ready  # lazy: needs confluent_kafka

        assert self._proc is not None
        admin: AdminClient | None = None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(f"Kafka exited with code {code} during startup; {self.log_path} tail:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BrokerError(f"Kafka not ready on {self.bootstrap_servers} after {timeout:.0f} s; log tail:\n{self.log_tail()}")
            if port_open(self.port):  # a client made earlier would sit in librdkafka's reconnect backoff
                admin = admin or admin_client(self.bootstrap_servers)
                try:
                    if admin.list_topics(timeout=2).brokers and group_coordinator_ready(self.bootstrap_servers):
                        return
                except Exception:  # KafkaException while the broker is still coming up
                    pass
            time.sleep(0.1)

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> bool:
        pid = self.pid() or (self._proc.pid if self._proc and self._proc.poll() is None else None)
        if pid is None:
            return True
        try:
            process = psutil.Process(pid)
            process.send_signal(sig)
            process.wait(timeout)  # reaps it too when it is our child
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            return False
        return True

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Graceful shutdown (SIGTERM), SIGKILL after `timeout` seconds."""
        if not self._signal_and_wait(signal.SIGTERM, timeout):
            self._signal_and_wait(signal.SIGKILL, 10)
        self._forget()

    def kill(self) -> None:
        """Crash the broker (SIGKILL): no controlled shutdown; the next start recovers the
        log segments and waits out the dead broker's session (broker.session.timeout.ms)."""
        self._signal_and_wait(signal.SIGKILL, 10)
        self._forget()

    def restart(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        return self.start(timeout)

    def _forget(self) -> None:
        if self._proc is not None:
            self._proc.poll()
            self._proc = None
        self.pid_path.unlink(missing_ok=True)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


# ---- CLI -------------------------------------------------------------------------------

def _recorded_listeners(workdir: Path) -> str:
    """The listeners this workdir's broker was started with (for `status`)."""
    try:
        text = (workdir / "server.properties").read_text()
    except OSError:
        return "?"
    match = re.search(r"^listeners=(.*)$", text, re.M)
    return match.group(1) if match else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.kafka.broker", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["fetch", "up", "down", "status"])
    parser.add_argument("--port", type=int, default=9092, help="PLAINTEXT listener (default 9092)")
    parser.add_argument("--controller-port", type=int, default=None, help="CONTROLLER listener (default: port+1)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="config, data, log and pid file")
    args = parser.parse_args(argv)
    broker = KafkaBroker(args.workdir, port=args.port, controller_port=args.controller_port or args.port + 1)
    try:
        if args.command == "fetch":
            began = time.monotonic()
            fetched = fetch_jars()
            size_mb = sum(p.stat().st_size for p in LIB_DIR.iterdir()) / 2**20
            verb = f"fetched in {time.monotonic() - began:.1f} s" if fetched else "already present"
            print(f"kafka {KAFKA_VERSION} jars {verb}: {LIB_DIR} ({size_mb:.0f} MiB)")
        elif args.command == "up":
            if broker.is_running():
                print(f"kafka already running (pid {broker.pid()}); workdir {args.workdir}")
                return 0
            fetch_jars()
            took = broker.start()
            print(f"kafka {KAFKA_VERSION} up on {broker.bootstrap_servers} in {took:.1f} s "
                  f"(pid {broker.pid()}, log {broker.log_path})")
        elif args.command == "down":
            pid = broker.pid()
            broker.stop()
            print(f"kafka stopped (pid {pid})" if pid else "kafka was not running")
        else:
            pid = broker.pid()
            print(f"kafka running (pid {pid}, {_recorded_listeners(args.workdir)})" if pid else "kafka not running")
            return 0 if pid else 3
    except BrokerError as exc:
        print(f"kafka_broker {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
