"""The benchmark: hookpost against the raw-HTTP limit and a Celery sender, side by side."""
