"""Resumable runs: every finished grid point or trace is appended as one JSON line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from specsim.errors import SpecsimError


def checkpoint_path(out: str | Path) -> Path:
    """The checkpoint file that lives next to the output profile."""
    p = Path(out)
    return p.with_name(p.name + ".partial.jsonl")


class Checkpoint:
    """Append-only JSONL of finished points keyed by a string; reloads them on resume."""

    def __init__(self, path: str | Path, config: dict[str, Any], resume: bool = True) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists() and resume:
            self._load(config)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_line({"key": "__config__", "config": config}, mode="w")

    def _load(self, config: dict[str, Any]) -> None:
        from specsim.formats._common import read_text
        from specsim.io import set_aside_torn_tail

        moved, side = set_aside_torn_tail(self.path)  # never append onto a record cut short
        if moved:
            print(f"specsim: note: checkpoint {self.path} ended in a record cut short by a crash ({moved} bytes, "
                  f"moved to {side}); the finished points before it are kept", file=sys.stderr)
        lines = read_text(self.path, "checkpoint").splitlines()
        for i, line in enumerate(lines):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # a line cut short by a crash: drop it
                    continue
                raise SpecsimError(f"checkpoint {self.path} line {i + 1} is corrupt; delete it to start over") from None
            if rec.get("key") == "__config__":
                if rec.get("config") != config:
                    raise SpecsimError(
                        f"checkpoint {self.path} was written with different settings; "
                        "delete it or use --no-resume to start over"
                    )
                continue
            self.records[rec["key"]] = rec
        if not lines:
            self._write_line({"key": "__config__", "config": config}, mode="w")

    def _write_line(self, rec: dict[str, Any], mode: str = "a") -> None:
        with open(self.path, mode, encoding="utf-8") as f:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def done(self, key: str) -> bool:
        """Whether this point is already measured."""
        return key in self.records

    def get(self, key: str) -> dict[str, Any]:
        """A finished point's record."""
        return self.records[key]

    def put(self, key: str, rec: dict[str, Any]) -> None:
        """Record a finished point (durably, before moving on)."""
        rec = {"key": key, **rec}
        self._write_line(rec)
        self.records[key] = rec

    def remove(self) -> None:
        """Delete the checkpoint after the profile is written."""
        self.path.unlink(missing_ok=True)


def read_records(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(config, records by key) of a checkpoint file, read-only (a cut last line is dropped)."""
    config: dict[str, Any] = {}
    records: dict[str, dict[str, Any]] = {}
    from specsim.formats._common import read_text

    lines = read_text(path, "checkpoint").splitlines()
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            raise SpecsimError(f"checkpoint {path} line {i + 1} is corrupt") from None
        if rec.get("key") == "__config__":
            config = rec["config"]
        else:
            records[rec["key"]] = rec
    return config, records
