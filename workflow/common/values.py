"""Values read from data files (JSON, Parquet) checked the same way in every track."""

from __future__ import annotations

import math
from typing import Any


def is_number(v: Any) -> bool:
    """A finite JSON number: ``true``/``false`` are not (though Python's bool is an int), and
    ``json`` reads ``NaN``, ``Infinity`` and overlong literals as non-finite or huge values."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too long for a float
        return False
