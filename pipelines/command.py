"""How a job's command runs its process: the collector leaves out what lives as long as the process.

When the command starts, Beam's modules and the job's are loaded: some 165,000 objects that
live until the process exits. The collector is paused while they load (its passes over them
took 0.13-0.17 s of a start-up); frozen (`gc.freeze`), they are no longer
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


def pause_collector_while_loading(package: str) -> None:
    """Called as `package` loads: pauses the collector if the interpreter was started to run one of
    its modules (`python -m <package>.<command>`), whose `exit_with` starts it again. Any other
    process - a library import, a user's own `python -m` module that imports the package - keeps it."""
    module = _module_run_by_interpreter(sys.orig_argv)
    if module is not None and module.startswith(f"{package}."):
        gc.disable()


def _module_run_by_interpreter(argv: list[str]) -> str | None:
    """`<module>` of `python [options] -m <module> ...`; None for a script, `-c` or anything unrecognised."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, None)
        if arg.startswith("-m"):
            return arg[2:]
        if arg in ("-X", "-W"):    # an option whose value is the next argument
            next(args, None)
        elif arg == "-c" or not arg.startswith("-"):
            return None
    return None


def exit_with(main: Callable[[], int]) -> NoReturn:
    """Runs a command's `main` (its exit code) in this process, then exits with that code."""
    gc.freeze()
    gc.enable()   # paused while the modules loaded (`pause_collector_while_loading`)
    code = main()
    gc.freeze()
    sys.exit(code)
