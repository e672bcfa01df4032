"""What the overview and a subscription's page show of recent attempts: the totals of the
last hour and day, and their charts, from the same rollups and the same report as the
stats API (GET /v1/stats and its siblings)."""

from __future__ import annotations

from typing import NamedTuple

from aiohttp import web

from api.auth import scope
from api.routes import reaches_tenant
from api.state import CLOCK, STORE
from hookpost import stats
from hookpost.store import ApiKey
from ui.charts import Chart, series_chart
from ui.pages import api_roles

OVERALL = api_roles("GET", "/v1/stats")


class Activity(NamedTuple):
    hour: stats.Summary
    day: stats.Summary
    hour_chart: Chart  # per minute
    day_chart: Chart  # per hour


def overview_scope(api_key: ApiKey) -> str | None:
    """The statistics the overview shows a key, as the stats API would answer it: every
    attempt's for an admin, its tenant's for a key that sees the whole tenant; none for a
    key that sees only the subscriptions it made."""
    reach = scope(api_key)
    if reach.tenant_id is None and reach.owner_key_id is None:
        return stats.EVERYTHING if api_key.role in OVERALL else None
    if reach.tenant_id is not None and reaches_tenant(reach, reach.tenant_id):
        return reach.tenant_id
    return None


async def activity(request: web.Request, stats_scope: str) -> Activity:
    """The last hour and day of `stats_scope` (a subscription's id, a tenant's, or
    stats.EVERYTHING)."""
    now = request.config_dict[CLOCK]()
    # The day's rows (per hour) and the hour's (per minute) come in one read.
    rows = await request.config_dict[STORE].attempt_stats(stats_scope, now, "day")
    by_minute = stats.report(rows, now, "hour", "minute")
    by_hour = stats.report(rows, now, "day", "hour")
    return Activity(by_hour.totals["hour"], by_hour.totals["day"], series_chart(by_minute),
                    series_chart(by_hour))
