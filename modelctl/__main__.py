"""`python -m modelctl`: the `modelctl` console script, where it is not installed (the
worker image)."""

from __future__ import annotations

import sys

from modelctl.cli import main

if __name__ == "__main__":
    sys.exit(main())
