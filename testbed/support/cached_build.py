"""What the cached builds share: the CLI (`python -m testbed.flink.jobserver build`, `... prism.runner build`)
and the locked, atomic Maven build of a shaded jar."""
from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def build_main(prog: str, description: str, what: str, build: Callable[..., object],
               error: type[Exception], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m testbed.{prog}", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help=f"build the {what} unless cached; print its path")
    build_cmd.add_argument("--force", action="store_true", help=f"rebuild even if the {what} exists")
    args = parser.parse_args(argv)
    try:
        print(build(force=args.force))
    except error as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    return 0


def maven_shaded_jar(pom: Path, jar: Path, error: type[Exception], properties: Sequence[str] = (),
                     profiles: Sequence[str] = (), force: bool = False) -> Path:
    """Return `jar`, building it with `mvn package` of `pom` unless it is already there.

    The POM must honour -Dbuild.dir and -Djar.output. The jar is written next to its
    final name and renamed at the end, so an interrupted build never leaves a jar that
    a later call would accept; a file lock serialises concurrent callers (Makefile and
    pytest fixtures). Each jar gets its own Maven work dir (`build-<jar stem>`).
    """
    if jar.is_file() and not force:
        return jar
    if not shutil.which("java"):
        raise error("java not found: install a JDK >= 11 (e.g. apt-get install openjdk-17-jdk-headless)")
    mvn = shutil.which("mvn")
    if not mvn:
        raise error("mvn not found: install Maven (e.g. apt-get install maven)")
    jar.parent.mkdir(parents=True, exist_ok=True)
    with open(jar.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jar.is_file() and not force:
            return jar
        partial = jar.with_name(jar.name + ".partial")
        log = jar.parent / f"build-{jar.stem}.log"
        cmd = [mvn, "-B", "-q", "--no-transfer-progress", "-Dstyle.color=never", "-f", str(pom), "package",
               *(f"-P{p}" for p in profiles), *(f"-D{p}" for p in properties),
               f"-Dbuild.dir={jar.parent / f'build-{jar.stem}'}", f"-Djar.output={partial}"]
        with open(log, "w") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
        if rc != 0 or not partial.is_file():
            lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            errors = [ln for ln in lines if "ERROR" in ln] or lines
            raise error(f"mvn exited {rc} building {jar.name}: {errors[0] if errors else 'no output'} "
                        f"(full log: {log})")
        os.replace(partial, jar)
    return jar
