"""Redis credentials added to Redis URLs, so the URLs in the settings hold no secret and
can be logged."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def with_credentials(url: str, username: str | None, password: SecretStr | None) -> str:
    """`url` with `username:password@` added; as it is when there is no password, when
    the URL carries credentials of its own (they win), or when it is not Redis's."""
    parts = urlsplit(url)
    if password is None or parts.username or parts.password or parts.scheme not in REDIS_SCHEMES:
        return url
    user = quote(username or "", safe="")
    secret = quote(password.get_secret_value(), safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{secret}@{parts.netloc}"))
