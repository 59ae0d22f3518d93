"""The `specsim` command's first instructions: Ctrl-C before the CLI is ready ends it quietly.

Importing the CLI and building its parser takes a few hundred milliseconds; a Ctrl-C then would print
Python's traceback of whatever import was running. This module imports nothing of specsim's: it sets
SIGINT to exit at once (exit code 130, one line) and hands the handler back to Python just before the
command itself runs (`specsim.cli.main`), whose own handling then applies.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys


def _startup_interrupt(signum: int, frame: object) -> None:
    try:
        os.write(2, b"specsim: interrupted\n")
    finally:
        os._exit(130)


def _exit_interrupted(rc: int) -> None:
    """End an interrupted command with exit code `rc` whatever the interpreter remembers.

    NOTE: CPython 3.11 (`run_eval_code_obj` in Python/pythonrun.c) sets `_Py_UnhandledKeyboardInterrupt`
    when a KeyboardInterrupt leaves code it runs through `PyRun_*`, as the import of a Cython module
    does (charset_normalizer's, reached from numpy.f2py), and never clears it; `Py_RunMain` then ends
    the process by SIGINT (exit -2) although specsim caught the interrupt and printed its line. So an
    interrupted command runs the exit handlers and flushes itself, then leaves by `os._exit`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    finally:
        os._exit(rc)


def main() -> int:
    """Console-script entry point (`specsim`, `python -m specsim`)."""
    signal.signal(signal.SIGINT, _startup_interrupt)
    try:
        from specsim.cli import main as cli_main

        rc = cli_main(sys.argv[1:], startup_handler=_startup_interrupt)
    except KeyboardInterrupt:  # between the command's own handling and its return
        os.write(2, b"specsim: interrupted\n")
        rc = 130
    finally:
        # NOTE: the command is over; a Ctrl-C while the interpreter shuts down would otherwise end the
        # process by the signal itself (exit -2) after the command already finished its work
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if rc > 128:  # ended by a signal (Ctrl-C, SIGTERM, SIGHUP, a closed pipe)
        _exit_interrupted(rc)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
