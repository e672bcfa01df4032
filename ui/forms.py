"""Reading the dashboard's forms: fields typed by a person, read as the API reads the same
fields in a JSON body, and what was wrong with them, in words."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from api.errors import ApiError, validation_details

Body = TypeVar("Body", bound=BaseModel)


def event_types_of(text: str) -> list[str]:
    """The event types typed in one field: separated by commas, spaces or new lines."""
    return [part for part in re.split(r"[\s,]+", text) if part]


def instant_of(text: str) -> str:
    """A time from a datetime-local field, which has no zone, read as UTC; anything else
    is handed on as it is, for the model to refuse with its own words."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def as_local_field(moment: datetime) -> str:
    """`moment` as a datetime-local field shows it, in UTC, to the minute."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def problems_of(error: ValidationError | ApiError) -> list[str]:
    """What was wrong with a form, a line each."""
    if isinstance(error, ApiError):
        return [error.message]
    return [f"{'.'.join(detail['loc'])}: {detail['message']}"
            for detail in validation_details(error)]


def as_body(model: type[Body], fields: dict[str, Any]) -> Body:
    """A form's fields read exactly as the API reads the same fields in a JSON body."""
    return model.model_validate_json(json.dumps(fields))
