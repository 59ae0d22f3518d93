"""Allow `python -m specsim`."""

from __future__ import annotations

from specsim.entry import main

raise SystemExit(main())
