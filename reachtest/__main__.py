"""Entry point for ``python -m reachtest``."""

from __future__ import annotations

from reachtest.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
