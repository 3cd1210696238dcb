"""A batch's result, split into each request's own: the API hands every caller theirs,
and the worker logs and caches every request's."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

# Set on a batch's result when the worker wrote each request's own into the prediction
# cache (queueing.messages.Segment.cache_key): the API then does not write it again.
CACHE_WRITTEN = "cache_written"


def split(result: dict[str, Any], sizes: Iterable[int]) -> Iterator[dict[str, Any]]:
    """Each request's labels and probabilities, in order, `sizes` rows each."""
    labels, probabilities = result["labels"], result["probabilities"]
    start = 0
    for size in sizes:
        end = start + size
        yield {"labels": labels[start:end], "probabilities": probabilities[start:end]}
        start = end
