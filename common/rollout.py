"""A type's rollout state, kept in registry.json beside the active versions: named aliases,
a traffic split between versions, and a shadow version scored on a share of requests.

Only the rules live here (which version answers, whether a request is shadowed); the
registry stores them and the prediction service applies them."""

from __future__ import annotations

import hashlib
import random
import re
from typing import Annotated

from pydantic import BaseModel, Field

from common.errors import InvalidInput

CHAMPION = "champion"  # the alias that is always the type's active version
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
_ALIAS = re.compile(ALIAS_PATTERN)
MAX_SPLIT_VERSIONS = 16

Weight = Annotated[int, Field(ge=0, le=10_000)]


class ShadowRule(BaseModel):
    version: str
    fraction: float = Field(gt=0, le=1)


class Rollout(BaseModel):
    """One type's aliases (besides `champion`), traffic split and shadow."""

    aliases: dict[str, str] = Field(default_factory=dict)
    traffic: dict[str, Weight] = Field(default_factory=dict)  # version: weight
    shadow: ShadowRule | None = None

    def is_empty(self) -> bool:
        return not self.aliases and not self.traffic and self.shadow is None


def check_alias(alias: str, versions: list[str]) -> str:
    """An alias's name: a letter first (so that no number reads as one), not a version."""
    if not _ALIAS.fullmatch(alias):
        raise InvalidInput(
            f"invalid alias {alias!r}: a letter, then letters, digits, '_' or '-' (at most 64)"
        )
    if alias in versions:
        raise InvalidInput(f"{alias!r} is a version of this type; an alias needs another name")
    return alias


def check_split(weights: dict[str, int], versions: list[str]) -> dict[str, int]:
    """A traffic split: known versions, weights that add up to more than nothing."""
    if not weights:
        raise InvalidInput('a split names at least one version: {"1": 90, "2": 10}')
    if len(weights) > MAX_SPLIT_VERSIONS:
        raise InvalidInput(f"a split names at most {MAX_SPLIT_VERSIONS} versions")
    if unknown := sorted(set(weights) - set(versions)):
        raise InvalidInput(f"unknown versions in the split: {unknown}; available: {versions}")
    if any(type(w) is not int or w < 0 for w in weights.values()):
        raise InvalidInput("weights are whole numbers >= 0")
    if sum(weights.values()) <= 0:
        raise InvalidInput("the split's weights add up to 0; give a version some traffic")
    return {version: weight for version, weight in weights.items() if weight > 0}


def pick(traffic: dict[str, int], sticky_key: str | None) -> str:
    """The version that answers: by weight, for a caller always the same one when
    `sticky_key` is given (a hash of it, so a caller sees one version throughout),
    else drawn afresh for each request."""
    total = sum(traffic.values())
    if sticky_key is None:
        point = random.randrange(total)  # noqa: S311 - a split, not a secret
    else:
        digest = hashlib.blake2b(sticky_key.encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") % total
    for version, weight in sorted(traffic.items()):
        if point < weight:
            return version
        point -= weight
    raise AssertionError("unreachable: the point lies within the total")


def shadowed(rule: ShadowRule | None, version: str) -> bool:
    """Whether this request, answered by `version`, is also scored on the shadow."""
    drawn = random.random()  # noqa: S311 - a sample, not a secret
    return rule is not None and rule.version != version and drawn < rule.fraction
