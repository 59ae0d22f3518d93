"""The `specsim` command line: each stage registers its own subcommands here.

Every user-facing failure is a SpecsimError, printed as one line with exit code 2; so is an OSError
(a file that cannot be read or written). SIGTERM and SIGHUP unwind like Ctrl-C, so temporary files
are removed (exit 143 / 129; Ctrl-C exits 130).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence

from specsim import __version__
from specsim.errors import ArgumentParser, SpecsimError, one_line
from specsim.io import Terminated, os_error_message, raise_on_signals

# Modules that define `register(subparsers)`; each adds its stage's subcommands. They must import
# nothing heavy (vLLM, torch) at module level so `specsim --help` stays fast.
STAGE_MODULES = (
    "specsim.traffic.cli",
    "specsim.simulator.cli",
    "specsim.models.cli",
    "specsim.profiler.cli",
    "specsim.profiler.analytic_cli",
    "specsim.tuner.cli",
    "specsim.policies.cli",
    "specsim.verify.cli",
    "specsim.demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available stage's subcommands."""
    parser = ArgumentParser(
        prog="specsim",
        description="Simulate and tune speculative-decoding policy for LLM serving.",
    )
    parser.add_argument("--version", action="version", version=f"specsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_MODULES:
        # NOTE: a stage that fails to import is an error, never a silently missing command
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None, startup_handler: Callable[[int, object], None] | None = None) -> int:
    """Entry point: parse, dispatch, and turn errors into one line and an exit code.

    `startup_handler`: the SIGINT handler `specsim.entry` set before importing this module; it stays
    while the parser is built and is replaced by Python's KeyboardInterrupt as the command starts."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        sys.stdout.flush()
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except BrokenPipeError:  # `specsim --help | head`
        _silence_stdout()
        return 128 + 13
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        if startup_handler is not None and signal.getsignal(signal.SIGINT) is startup_handler:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        with raise_on_signals():
            rc = func(args)
        sys.stdout.flush()
    except BrokenPipeError:  # `specsim ... | head`: the reader left; say nothing more
        _silence_stdout()
        return 128 + 13
    except SpecsimError as exc:
        print(f"specsim: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused: a full disk, a permission, a path that is a file
        print(f"specsim: error: {one_line(os_error_message(exc, 'cannot access'))}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # a usage error found by a command's own parser, already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except Terminated as exc:
        print(f"specsim: terminated by {exc.name}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("specsim: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal bug: still one line unless debugging
        if os.environ.get("SPECSIM_DEBUG"):
            raise
        print(
            f"specsim: internal error: {type(exc).__name__}: {one_line(str(exc))} "
            "(set SPECSIM_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1
    return int(rc or 0)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush does not fail on the closed pipe."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
