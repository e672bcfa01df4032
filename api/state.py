"""Typed keys for what the application holds."""

from __future__ import annotations

from aiohttp import web

from api.ingest import IngestBatcher
from hookpost.clock import Clock
from hookpost.settings import Settings
from hookpost.store import Store

STORE = web.AppKey("store", Store)
SETTINGS = web.AppKey("settings", Settings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
INGEST = web.AppKey("ingest", IngestBatcher)
