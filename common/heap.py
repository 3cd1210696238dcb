"""What a long-running process built at startup, kept out of the garbage collector's way.

CPython's collections of the oldest generation walk every tracked object, and a service
holds hundreds of thousands from startup that never become garbage: modules, the app's
routes and schemas, pydantic's validators, Celery's app. perf showed a quarter of the
API's CPU under load in the collector (`gc_collect_main` and its visitors); py-spy hid it,
charging it to whatever Python line allocated at the time. `gc.freeze()` moves them into
the permanent generation, which collections skip; the rest is collected as before. A
process forked afterwards (a prefork pool process) inherits the frozen objects, and since
the collector no longer writes to their headers, their pages stay shared with the parent.

The youngest generation is also collected less often: CPython's default, a collection
once 700 more containers are alive than when it last ran, fired about eight times per
1,000-row request in the API (the request's row lists, its result's lists, its rendered
predictions), each walking every young container and its items: 9% of the API's CPU
(measured with `gc.callbacks`). At YOUNG_THRESHOLD a request's containers are freed by
their reference counts before a collection comes, so none ran in 10 s of that load;
cyclic garbage still goes, only later, and waits in at most that many objects.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)
# Allocations (less deallocations) of containers between collections of the youngest
# generation; the older generations keep CPython's own thresholds.
YOUNG_THRESHOLD = 20_000


def settle_heap() -> int:
    """Collect what startup left behind, then freeze the rest, and collect the youngest
    generation at YOUNG_THRESHOLD; the objects now frozen.

    Call it once startup is done; objects made later are collected as usual."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    frozen = gc.get_freeze_count()
    log.debug("froze %d objects built at startup", frozen)
    return frozen
