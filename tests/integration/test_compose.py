"""docker-compose.yml: a valid multi-process deployment an operator can use as it is."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compose_command() -> list[str] | None:
    """`docker-compose`, or the `docker compose` plugin, whichever is installed."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker is None:
        return None
    plugin = subprocess.run([docker, "compose", "version"], capture_output=True)
    return [docker, "compose"] if plugin.returncode == 0 else None


def compose(*arguments: str) -> str:
    command = compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    done = subprocess.run([*command, "-f", str(ROOT / "docker-compose.yml"), *arguments],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_compose_file_is_valid_and_runs_postgres_migrate_an_api_and_two_dispatchers(
) -> None:
    assert set(compose("config", "--services").split()) == {
        "postgres", "migrate", "api", "dispatcher"}
    config = compose("config")
    assert "image: postgres:17" in config  # a pinned major version
    assert "replicas: 2" in config
    assert "service_completed_successfully" in config  # hookpost waits for migrate
    assert "service_healthy" in config  # migrate waits for a healthy Postgres
    assert "postgres-data" in config
    assert config.count("/ready") == 2  # the api and the dispatchers report readiness


def test_the_image_runs_the_hookpost_command() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["hookpost"]' in dockerfile
    assert "schema.sql" in dockerfile
