"""API-key roles: digests only, constant-time comparison, admin above reader."""

from __future__ import annotations

from api.deps import Role, role_for_key
from common.settings import Settings, hash_api_key


def settings() -> Settings:
    return Settings(
        api_keys=["reader-key-number-1", "reader-key-number-2"],
        admin_api_keys=["the-boss-admin-key"],
        api_key_sha256=[hash_api_key("pre-hashed")],
    )


def test_roles_follow_the_configured_keys() -> None:
    s = settings()
    assert role_for_key(s, "reader-key-number-1") is Role.READER
    assert role_for_key(s, "reader-key-number-2") is Role.READER
    assert role_for_key(s, "pre-hashed") is Role.READER
    assert role_for_key(s, "the-boss-admin-key") is Role.ADMIN


def test_unknown_empty_and_missing_keys_have_no_role() -> None:
    s = settings()
    for key in [
        "",
        None,
        "reader-key-number-1 ",
        "READER-KEY-NUMBER-1",
        "the-boss-admin-key2",
        hash_api_key("the-boss-admin-key"),
    ]:
        assert role_for_key(s, key) is None


def test_plain_keys_are_not_kept_in_settings() -> None:
    dumped = settings().model_dump_json()
    assert "reader-key-number-1" not in dumped and "the-boss-admin-key" not in dumped
    assert hash_api_key("the-boss-admin-key") in dumped
