"""Typed keys for what the application holds."""

from __future__ import annotations

from aiohttp import web

from hookpost.clock import Clock
from hookpost.settings import Settings
from hookpost.store import Store

STORE = web.AppKey("store", Store)
SETTINGS = web.AppKey("settings", Settings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
