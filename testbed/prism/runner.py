"""The Prism runner binary, built from Beam's Go module at the installed Beam version.

Beam's Python SDK downloads Prism from GitHub releases, which this machine cannot
reach; building `github.com/apache/beam/sdks/v2/go/cmd/prism@v<beam>` through the
Go module proxy gives the same binary. It is cached in .cache/prism/bin, and
pipelines use it with `--runner=PrismRunner --prism_location=<binary>`.

    python -m testbed.prism.runner build [--force]     # prints the binary path
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from testbed.support.cached_build import build_main

BEAM_VERSION = version("apache-beam")  # Prism must match the installed SDK exactly
GO_MODULE = "github.com/apache/beam/sdks/v2"
REPO_ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = REPO_ROOT / ".cache" / "prism" / "bin"
# `go install` names the binary after the package; the version goes into the
# directory so a Beam bump never reuses an old binary.
BINARY = BIN_DIR / f"v{BEAM_VERSION}" / "prism"


class PrismBuildError(RuntimeError):
    """Go is missing or `go install` failed; the message says why."""


def build(force: bool = False, binary: Path = BINARY) -> Path:
    """Return the Prism binary, running `go install` unless it is already there.

    The checksum database does not answer for Beam's module here (its lookup gives
    404), so GONOSUMDB exempts that one module; every dependency is still checked
    against Beam's go.sum.
    """
    if binary.is_file() and not force:
        return binary
    go = shutil.which("go")
    if not go:
        raise PrismBuildError("go not found: install Go >= 1.21 (https://go.dev/dl) to build Prism")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with open(binary.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file() and not force:
            return binary
        env = {**os.environ, "GOBIN": str(binary.parent), "GONOSUMDB": GO_MODULE, "CGO_ENABLED": "0"}
        proc = subprocess.run(
            [go, "install", f"{GO_MODULE}/go/cmd/prism@v{BEAM_VERSION}"],
            env=env, capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0 or not binary.is_file():
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise PrismBuildError(f"go install prism@v{BEAM_VERSION} exited {proc.returncode}:\n{tail}")
    return binary


def runner_args(binary: Path) -> list[str]:
    """Pipeline flags for a run on this Prism binary (LOOPBACK is Prism's default)."""
    return ["--runner=PrismRunner", f"--prism_location={binary}"]


def main(argv: list[str] | None = None) -> int:
    return build_main("prism.runner", __doc__.split("\n")[0], "Prism binary", build, PrismBuildError, argv)


if __name__ == "__main__":
    sys.exit(main())
