"""The sender a Python team would write instead: Celery tasks POSTing with requests.

Broker: Redis on 127.0.0.1:6379. Workers: `celery -A bench.celery_sender worker -c 2`.
"""

from __future__ import annotations

import requests
from celery import Celery

app = Celery("bench", broker="redis://127.0.0.1:6379/15")
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=4, broker_pool_limit=4,
                worker_hijack_root_logger=False)
_session = requests.Session()


@app.task(  # type: ignore[untyped-decorator]
    autoretry_for=(requests.RequestException,), retry_backoff=5, max_retries=5
)
def deliver(url: str, body: str, headers: dict[str, str]) -> int:
    response = _session.post(url, data=body.encode(), headers=headers, timeout=10)
    response.raise_for_status()
    return response.status_code
