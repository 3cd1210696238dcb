"""Who is asking: the tenant a request acts for, and which stored things are whose.

A tenant is an API key's digest (`owner`), never the key. Predict keys see only what
their own digest owns; admin keys see everything. Every store a tenant reaches (log
rows, uploads, jobs and their results, cache entries) is scoped through this module, so
the rule lives in one place instead of route by route.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def owner_of(key: str) -> str:
    """The digest a key's work is stored under: stable, short, and not the key."""
    return hashlib.blake2b(key.encode(), digest_size=12, person=b"job-owner").hexdigest()


@dataclass(frozen=True)
class Tenant:
    owner: str
    admin: bool = False

    def sees(self, owner: str | None) -> bool:
        """May this tenant read (or cancel) something `owner` made?"""
        return self.admin or owner == self.owner
