"""The `specsim` command line: each stage registers its own subcommands here.

Every user-facing failure is a SpecsimError, printed as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from specsim import __version__
from specsim.errors import SpecsimError, one_line

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
    parser = argparse.ArgumentParser(
        prog="specsim",
        description="Simulate and tune speculative-decoding policy for LLM serving.",
    )
    parser.add_argument("--version", action="version", version=f"specsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_MODULES:
        # NOTE: a stage that fails to import is an error, never a silently missing command
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn errors into one line and an exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        rc = func(args)
    except SpecsimError as exc:
        print(f"specsim: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    raise SystemExit(main())
