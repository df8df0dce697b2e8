"""How a job's command runs its process: the collector leaves out what lives as long as the process.

When the command starts, Beam's modules and the job's are loaded: some 165,000 objects that
live until the process exits. The collector is paused while they load (`pipelines/__init__.py`:
its passes over them took 0.13-0.17 s of a start-up); frozen (`gc.freeze`), they are no longer
walked by its full passes, which took 0.1 s each, twice in a 60,000-event drain. When the
command ends, only the interpreter's teardown is left: what the run made is frozen too, so
the collector does not walk it again and again while the modules are cleared. Frozen objects
are freed as before when nothing refers to them; only cycles among them wait for the exit.
Measured in docs/bench/2026-12-07/start-up-and-exit.md.
"""
from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import NoReturn


def exit_with(main: Callable[[], int]) -> NoReturn:
    """Runs a command's `main` (its exit code) in this process, then exits with that code."""
    gc.freeze()
    gc.enable()   # paused while the modules loaded (pipelines/__init__.py)
    code = main()
    gc.freeze()
    sys.exit(code)
