"""API-key roles: digests only, constant-time comparison, admin above reader."""

from __future__ import annotations

from api.deps import Role, role_for_key
from common.settings import Settings, hash_api_key


def settings() -> Settings:
    return Settings(
        api_keys=["reader-1", "reader-2"],
        admin_api_keys=["boss"],
        api_key_sha256=[hash_api_key("pre-hashed")],
    )


def test_roles_follow_the_configured_keys() -> None:
    s = settings()
    assert role_for_key(s, "reader-1") is Role.READER
    assert role_for_key(s, "reader-2") is Role.READER
    assert role_for_key(s, "pre-hashed") is Role.READER
    assert role_for_key(s, "boss") is Role.ADMIN


def test_unknown_empty_and_missing_keys_have_no_role() -> None:
    s = settings()
    for key in ["", None, "reader-1 ", "READER-1", "boss2", hash_api_key("boss")]:
        assert role_for_key(s, key) is None


def test_plain_keys_are_not_kept_in_settings() -> None:
    dumped = settings().model_dump_json()
    assert "reader-1" not in dumped and "boss" not in dumped
    assert hash_api_key("boss") in dumped
