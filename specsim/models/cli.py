"""`specsim models prepare`: convert the packaged default model (or a GGUF) once into the cache."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add `specsim models ...` to the CLI."""
    p = subparsers.add_parser("models", help="prepare local models for the profiler (no downloads)")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    prep = sub.add_parser(
        "prepare",
        help="convert the packaged SmolLM2-135M GGUF (or --gguf FILE) into a vLLM-loadable folder",
    )
    prep.add_argument("--gguf", default=None, help="a .gguf file to convert (default: the packaged model)")
    prep.add_argument("--out", default=None, help="output folder (default: $SPECSIM_CACHE/models/NAME)")
    prep.add_argument("--force", action="store_true", help="convert again even if already prepared")
    prep.set_defaults(func=_prepare)
    p.set_defaults(func=lambda _a: (p.print_help(), 2)[1])


def _prepare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from specsim.models.prepare import DEFAULT_FOLDER, convert_gguf, default_gguf_path, models_dir

    gguf = Path(args.gguf) if args.gguf else default_gguf_path()
    name = DEFAULT_FOLDER if args.gguf is None else Path(args.gguf).stem
    out = Path(args.out) if args.out else models_dir() / name
    path = convert_gguf(gguf, out, force=args.force)
    print(path)
    return 0
