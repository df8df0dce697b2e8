"""A local Flink 1.19 session cluster (a JobManager and one or more TaskManagers) on localhost.

No tarball download: `apache-flink` + `apache-flink-libraries` from PyPI hold a full
Flink distribution (pyflink/bin, lib, conf). They are installed with --no-deps into
their own venv (.flink-venv), because apache-flink's Python requirements clash with
this project's Beam. The cluster gets its own config dir, logs and pid files under
.cache/run/flink, so the installed distribution is never edited.

    python -m testbed.flink.cluster up [--rest-port 8081]
    python -m testbed.flink.cluster status | down

Pipelines reach it with `--runner=FlinkRunner --flink_master=localhost:8081
--flink_version=1.19 --flink_job_server_jar=<jar>` (see testbed.flink.jobserver).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from testbed.support.local_ports import free_ports

FLINK_VERSION = "1.19.3"  # newest 1.19.x on PyPI; its minor must match flink_jobserver.FLINK_MINOR
REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = REPO_ROOT / ".flink-venv"
RUN_DIR = REPO_ROOT / ".cache" / "run" / "flink"
DEFAULT_REST_PORT = 8081
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0

# Sized for a 2-core / 24 GB machine: two slots so a job and a smoke test can share it.
CLUSTER_CONFIG: dict[str, str | int] = {
    "jobmanager.rpc.address": "localhost",
    "jobmanager.bind-host": "localhost",
    "jobmanager.memory.process.size": "1024m",
    "taskmanager.bind-host": "localhost",
    "taskmanager.host": "localhost",
    "taskmanager.numberOfTaskSlots": 2,
    "taskmanager.memory.process.size": "2048m",
    "parallelism.default": 1,
    "rest.address": "localhost",
    "rest.bind-address": "localhost",
    # A failing job should fail, not restart forever (Flink's default once checkpointing is on).
    "restart-strategy.type": "fixed-delay",
    "restart-strategy.fixed-delay.attempts": 3,
    "restart-strategy.fixed-delay.delay": "2 s",
}


class ClusterError(RuntimeError):
    """The distribution could not be installed or the cluster did not start/stop; says why."""


def flink_home(venv: Path = VENV) -> Path:
    """The pyflink package dir of the Flink venv: a complete FLINK_HOME."""
    homes = sorted(venv.glob("lib/python3*/site-packages/pyflink"))
    if not homes or not (homes[-1] / "bin" / "start-cluster.sh").is_file():
        raise ClusterError(f"no Flink distribution in {venv}: run `python -m testbed.flink.cluster up` to install it")
    return homes[-1]


def _installed_version(home: Path) -> str | None:
    match = re.search(r'__version__\s*=\s*"([^"]+)"', (home / "version.py").read_text())
    return match.group(1) if match else None


def install(venv: Path = VENV, version: str = FLINK_VERSION) -> Path:
    """Install apache-flink + apache-flink-libraries (no deps) into their own venv unless present."""
    try:
        home = flink_home(venv)
        if _installed_version(home) == version:
            return home
    except ClusterError:
        pass
    if not (venv / "bin" / "pip").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cmd = [str(venv / "bin" / "pip"), "install", "-q", "--no-deps",
           f"apache-flink=={version}", f"apache-flink-libraries=={version}"]
    if subprocess.run(cmd, check=False).returncode != 0:
        raise ClusterError(f"pip could not install apache-flink=={version} into {venv}")
    return flink_home(venv)


def _java_opts(home: Path) -> str:
    """The distribution's `env.java.opts.all` (the --add-opens list Flink needs on Java 17)."""
    match = re.search(r"^\s+all:\s*(--add-\S.*)$", (home / "conf" / "config.yaml").read_text(), re.MULTILINE)
    if not match:
        raise ClusterError(f"cannot find env.java.opts.all in {home / 'conf' / 'config.yaml'}")
    return match.group(1).strip()


def write_config(home: Path, rest_port: int, run_dir: Path = RUN_DIR, taskmanagers: int = 1,
                 overrides: dict[str, str | int] | None = None) -> Path:
    """Write this cluster's conf dir (flattened config.yaml + the distribution's log4j files)."""
    conf = run_dir / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties"):
        shutil.copyfile(home / "conf" / name, conf / name)
    (conf / "masters").write_text(f"localhost:{rest_port}\n")
    (conf / "workers").write_text("localhost\n" * taskmanagers)
    # The JobManager's RPC port is free-picked too (Flink's 6123 would let only one cluster run at a time).
    settings = {**CLUSTER_CONFIG, "rest.port": rest_port, "jobmanager.rpc.port": free_ports(1)[0],
                "env.java.opts.all": _java_opts(home),
                "io.tmp.dirs": str(run_dir / "tmp"), **(overrides or {})}
    (run_dir / "tmp").mkdir(exist_ok=True)
    (conf / "config.yaml").write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items()))
    return conf


def _env(home: Path, run_dir: Path) -> dict[str, str]:
    for sub in ("log", "pid"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    return {**os.environ, "FLINK_HOME": str(home), "FLINK_CONF_DIR": str(run_dir / "conf"),
            "FLINK_LOG_DIR": str(run_dir / "log"), "FLINK_PID_DIR": str(run_dir / "pid")}


def overview(rest_port: int = DEFAULT_REST_PORT) -> dict[str, object] | None:
    """The REST `/v1/overview` document, or None when nothing answers on the port."""
    try:
        with urllib.request.urlopen(f"http://localhost:{rest_port}/v1/overview", timeout=2) as resp:
            return json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _start(rest_port: int, run_dir: Path, taskmanagers: int, overrides: dict[str, str | int] | None) -> None:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise ClusterError("java not found: install a JDK 11 or 17 (e.g. apt-get install openjdk-17-jdk-headless)")
    home = install()
    write_config(home, rest_port, run_dir, taskmanagers, overrides)
    proc = subprocess.run([str(home / "bin" / "start-cluster.sh")], env=_env(home, run_dir),
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"start-cluster.sh exited {proc.returncode}: {proc.stderr.strip()[-500:]}")


def up(rest_port: int = DEFAULT_REST_PORT, run_dir: Path = RUN_DIR, taskmanagers: int = 1,
       overrides: dict[str, str | int] | None = None) -> dict[str, object]:
    """Start the cluster (unless one answers already) and return its overview once
    `taskmanagers` TaskManagers have registered."""
    if overview(rest_port) is None:
        _start(rest_port, run_dir, taskmanagers, overrides)
    return wait_for_taskmanagers(rest_port, taskmanagers, run_dir)


def wait_for_taskmanagers(rest_port: int, count: int, run_dir: Path = RUN_DIR) -> dict[str, object]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        current = overview(rest_port)
        if current and int(current.get("taskmanagers", 0)) >= count:
            return current
        time.sleep(0.5)
    raise ClusterError(f"fewer than {count} TaskManager(s) registered on localhost:{rest_port} after "
                       f"{READY_TIMEOUT_S:.0f} s (logs: {run_dir / 'log'})")


def rest(rest_port: int, path: str) -> dict:
    """GET `/v1<path>` of the cluster's REST API as JSON."""
    return json.loads(rest_text(rest_port, path))


def rest_text(rest_port: int, path: str) -> str:
    """GET `/v1<path>` as text (e.g. `/jobmanager/logs/<file>`)."""
    with urllib.request.urlopen(f"http://localhost:{rest_port}/v1{path}", timeout=10) as resp:
        return resp.read().decode("utf-8", "replace")


def jobmanager_log(rest_port: int) -> str:
    """The JobManager's log files, through REST."""
    names = [f["name"] for f in rest(rest_port, "/jobmanager/logs")["logs"] if f["name"].endswith(".log")]
    return "".join(rest_text(rest_port, f"/jobmanager/logs/{name}") for name in names)


def failover_history(rest_port: int, job: str) -> dict[str, object]:
    """How often `job` restarted and which checkpoints it was restored from, from the JobManager's
    log (through REST): the checkpoint statistics' `restored` count, the exception history and the
    `numRestarts` metric all read 0 after restores the log shows."""
    log = jobmanager_log(rest_port)
    return {"restarts": len(re.findall(rf"\({job}\) switched from state RUNNING to RESTARTING", log)),
            "restored": [int(m) for m in re.findall(rf"Restoring job {job} from Checkpoint (\d+)", log)]}


def running_job(rest_port: int, timeout_s: float = 120.0) -> str:
    """The id of the (first) RUNNING job, waiting for one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = [j["jid"] for j in rest(rest_port, "/jobs/overview")["jobs"] if j["state"] == "RUNNING"]
        if jobs:
            return jobs[0]
        time.sleep(0.5)
    raise ClusterError(f"no running job on localhost:{rest_port} after {timeout_s:.0f} s")


def cancel_job(rest_port: int, job: str) -> None:
    """Cancel `job` through REST (Beam 2.62's uber-jar `result.cancel()` asks `/v1/<job>/stop`: 404)."""
    request = urllib.request.Request(f"http://localhost:{rest_port}/v1/jobs/{job}?mode=cancel", method="PATCH")
    with urllib.request.urlopen(request, timeout=10):
        pass


def kill_taskmanager(run_dir: Path = RUN_DIR) -> int:
    """SIGKILL one TaskManager and start a replacement (what Kubernetes does for a lost pod)."""
    pids = taskmanager_pids(run_dir)
    if not pids:
        raise ClusterError("no TaskManager to kill")
    os.kill(pids[0], signal.SIGKILL)
    start_taskmanager(run_dir)
    return pids[0]


def taskmanager_pids(run_dir: Path = RUN_DIR) -> list[int]:
    """Pids of the TaskManagers the scripts started (their pid file), live ones only."""
    pids = []
    for pid_file in (run_dir / "pid").glob("*taskexecutor.pid"):
        for line in pid_file.read_text().split():
            if line.isdigit() and Path(f"/proc/{line}").exists():
                pids.append(int(line))
    return pids


def start_taskmanager(run_dir: Path = RUN_DIR) -> None:
    """One more TaskManager for the running cluster (what Kubernetes does for a lost pod)."""
    home = flink_home()
    proc = subprocess.run([str(home / "bin" / "taskmanager.sh"), "start"], env=_env(home, run_dir),
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"taskmanager.sh start exited {proc.returncode}: {proc.stderr.strip()[-500:]}")


def down(rest_port: int = DEFAULT_REST_PORT, run_dir: Path = RUN_DIR) -> None:
    """Stop the cluster started by `up` (pid files in run_dir) and wait until REST is gone."""
    home = flink_home()
    if not (run_dir / "conf").is_dir():
        return
    subprocess.run([str(home / "bin" / "stop-cluster.sh")], env=_env(home, run_dir),
                   capture_output=True, text=True, check=False)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while overview(rest_port) is not None:
        if time.monotonic() > deadline:
            raise ClusterError(f"Flink still answers on localhost:{rest_port} {STOP_TIMEOUT_S:.0f} s after stop-cluster.sh")
        time.sleep(0.5)
    _kill_leftovers(run_dir)


def _kill_leftovers(run_dir: Path) -> None:
    """SIGKILL any process of this cluster still alive (a TaskManager started as a replacement, or
    one slow to stop, would otherwise retry its dead JobManager for good): its command line names
    the cluster's log dir."""
    marker = str(run_dir / "log")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace"):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.flink.cluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--rest-port", type=int, default=DEFAULT_REST_PORT)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            started = time.monotonic()
            info = up(args.rest_port)
            print(f"Flink {info.get('flink-version')} on http://localhost:{args.rest_port}: "
                  f"{info.get('taskmanagers')} TaskManager(s), {info.get('slots-total')} slots "
                  f"({time.monotonic() - started:.1f} s)")
        elif args.command == "down":
            down(args.rest_port)
            print("Flink cluster stopped")
        else:
            info = overview(args.rest_port)
            if info is None:
                print(f"no Flink cluster on localhost:{args.rest_port}")
                return 1
            print(json.dumps(info))
    except ClusterError as err:
        print(f"flink_cluster: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
