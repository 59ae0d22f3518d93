"""The rich console every command prints its tables through.

On a terminal rich fits tables to its width. Piped into a file or `head` there is no width to fit, and rich's
fallback of 80 columns wraps every wide table into unreadable rows; a pipe then gets `PIPE_WIDTH` columns
(or `$COLUMNS` when set) so that each table row stays on one line.
"""

from __future__ import annotations

import os
import sys
from typing import Any

PIPE_WIDTH = 240
"""Columns used when the output is not a terminal and $COLUMNS is unset."""


def console(stderr: bool = False) -> Any:
    """A rich Console for stdout (or stderr), wide enough for tables when the output is a pipe."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty() and not os.environ.get("COLUMNS"):
        width = PIPE_WIDTH
    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # NOTE: rich's own answer is SystemExit(1); the CLI gives a closed pipe its quiet exit 141
            self.quiet = True
            raise BrokenPipeError

    return _Console(stderr=stderr, width=width)
