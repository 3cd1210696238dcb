"""Settings: API keys from comma lists, hashed on load; limits that must agree."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from common.settings import DEFAULT_SKOPS_TRUSTED_TYPES, Settings, hash_api_key


def test_hash_api_key_is_sha256_hex() -> None:
    # sha256("abc"), a published test vector
    assert hash_api_key("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_comma_separated_api_keys_are_split_stripped_and_hashed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "SERVING_API_KEYS", " key-one-long-enough, key-two-long-enough ,,key-three-long-enough "
    )

    settings = Settings()

    assert settings.api_key_sha256 == [
        hash_api_key("key-one-long-enough"),
        hash_api_key("key-two-long-enough"),
        hash_api_key("key-three-long-enough"),
    ]
    assert settings.api_keys == []


def test_comma_separated_admin_keys_are_hashed_separately(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVING_API_KEYS", "user-key-long-enough")
    monkeypatch.setenv("SERVING_ADMIN_API_KEYS", "admin-key-1-long-enough,admin-key-2-long-enough")

    settings = Settings()

    assert settings.admin_api_key_sha256 == [
        hash_api_key("admin-key-1-long-enough"),
        hash_api_key("admin-key-2-long-enough"),
    ]
    assert settings.admin_api_keys == []
    assert settings.api_key_sha256 == [hash_api_key("user-key-long-enough")]
    assert hash_api_key("user-key-long-enough") not in settings.admin_api_key_sha256


def test_plain_keys_are_appended_to_configured_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    existing = hash_api_key("already-hashed")
    monkeypatch.setenv("SERVING_API_KEY_SHA256", existing)
    monkeypatch.setenv("SERVING_API_KEYS", "plain-key-long-enough")

    settings = Settings()

    assert settings.api_key_sha256 == [existing, hash_api_key("plain-key-long-enough")]


def test_plain_keys_never_appear_in_a_settings_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVING_API_KEYS", "very-secret-user-key")
    monkeypatch.setenv("SERVING_ADMIN_API_KEYS", "very-secret-admin-key")

    dump = Settings().model_dump_json()

    assert "very-secret-user-key" not in dump
    assert "very-secret-admin-key" not in dump


def test_no_keys_configured_gives_empty_digest_lists() -> None:
    settings = Settings()

    assert settings.api_key_sha256 == []
    assert settings.admin_api_key_sha256 == []


def test_skops_trusted_types_from_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVING_SKOPS_TRUSTED_TYPES", "a.B, c.D")

    assert Settings().skops_trusted_types == ["a.B", "c.D"]
    monkeypatch.delenv("SERVING_SKOPS_TRUSTED_TYPES")
    assert Settings().skops_trusted_types == DEFAULT_SKOPS_TRUSTED_TYPES


def test_soft_limit_equal_to_hard_limit_is_accepted() -> None:
    settings = Settings(task_soft_time_limit_seconds=60, task_time_limit_seconds=60)

    assert settings.task_soft_time_limit_seconds == settings.task_time_limit_seconds == 60


def test_soft_limit_above_hard_limit_is_refused() -> None:
    with pytest.raises(ValidationError, match="task_soft_time_limit_seconds must not exceed"):
        Settings(task_soft_time_limit_seconds=61, task_time_limit_seconds=60)


def test_soft_limit_above_hard_limit_from_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVING_TASK_SOFT_TIME_LIMIT_SECONDS", "90")

    with pytest.raises(ValidationError, match="task_soft_time_limit_seconds must not exceed"):
        Settings()


@pytest.mark.parametrize("visibility", [60, 59, 1])
def test_visibility_timeout_not_above_hard_limit_is_refused(visibility: int) -> None:
    with pytest.raises(ValidationError, match="broker_visibility_timeout_seconds must exceed"):
        Settings(
            task_time_limit_seconds=60,
            task_soft_time_limit_seconds=50,
            broker_visibility_timeout_seconds=visibility,
        )


def test_visibility_timeout_just_above_hard_limit_is_accepted() -> None:
    settings = Settings(task_time_limit_seconds=60, broker_visibility_timeout_seconds=61)

    assert settings.broker_visibility_timeout_seconds == 61


def test_effective_urls_fall_back_to_redis_url() -> None:
    settings = Settings(redis_url="redis://example:1/2", cache_url="redis://cache:3/4")

    assert settings.effective_broker_url == "redis://example:1/2"
    assert settings.effective_result_backend_url == "redis://example:1/2"
    assert settings.effective_cache_url == "redis://cache:3/4"


def test_redis_credentials_are_added_to_every_url_without_their_own() -> None:
    settings = Settings(
        redis_url="redis://cache-host:6379/0",
        result_backend_url="rediss://results:6380/1",
        cache_url="redis://other:pw@cache:6379/2",
        redis_username="serving",
        redis_password="p@ss:w/rd",
    )
    assert settings.effective_broker_url == "redis://serving:p%40ss%3Aw%2Frd@cache-host:6379/0"
    assert (
        settings.effective_result_backend_url == "rediss://serving:p%40ss%3Aw%2Frd@results:6380/1"
    )
    assert settings.effective_cache_url == "redis://other:pw@cache:6379/2"
    assert "p@ss" not in repr(settings)


def test_redis_credentials_never_go_to_a_rabbitmq_url() -> None:
    settings = Settings(broker_url="amqp://rabbit:5672/serving", redis_password="redis-secret")
    assert settings.effective_broker_url == "amqp://rabbit:5672/serving"
    assert settings.effective_cache_url == "redis://:redis-secret@127.0.0.1:6379/0"


def test_password_without_a_user_is_the_default_user() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6379/3", redis_password="secret")
    assert settings.effective_broker_url == "redis://:secret@127.0.0.1:6379/3"
    assert Settings(redis_url="redis://h/0").effective_cache_url == "redis://h/0"


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("SERVING_API_KEYS", "change-me-predict-key", "placeholder"),
        ("SERVING_ADMIN_API_KEYS", "change-me-admin-key", "placeholder"),
        ("SERVING_API_KEYS", "CHANGE-ME-but-long-enough-anyway", "placeholder"),
        ("SERVING_CALLBACK_SECRET", "change-me-callback-secret", "placeholder"),
        ("SERVING_API_KEYS", "fifteen-chars-x", "shorter than 16 characters"),
        ("SERVING_ADMIN_API_KEYS", "good-admin-key-long-enough,tiny", "shorter than 16"),
        ("SERVING_CALLBACK_SECRET", "q7z", "shorter than 16 characters"),
        ("SERVING_API_KEY_SHA256", "abc", "not 64 hexadecimal characters"),
        ("SERVING_ADMIN_API_KEY_SHA256", "g" * 64, "not 64 hexadecimal characters"),
    ],
)
def test_startup_refuses_placeholders_and_short_secrets_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError) as refused:
        Settings()

    message = str(refused.value)
    assert f"{variable}: " in message and problem in message
    for secret in value.split(","):  # the error names the variable, never the value
        assert secret not in message


def test_sixteen_characters_and_any_case_of_digest_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest = hash_api_key("a-key-kept-as-a-digest")
    monkeypatch.setenv("SERVING_API_KEYS", "x" * 16)
    monkeypatch.setenv("SERVING_CALLBACK_SECRET", "y" * 16)
    monkeypatch.setenv("SERVING_ADMIN_API_KEY_SHA256", digest.upper())

    settings = Settings()

    assert settings.api_key_sha256 == [hash_api_key("x" * 16)]
    assert settings.admin_api_key_sha256 == [digest]  # lower case, as the comparison needs


def test_dev_run_keys_pass_the_startup_check() -> None:
    # `make run` makes its keys with token_urlsafe(24): 32 characters.
    import secrets

    Settings(api_keys=[secrets.token_urlsafe(24)], admin_api_keys=[secrets.token_urlsafe(24)])


def test_callback_allowed_networks_are_checked_at_startup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVING_CALLBACK_ALLOWED_NETWORKS", "10.0.0.0/8, 127.0.0.1")
    assert Settings().callback_allowed_networks == ["10.0.0.0/8", "127.0.0.1"]
    monkeypatch.setenv("SERVING_CALLBACK_ALLOWED_NETWORKS", "10.0.0.0/8,10.0.0.0/33")
    with pytest.raises(ValidationError, match=re.escape("'10.0.0.0/33' is not a network in CIDR")):
        Settings()
