"""What a long-running process built at startup, kept out of the garbage collector's way.

CPython's collections of the oldest generation walk every tracked object, and a service
holds hundreds of thousands from startup that never become garbage: modules, the app's
routes and schemas, pydantic's validators, Celery's app. perf showed a quarter of the
API's CPU under load in the collector (`gc_collect_main` and its visitors); py-spy hid it,
charging it to whatever Python line allocated at the time. `gc.freeze()` moves them into
the permanent generation, which collections skip; the rest is collected as before. A
process forked afterwards (a prefork pool process) inherits the frozen objects, and since
the collector no longer writes to their headers, their pages stay shared with the parent.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def settle_heap() -> int:
    """Collect what startup left behind, then freeze the rest; the objects now frozen.

    Call it once startup is done; objects made later are collected as usual."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("froze %d objects built at startup", frozen)
    return frozen
