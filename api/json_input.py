"""Reading JSON a client sent: standard JSON only (finite numbers, no NaN or Infinity),
nested at most MAX_DEPTH levels, so no input can make the parser recurse too deep."""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

# Far deeper than any real event; Python's parser recurses once per level and gives up
# near 1000, pydantic's at 200.
MAX_DEPTH = 64

# A string, or its unterminated rest; possessive so that every match is linear.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_STEP = [1 if byte in b"[{" else -1 for byte in range(256)]


def nesting_depth(raw: bytes) -> int:
    """How deep the arrays and objects of `raw` nest (brackets in strings do not count).

    Counts in linear time without parsing, so any input, valid or not, can be measured.
    """
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets), initial=0))


def loads(raw: bytes) -> Any:
    """`raw` parsed as JSON; ValueError if it is not standard JSON or nests too deep."""
    # Fewer openings than the limit cannot nest past it: most bodies skip the count.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nesting_depth(raw) > MAX_DEPTH:
        raise ValueError(f"arrays and objects nest deeper than {MAX_DEPTH} levels")
    # What json.loads does with bytes, with one decoder made once instead of one per call.
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; a receiver could not parse a payload holding them.
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"{text} is too large for a JSON number")
    return number


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
