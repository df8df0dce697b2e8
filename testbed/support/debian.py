"""Programs we did not write, taken from Debian's packages: `apt-get download` + `dpkg -x` into a
git-ignored cache, no root, nothing installed system-wide (nginx, Prometheus, Redis)."""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path


def unpack(packages: Sequence[str], root: Path, binary: Path, error: type[Exception], force: bool = False) -> Path:
    """`binary` (a path under `root`), unpacking Debian's `packages` into `root` on first use (list
    the libraries the binary needs that the machine lacks; `library_path` finds them); a file lock
    serialises concurrent callers (Makefile and pytest fixtures)."""
    if binary.is_file() and not force:
        return binary
    for tool in ("apt-get", "dpkg"):
        if not shutil.which(tool):
            raise error(f"{tool} not found: {packages[0]} is taken from Debian's packages (a Debian-based machine)")
    cache = root.parent
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file() and not force:
            return binary
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            got = subprocess.run(["apt-get", "download", *packages], cwd=tmp, capture_output=True, text=True)
            if got.returncode != 0:
                raise error(f"apt-get download {' '.join(packages)} failed: "
                            f"{(got.stderr or got.stdout).strip()[-300:]}")
            for deb in sorted(Path(tmp).glob("*.deb")):
                unpacked = subprocess.run(["dpkg", "-x", str(deb), str(root)], capture_output=True, text=True)
                if unpacked.returncode != 0:
                    raise error(f"dpkg -x {deb.name} failed: {unpacked.stderr.strip()[-300:]}")
            if not binary.is_file():
                raise error(f"{binary} is not in Debian's {', '.join(packages)}")
    return binary


def library_path(root: Path) -> str:
    """LD_LIBRARY_PATH for a binary unpacked under `root` whose libraries were unpacked with it."""
    return os.pathsep.join(str(p) for p in (root / "usr" / "lib" / "x86_64-linux-gnu", root / "usr" / "lib")
                           if p.is_dir())
