"""``python -m bench``: run the benchmark suite and print the results table."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
