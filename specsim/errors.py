"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations

import argparse
import re
from typing import NoReturn

_URL_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*):[^\s'\"]*@")
_KEY_VALUE_SECRET = re.compile(r"(?i)\b(?P<key>password|passwd|pwd|secret|token|api[_-]?key)=(?P<q>['\"]?)[^\s'\"&;]+")


class SpecsimError(Exception):
    """Bad input or an impossible request, explained in one line for the user."""


def redact(text: str) -> str:
    """`text` with credentials masked: `scheme://user:SECRET@host` and `password=SECRET` (libpq, URL
    queries) become `scheme://user:***@host` and `password=***`."""
    text = _URL_CREDENTIALS.sub(lambda m: m.group("head") + ":***@", text)
    return _KEY_VALUE_SECRET.sub(lambda m: f"{m.group('key')}={m.group('q')}***", text)


def one_line(msg: str, limit: int = 300) -> str:
    """Collapse a (possibly multi-line) message into one readable line, credentials masked (`redact`)."""
    text = " ".join(redact(str(msg)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error printed as one line `specsim: error: ...` (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("specsim").strip()
        self.exit(2, f"specsim: error: {where + ': ' if where else ''}{one_line(message)} "
                     f"(see {self.prog} --help)\n")
