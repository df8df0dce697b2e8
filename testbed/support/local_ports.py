"""Ports and processes of the local stand-ins: pick free ports, wait until a process listens,
stop it."""
from __future__ import annotations

import socket
import subprocess
import time


class NotListening(RuntimeError):
    """The process exited, or did not listen in time; the caller adds its own log tail."""


def free_ports(count: int) -> list[int]:
    """Distinct currently-free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float, poll_s: float = 0.05) -> None:
    """Returns once `port` accepts connections; raises NotListening if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NotListening(f"exited with {proc.returncode}")
        if port_open(port):
            return
        time.sleep(poll_s)
    raise NotListening(f"not listening on {port} after {timeout_s:.0f} s")


def terminate(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after `timeout_s`; the exit code (None if never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
