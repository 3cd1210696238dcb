"""How invalid rows are refused: the one wording of an InvalidInput naming its problems,
and the cheap first check of a request's rows (a row with more or fewer keys than the
model has features is refused naming expected and got, before pydantic, which would
build and keep an error for each of, say, 100,000 unknown keys)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from common.errors import InvalidInput

MAX_DETAILS = 50  # problems an InvalidInput lists at most
# The largest float32: models that compute in float32 (XGBoost) turn anything larger into
# infinity, and ones in float64 (scikit-learn's scalers) overflow near float64's largest.
MAX_MAGNITUDE = 3.4028234663852886e38


def check_widths(rows: list[Any], names: Sequence[str], single: bool) -> None:
    """InvalidInput naming the missing and unknown features of the rows (at most
    MAX_DETAILS) whose number of keys is not len(names); one pass of len() otherwise."""
    width = len(names)
    wrong = itertools.islice(
        ((i, row) for i, row in enumerate(rows) if isinstance(row, dict) and len(row) != width),
        MAX_DETAILS,
    )
    details: list[dict[str, Any]] = []
    for i, row in wrong:
        details += width_details(row, names, None if single else i)
    if details:
        first = details[0]
        where = "" if single else f"row {first['row']} has "
        lead = f"{where}{first['got']} features where the model takes {width}: "
        raise refusal(details[:MAX_DETAILS], single, lead)


def refusal(details: list[dict[str, Any]], single: bool, lead: str = "") -> InvalidInput:
    """The error naming the first five problems (the details list them all)."""
    parts = [
        ("" if single else f"row {d['row']}: ") + f"{d['feature'] or 'row'}: {d['problem']}"
        for d in details[:5]
    ]
    more = f" (and {len(details) - 5} more)" if len(details) > 5 else ""
    return InvalidInput(f"invalid input_data: {lead}{'; '.join(parts)}{more}", details)


def width_details(
    row: dict[str, Any], names: Sequence[str], index: int | None
) -> list[dict[str, Any]]:
    """What a row of the wrong width lacks and has besides (at most MAX_DETAILS)."""
    known = set(names)
    missing = [name for name in names if name not in row]
    unknown = itertools.islice((key for key in row if key not in known), MAX_DETAILS)
    named = [(name, "missing") for name in missing[:MAX_DETAILS]]
    named += [(short(key), "unknown feature") for key in unknown]
    size = {"expected": len(names), "got": len(row)}
    where = {} if index is None else {"row": index}
    return [{"feature": name, "problem": problem} | size | where for name, problem in named]


def short(name: str, limit: int = 40) -> str:
    """A key as an error names it: a hostile key may be megabytes long."""
    return name if len(name) <= limit else name[:limit] + "..."
