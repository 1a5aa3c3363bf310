"""``python -m scotsearch`` entry point."""

from __future__ import annotations

import sys

from scotsearch.cli import main


if __name__ == "__main__":
    sys.exit(main())
