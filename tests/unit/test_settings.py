"""Settings: durations, defaults, the environment, and the --help description."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import pydantic
import pytest

from hookpost.settings import Settings, describe_settings, parse_duration


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DATABASE_URL from anywhere; conftest already cleared HOOKPOST_*."""
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5),
        ("2m", 120),
        ("1h", 3600),
        ("30d", 30 * 86400),
        ("10", 10),
        (" 5s ", 5),
        ("1.5s", 1.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["5x", "", "-1s", "s", "5 s s", "1h30m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_defaults() -> None:
    settings = Settings()
    assert settings.retry_schedule == [
        timedelta(seconds=5),
        timedelta(seconds=25),
        timedelta(minutes=2),
        timedelta(minutes=10),
        timedelta(hours=1),
    ]
    assert settings.max_attempts == 6
    assert settings.request_timeout == timedelta(seconds=10)
    assert settings.max_payload_bytes == 262144
    assert settings.allowed_networks == []
    assert settings.allow_http is False
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.database_url is None
    assert settings.event_loop == "uvloop"


@pytest.mark.parametrize(
    ("value", "schedule"),
    [
        ("1s, 2s", [timedelta(seconds=1), timedelta(seconds=2)]),
        ("250ms,1m,1h", [timedelta(milliseconds=250), timedelta(minutes=1), timedelta(hours=1)]),
    ],
)
def test_retry_schedule_from_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, schedule: list[timedelta]
) -> None:
    monkeypatch.setenv("HOOKPOST_RETRY_SCHEDULE", value)
    settings = Settings()
    assert settings.retry_schedule == schedule
    assert settings.max_attempts == len(schedule) + 1


@pytest.mark.parametrize(
    ("value", "networks"),
    [
        ("127.0.0.0/8,::1/128", ["127.0.0.0/8", "::1/128"]),
        (" 10.0.0.0/8 , 192.168.0.0/16 ", ["10.0.0.0/8", "192.168.0.0/16"]),
        ("127.0.0.1", ["127.0.0.1/32"]),
        ("127.0.0.1/8", ["127.0.0.0/8"]),  # host bits set: the network is meant
    ],
)
def test_allowed_networks_from_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, networks: list[str]
) -> None:
    monkeypatch.setenv("HOOKPOST_ALLOWED_NETWORKS", value)
    assert Settings().allowed_networks == [ipaddress.ip_network(n) for n in networks]


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("HOOKPOST_REQUEST_TIMEOUT", "500ms", "request_timeout", timedelta(milliseconds=500)),
        ("HOOKPOST_REQUEST_TIMEOUT", "30", "request_timeout", timedelta(seconds=30)),
        ("HOOKPOST_CONNECT_TIMEOUT", "2s", "connect_timeout", timedelta(seconds=2)),
        ("DATABASE_URL", "postgresql://u@db/hooks", "database_url", "postgresql://u@db/hooks"),
        ("HOOKPOST_PORT", "9000", "port", 9000),
        ("HOOKPOST_HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("HOOKPOST_MAX_PAYLOAD_BYTES", "1024", "max_payload_bytes", 1024),
        ("HOOKPOST_ALLOW_HTTP", "true", "allow_http", True),
        ("HOOKPOST_EVENT_LOOP", "asyncio", "event_loop", "asyncio"),
        ("HOOKPOST_PORTAL_SESSION_LIFETIME", "15m", "portal_session_lifetime",
         timedelta(minutes=15)),
        ("HOOKPOST_PUBLIC_URL", "https://hooks.example.com/", "public_url",
         "https://hooks.example.com"),
    ],
)
def test_setting_from_environment(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(Settings(), field) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HOOKPOST_PORT", "70000"),
        ("HOOKPOST_PORT", "eighty"),
        ("HOOKPOST_RETRY_SCHEDULE", "soon"),
        ("HOOKPOST_ALLOWED_NETWORKS", "not-a-cidr"),
        ("HOOKPOST_REQUEST_TIMEOUT", "-1s"),
        ("HOOKPOST_MAX_PAYLOAD_BYTES", "0"),
        ("HOOKPOST_EVENT_LOOP", "trio"),
        ("HOOKPOST_PUBLIC_URL", "hooks.example.com"),
        ("HOOKPOST_PUBLIC_URL", "ftp://hooks.example.com"),
        ("HOOKPOST_PUBLIC_URL", "https://hooks.example.com/?a=1"),
    ],
)
def test_bad_environment_value_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("variable", "default"),
    [
        ("HOOKPOST_RETRY_SCHEDULE", "5s,25s,2m,10m,1h"),
        ("HOOKPOST_REQUEST_TIMEOUT", "10s"),
        ("HOOKPOST_ALLOWED_NETWORKS", "(empty)"),
        ("HOOKPOST_MAX_PAYLOAD_BYTES", "262144"),
        ("HOOKPOST_HOST", "127.0.0.1"),
        ("HOOKPOST_PORT", "8080"),
        ("DATABASE_URL", "None"),
    ],
)
def test_describe_settings_lists_variable_with_default(variable: str, default: str) -> None:
    lines = [line.split() for line in describe_settings().splitlines()]
    described = [line for line in lines if line and line[0] == variable]
    assert len(described) == 1
    assert described[0][-1] == f"{default}]"


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("http://127.0.0.1:3128", "http://127.0.0.1:3128"),
        (" http://proxy.internal:4750/ ", "http://proxy.internal:4750"),
        ("http://user:pa%40ss@[::1]:8080", "http://user:pa%40ss@[::1]:8080"),
    ],
)
def test_proxy_from_environment_is_kept_secret(
    monkeypatch: pytest.MonkeyPatch, value: str, kept: str
) -> None:
    monkeypatch.setenv("HOOKPOST_PROXY", value)
    settings = Settings()
    assert settings.proxy is not None
    assert settings.proxy.get_secret_value() == kept
    assert "pa%40ss" not in repr(settings) and "pa%40ss" not in str(settings)


@pytest.mark.parametrize("value", [
    "proxy.internal:3128", "https://proxy.internal:3128", "http://proxy.internal",
    "socks5://proxy.internal:1080", "http://proxy.internal:3128/path", "http://:3128",
    "http://proxy.internal:99999", "http://user:hunter2@proxy.internal",
])
def test_a_proxy_that_is_not_http_host_and_port_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("HOOKPOST_PROXY", value)
    with pytest.raises(pydantic.ValidationError, match="the proxy must be http://") as refused:
        Settings()
    assert "hunter2" not in str(refused.value)
