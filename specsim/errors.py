"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations

import argparse
from typing import NoReturn


class SpecsimError(Exception):
    """Bad input or an impossible request, explained in one line for the user."""


def one_line(msg: str, limit: int = 300) -> str:
    """Collapse a (possibly multi-line) message into one readable line."""
    text = " ".join(str(msg).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error printed as one line `specsim: error: ...` (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("specsim").strip()
        self.exit(2, f"specsim: error: {where + ': ' if where else ''}{one_line(message)} "
                     f"(see {self.prog} --help)\n")
