"""What the settings accept as API keys and secrets: plain keys become sha256 digests
(only digests stay in memory), and placeholders, short keys and malformed digests are
refused, naming the variable and never the value."""

from __future__ import annotations

import hashlib
import re

# Startup refuses keys and secrets shorter than this, or starting with the placeholder.
MIN_SECRET_CHARS = 16
PLACEHOLDER_PREFIX = "change-me"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def refuse_weak_secrets(plain: dict[str, list[str]]) -> None:
    """A placeholder copied from .env.example, or a key short enough to guess, must never
    guard a running service: ValueError naming the variable (never the value)."""
    for variable, values in plain.items():
        for value in values:
            if value.lower().startswith(PLACEHOLDER_PREFIX):
                raise ValueError(
                    f"{variable}: a value is .env.example's {PLACEHOLDER_PREFIX!r} "
                    "placeholder; set a random one"
                )
            if len(value) < MIN_SECRET_CHARS:
                raise ValueError(f"{variable}: a key is shorter than {MIN_SECRET_CHARS} characters")


def checked_digests(variable: str, digests: list[str]) -> list[str]:
    """sha256 hex digests as hexdigest() writes them (lower case), for the comparison;
    ValueError naming the variable if one is not 64 hexadecimal characters."""
    lowered = [d.lower() for d in digests]
    if not all(SHA256_HEX.fullmatch(d) for d in lowered):
        raise ValueError(f"{variable}: a digest is not 64 hexadecimal characters")
    return lowered
