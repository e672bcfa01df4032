"""Settings from the environment: `HOOKPOST_*` variables plus `DATABASE_URL`."""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> timedelta:
    """Parse `250ms`, `5s`, `2m`, `1h`, `30d` or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 250ms, 5s, 2m, 1h, 30d)")
    amount, unit = match.groups()
    return timedelta(seconds=float(amount) * _UNIT_SECONDS[unit or "s"])


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def _default_data_dir() -> Path:
    # As root the embedded server runs as its own OS user and opens every parent folder of
    # its data folder to it, so keep it under /var/lib rather than inside a home folder.
    if os.name == "posix" and os.geteuid() == 0:
        return Path("/var/lib/hookpost")
    return Path(".hookpost")


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    return value


class Settings(BaseSettings):
    """Every setting hookpost reads; the environment variable is HOOKPOST_<NAME>."""

    # Errors name the setting, never echo its value: DATABASE_URL and PROXY may hold passwords.
    model_config = SettingsConfigDict(env_prefix="HOOKPOST_", extra="ignore",
                                      hide_input_in_errors=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "HOOKPOST_DATABASE_URL"),
        description="Postgres URL (libpq form). Unset: start an embedded Postgres in DATA_DIR.",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Folder of the embedded Postgres when DATABASE_URL is unset.",
    )
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port the API listens on.")
    retry_schedule: Annotated[list[timedelta], NoDecode] = Field(
        default_factory=lambda: [parse_duration(d) for d in ("5s", "25s", "2m", "10m", "1h")],
        description="Waits before attempts 2, 3, ...; its length + 1 is the number of attempts.",
    )
    request_timeout: timedelta = Field(
        default=timedelta(seconds=10), description="Total time one attempt may take."
    )
    connect_timeout: timedelta = Field(
        default=timedelta(seconds=5), description="Time to open the connection to a receiver."
    )
    allowed_networks: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=list,
        description="CIDRs that may be targeted although private, loopback or link-local.",
    )
    allow_http: bool = Field(
        default=False, description="Accept http:// endpoint URLs (https only when false)."
    )
    max_payload_bytes: int = Field(
        default=262144, gt=0, description="Largest accepted request body (413 above it)."
    )
    max_in_flight: int = Field(
        default=256, gt=0, description="Attempts one dispatcher sends at the same time."
    )
    max_per_subscription: int = Field(
        default=16, gt=0, description="Attempts in flight to one subscription per dispatcher."
    )
    claim_batch: int = Field(default=100, gt=0, description="Deliveries claimed per query.")
    lease: timedelta = Field(
        default=timedelta(minutes=2),
        description="How long a claimed delivery stays reserved before another may take it.",
    )
    poll_interval: timedelta = Field(
        default=timedelta(seconds=1), description="Longest wait between looks for due work."
    )
    shutdown_grace: timedelta = Field(
        default=timedelta(seconds=15),
        description="On SIGTERM, how long attempts in flight may take to finish.",
    )
    retention: timedelta = Field(
        default=timedelta(days=30), description="How long events and attempts are kept."
    )
    disable_after: timedelta = Field(
        default=timedelta(days=5),
        description="A subscription failing continuously this long is disabled.",
    )
    maintenance_interval: timedelta = Field(
        default=timedelta(minutes=1),
        description="How often retention, auto-disable and partition upkeep run.",
    )
    gauges_interval: timedelta = Field(
        default=timedelta(seconds=15), description="How often the backlog gauges refresh."
    )
    metrics_port: int = Field(
        default=9464, ge=0, le=65535,
        description="Port of /metrics, /health and /ready for `hookpost dispatcher`.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Logs as readable text, or one JSON object per line."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="The least severe log level written."
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="The event loop: uvloop (faster) or the standard asyncio one."
    )
    ui_session_lifetime: timedelta = Field(
        default=timedelta(hours=8),
        description="How long a dashboard sign-in (/ui/login) lasts before it asks again.",
    )
    portal_session_lifetime: timedelta = Field(
        default=timedelta(hours=1),
        description="How long a tenant's portal, opened with a portal link, lasts before it "
                    "needs a new link.",
    )
    public_url: str | None = Field(
        default=None,
        description="The address people reach hookpost at (e.g. https://hooks.example.com), "
                    "for the portal links it hands out. Unset: the address of each request.",
    )
    listen_notify: bool = Field(
        default=True, description="Wake dispatchers with LISTEN/NOTIFY (polling always runs)."
    )
    # Secret: its user info may hold the proxy's password.
    proxy: SecretStr | None = Field(
        default=None,
        description="An HTTP proxy every attempt goes through, http://[user:password@]host:port "
                    "(CONNECT for https receivers). Destinations are still checked first.",
    )

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _schedule_durations(cls, value: Any) -> Any:
        value = _split(value)
        if isinstance(value, list):
            return [_duration(item) for item in value]
        return value

    @field_validator(
        "request_timeout", "connect_timeout", "lease", "poll_interval", "shutdown_grace",
        "retention", "disable_after", "maintenance_interval", "gauges_interval",
        "ui_session_lifetime", "portal_session_lifetime", mode="before",
    )
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return _duration(value)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip().rstrip("/")
        parsed = urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query:
            raise ValueError(f"not an http(s) address such as https://hooks.example.com: {value!r}")
        return url

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value().strip())
        try:
            port = parts.port
        except ValueError:
            port = None
        if (parts.scheme != "http" or not parts.hostname or port is None
                or parts.path not in ("", "/") or parts.query or parts.fragment):
            # Not the value itself: it may hold a password.
            raise ValueError("the proxy must be http://[user:password@]host:port, its port "
                             "given")
        return SecretStr(parts.geturl().removesuffix("/"))

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        value = _split(value)
        if isinstance(value, list):
            return [ipaddress.ip_network(item, strict=False) for item in value]
        return value

    @property
    def max_attempts(self) -> int:
        return len(self.retry_schedule) + 1


def describe_settings() -> str:
    """One line per setting, for `--help`."""
    lines = ["environment (HOOKPOST_<NAME>, plus DATABASE_URL):"]
    for name, field in Settings.model_fields.items():
        env = "DATABASE_URL" if name == "database_url" else f"HOOKPOST_{name.upper()}"
        if field.default_factory is not None:
            default: Any = "(computed)"
            if name == "retry_schedule":
                default = "5s,25s,2m,10m,1h"
            elif name == "allowed_networks":
                default = "(empty)"
        else:
            default = field.default
        if isinstance(default, timedelta):
            default = format_duration(default)
        lines.append(f"  {env:<32} {field.description} [default: {default}]")
    return "\n".join(lines)
