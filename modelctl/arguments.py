"""The shapes of arguments, checked while parsing; what their values may be (a weight's
bounds, a version that exists) is the domain's to say, when the command runs. Imports
nothing heavy, so that `--help` answers at once."""

from __future__ import annotations

import argparse

DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_REPORT_ROWS = 1000  # as GET /models/{type}/shadow/report


def parse_weight(text: str) -> tuple[str, int]:
    """`1=90` -> ("1", 90): argparse's type for a traffic argument."""
    version, equals, number = (part.strip() for part in text.partition("="))
    if not equals or not version or not number:
        raise argparse.ArgumentTypeError(f"{text!r}: write VERSION=WEIGHT, e.g. 1=90")
    try:
        return version, int(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the weight must be a whole number, e.g. 1=90"
        ) from None


def positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)
