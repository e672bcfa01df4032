"""The `hookpost` command: serve, api, dispatcher, migrate, keys create|list|revoke."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import asyncpg
import uvloop
from aiohttp import web
from pydantic import ValidationError

from api.app import create_app
from api.auth import (
    KEY_CACHE_SECONDS,
    LAST_ADMIN_KEY,
    AdminKeyBound,
    Role,
    create_key,
    tenant_to_bind,
)
from api.probes import create_probe_app
from dispatcher.maintenance import Maintenance
from dispatcher.worker import Dispatcher
from hookpost import logs
from hookpost.clock import utcnow
from hookpost.database import (
    EmbeddedServer,
    close_pool,
    create_pool,
    migrate,
    start_embedded,
)
from hookpost.settings import Settings, describe_settings
from hookpost.store import ApiKey, Store, TenantGone

log = logging.getLogger("hookpost")
_API_SHUTDOWN_SECONDS = 3.0


def _parser() -> argparse.ArgumentParser:
    epilog = describe_settings()
    parser = argparse.ArgumentParser(
        prog="hookpost", description="Outbound webhook delivery.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in [
        ("serve", "run the API and the dispatcher in one process"),
        ("api", "run the REST API only"),
        ("dispatcher", "run the dispatcher only"),
        ("migrate", "apply schema.sql (safe to repeat)"),
    ]:
        commands.add_parser(name, help=text, description=text, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create an API key and print it once")
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument("--name", required=True)
    create.add_argument("--tenant", help="bind the key to this tenant (id or uid): it then "
                                         "reaches that tenant's rows alone")
    key_commands.add_parser("list", help="list API keys, newest first (never the keys)")
    revoke = key_commands.add_parser(
        "revoke", help="revoke an API key; every API process refuses it within "
                       f"{KEY_CACHE_SECONDS:g} s")
    revoke.add_argument("id", help="the key's id (key_...)")
    return parser


class Database:
    """The configured Postgres, or an embedded one started for this process."""

    def __init__(self, settings: Settings) -> None:
        self.embedded: EmbeddedServer | None = None
        if settings.database_url is None:
            self.embedded = start_embedded(settings.data_dir)
            self.url = self.embedded.get_uri()
        else:
            self.url = settings.database_url

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.cleanup()


@contextlib.asynccontextmanager
async def _store(database: Database, *, pool_size: int = 10,
                 dispatching: bool = False) -> AsyncIterator[Store]:
    pool = await create_pool(database.url, max_size=pool_size)
    dispatch_pool = None
    try:
        await migrate(pool)
        if dispatching:  # one connection claims while another records
            dispatch_pool = await create_pool(database.url, min_size=2, max_size=2,
                                              generic_plans=True)
        yield Store(pool, dispatch_pool, url=database.url)
    finally:
        pools = [pool] if dispatch_pool is None else [pool, dispatch_pool]
        await asyncio.gather(*(close_pool(each) for each in pools))


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


async def _print_admin_key_once(store: Store) -> None:
    if await store.count_admin_keys() == 0:
        key, _ = await create_key(store, Role.ADMIN, "first admin")
        print(f"admin API key (shown once, keep it): {key}", flush=True)
    else:
        print("admin API key: shown on first start; make another with "
              "'hookpost keys create --role admin --name NAME'", flush=True)


async def _run(settings: Settings, database: Database, *, api: bool, dispatcher: bool) -> None:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with _store(database, pool_size=max(10, settings.max_in_flight // 8),
                      dispatching=dispatcher) as store:
        engine = Dispatcher(store, settings) if dispatcher else None
        maintenance = Maintenance(store, settings) if dispatcher else None
        if api:
            app = create_app(settings, store, dispatcher=engine)
            port = settings.port
        else:  # a dispatcher alone still answers /health, /ready and /metrics
            app = create_probe_app(store, engine)
            port = settings.metrics_port
        # Requests still open at a stop get a few seconds, not aiohttp's default minute.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_API_SHUTDOWN_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, port)
        await site.start()
        _settle_garbage_collector()
        bound_port = runner.addresses[0][1]  # the one the system chose, for port 0
        address = f"http://{settings.host}:{bound_port}"
        if api:
            if dispatcher:
                await _print_admin_key_once(store)
            print(f"hookpost listening on {address}", flush=True)
            print(f"hookpost dashboard on {address}/ui/", flush=True)
        else:
            print(f"hookpost dispatcher metrics on {address}/metrics", flush=True)
        worker: asyncio.Task[None] | None = None
        if engine is not None and maintenance is not None:
            worker = asyncio.create_task(engine.run(), name="dispatcher")
            maintenance.start()
            log.info("dispatcher %s started", engine.name)
        stopped = asyncio.create_task(stop.wait())
        waiting: set[asyncio.Task[Any]] = {stopped} | ({worker} if worker else set())
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if worker is not None and worker.done():
            log.error("the dispatcher stopped by itself; exiting so a supervisor restarts it")
        log.info("stopping")
        if engine is not None and maintenance is not None:
            engine.stop()
            maintenance.stop()
        stopped.cancel()
        # The API stops taking requests while the dispatcher finishes what it sent.
        cleanup = asyncio.create_task(runner.cleanup())
        if worker is not None:
            await asyncio.gather(worker, return_exceptions=True)
        await cleanup
        if worker is not None and not worker.cancelled() and worker.exception() is not None:
            raise DispatcherFailed from worker.exception()
    log.info("stopped")


class DispatcherFailed(Exception):
    """The dispatcher could not go on; the process exits non-zero."""


class CommandRefused(Exception):
    """A command that cannot do what it was asked; its message goes to stderr, exit 1."""


async def _migrate(database: Database) -> None:
    async with _store(database):
        print("schema is up to date", flush=True)


async def _create_key(database: Database, role: Role, name: str, tenant: str | None) -> None:
    async with _store(database) as store:
        try:
            tenant_id = await tenant_to_bind(store, role, tenant)
        except AdminKeyBound as refused:
            raise CommandRefused(str(refused)) from None
        except TenantGone:
            raise CommandRefused(f"no tenant has the id or uid {tenant!r}") from None
        key, _ = await create_key(store, role, name, tenant_id)
        print(key, flush=True)


_KEY_PAGE = 250


async def _list_keys(database: Database) -> None:
    async with _store(database) as store:
        keys: list[ApiKey] = []
        while True:
            after = (keys[-1].created_at, keys[-1].id) if keys else None
            page = await store.list_api_keys(_KEY_PAGE, after)
            keys += page
            if len(page) < _KEY_PAGE:
                break
    print(key_table(keys), flush=True)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# A name holding a line break or a tab would break the table's lines and columns.
_PRINTABLE = {code: " " for code in [*range(32), 127]}


def key_table(keys: list[ApiKey]) -> str:
    """The keys as a table of aligned columns, one key a line; times in UTC."""
    rows = [("ID", "ROLE", "NAME", "TENANT", "CREATED (UTC)", "REVOKED (UTC)")]
    rows += [(key.id, key.role, key.name.translate(_PRINTABLE), key.tenant_id or "-",
              _when(key.created_at), _when(key.revoked_at)) for key in keys]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in rows]
    return "\n".join(line.rstrip() for line in lines)


async def _revoke_key(database: Database, id: str) -> None:
    async with _store(database) as store:
        revocation = await store.revoke_api_key(id, utcnow())
    if revocation == "not_found":
        raise CommandRefused(f"no valid API key has the id {id!r}")
    if revocation == "last_admin":
        raise CommandRefused(f"{id}: {LAST_ADMIN_KEY}")
    print(f"revoked {id}; every API process refuses it within {KEY_CACHE_SECONDS:g} s",
          flush=True)


def _settle_garbage_collector() -> None:
    """What was made while starting (modules, settings, pools, the app) lives as long as
    the process: frozen, the collector stops walking it again and again. And a collection
    of the youngest objects every 20,000 allocations, not Python's 700: a request or a send
    batch makes thousands of short-lived objects, and the collections they set off were
    what made a slow answer slow (a stats series of 1,440 points: p99 56 ms against 29 ms
    frozen, 17 ms with both, in-process on this code)."""
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop]:
    if settings.event_loop == "uvloop":
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"hookpost: bad settings:\n{error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)
    database = Database(settings)
    key_commands: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "create": lambda: _create_key(database, Role(arguments.role), arguments.name,
                                      arguments.tenant),
        "list": lambda: _list_keys(database),
        "revoke": lambda: _revoke_key(database, arguments.id),
    }
    commands: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "serve": lambda: _run(settings, database, api=True, dispatcher=True),
        "api": lambda: _run(settings, database, api=True, dispatcher=False),
        "dispatcher": lambda: _run(settings, database, api=False, dispatcher=True),
        "migrate": lambda: _migrate(database),
        "keys": lambda: key_commands[arguments.keys_command](),
    }
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
            runner.run(commands[arguments.command]())
    except CommandRefused as refused:
        print(f"hookpost: {refused}", file=sys.stderr)
        return 1
    except DispatcherFailed as failed:
        log.error("dispatcher failed", exc_info=failed.__cause__)
        return 1
    except (OSError, asyncpg.PostgresError) as error:
        log.error("cannot reach the database: %s", error)
        return 1
    finally:
        database.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
