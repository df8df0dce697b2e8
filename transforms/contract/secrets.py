"""Where a credential comes from: an environment variable or a file, the file re-read when it changes.

Kubernetes rotates a mounted Secret by swapping the file under the mount, so a
job that read its token once would start failing with 401 at the next
rotation. `SecretReader` looks at the file again at most once a second (a
`stat`, and a read only when it changed) and at once when the service refuses
a credential, so a rotated token is used without a restart. The secret itself
never travels inside the pipeline: only where to find it does.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class SecretSource:
    env: str | None = None
    file: str | None = None        # wins over `env`
    optional: bool = False         # absent -> no credential is sent (else the job refuses to start)

    def __post_init__(self) -> None:
        if not self.env and not self.file:
            raise ValueError("a secret needs `env` or `file`")

    def describe(self) -> str:
        return f"file {self.file}" if self.file else f"${self.env}"

    def read(self) -> str | None:
        """The secret now; OSError if the file cannot be read, None if absent and optional,
        ValueError (one line, naming the source) if absent and required."""
        if self.file:
            try:
                with open(self.file, encoding="utf-8") as f:
                    value = f.read().strip() or None
            except FileNotFoundError:
                if not self.optional:
                    raise
                value = None
        else:
            value = os.environ.get(self.env or "") or None
        if value is None and not self.optional:
            raise ValueError(f"the secret in {self.describe()} is empty or unset")
        return value


class SecretReader:
    """The current value of a `SecretSource` on a worker; `version` changes when the value does."""

    def __init__(self, source: SecretSource, min_interval_s: float = 1.0) -> None:
        self.source = source
        self._min_interval_s = min_interval_s
        self._value = source.read()
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()
        self.version = 0

    def current(self, force: bool = False) -> str | None:
        """The secret, re-read if its file changed (looked at no more than once per interval unless `force`)."""
        if not self.source.file:
            return self._value
        now = time.monotonic()
        if force or now - self._checked >= self._min_interval_s:
            self._checked = now
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    value = self.source.read()
                except (OSError, ValueError):
                    return self._value      # mid-rotation or gone: keep using the last good one
                if value != self._value:
                    self._value, self.version = value, self.version + 1
        return self._value

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.source.file or "")
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size
