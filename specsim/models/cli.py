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
    shape = sub.add_parser(
        "drafter-shape",
        help="write a drafter of the target's shapes as config.json alone, for `specsim profile --costs-only`",
        description="A step's cost depends on the drafter's shapes, not its weights: write an EAGLE-3 head or a "
                    "small draft model of the target's width and vocabulary as a folder holding config.json (and "
                    "the target's tokenizer files), then measure its cost grid with `specsim profile --drafter "
                    "eagle3:DIR --costs-only` before training or downloading anything.",
    )
    shape.add_argument("--method", choices=("eagle3", "draft_model"), required=True)
    shape.add_argument("--layers", type=int, default=None,
                       help="decoder layers (default: 1 for eagle3, 4 for draft_model)")
    shape.add_argument("--target", default="default", help="the target model: 'default', a folder or a .gguf")
    shape.add_argument("--out", default=None,
                       help="folder to write (default: $SPECSIM_CACHE/models/TARGET-METHOD-NL-shape)")
    shape.set_defaults(func=_drafter_shape)
    p.set_defaults(func=lambda _a: (p.print_help(), 2)[1])


def _drafter_shape(args: argparse.Namespace) -> int:
    from pathlib import Path

    from specsim.models.drafter_shapes import write_shape_folder
    from specsim.models.prepare import models_dir, resolve_model

    layers = args.layers if args.layers is not None else (1 if args.method == "eagle3" else 4)
    target = resolve_model(args.target)
    out = Path(args.out) if args.out else models_dir() / f"{target.name}-{args.method}-{layers}L-shape"
    print(write_shape_folder(target, args.method, layers, out))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from specsim.models.prepare import DEFAULT_FOLDER, convert_gguf, default_gguf_path, models_dir

    gguf = Path(args.gguf) if args.gguf else default_gguf_path()
    name = DEFAULT_FOLDER if args.gguf is None else Path(args.gguf).stem
    out = Path(args.out) if args.out else models_dir() / name
    path = convert_gguf(gguf, out, force=args.force)
    print(path)
    return 0
