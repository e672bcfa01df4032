"""The delivery engine: claim, sign, send, schedule, record."""
