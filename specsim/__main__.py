"""Allow `python -m specsim`."""

from __future__ import annotations

from specsim.cli import main

raise SystemExit(main())
