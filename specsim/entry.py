"""The `specsim` command's first instructions: Ctrl-C before the CLI is ready ends it quietly.

Importing the CLI and building its parser takes a few hundred milliseconds; a Ctrl-C then would print
Python's traceback of whatever import was running. This module imports nothing of specsim's: it sets
SIGINT to exit at once (exit code 130, one line) and hands the handler back to Python just before the
command itself runs (`specsim.cli.main`), whose own handling then applies.
"""

from __future__ import annotations

import os
import signal
import sys


def _startup_interrupt(signum: int, frame: object) -> None:
    try:
        os.write(2, b"specsim: interrupted\n")
    finally:
        os._exit(130)


def main() -> int:
    """Console-script entry point (`specsim`, `python -m specsim`)."""
    signal.signal(signal.SIGINT, _startup_interrupt)
    try:
        from specsim.cli import main as cli_main

        return cli_main(sys.argv[1:], startup_handler=_startup_interrupt)
    except KeyboardInterrupt:  # between the command's own handling and its return
        os.write(2, b"specsim: interrupted\n")
        return 130
    finally:
        # NOTE: the command is over; a Ctrl-C while the interpreter shuts down would otherwise end the
        # process by the signal itself (exit -2) after the command already finished its work
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    raise SystemExit(main())
