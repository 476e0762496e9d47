"""Argument checks shared by the library: errors name the argument and what is allowed."""

import math
import numbers


def positive_int(name, value):
    """Return ``value`` as an int, or raise ``ValueError`` unless it is an integer >= 1."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or int(value) != value
        or value < 1
    ):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def nonneg_int(name, value):
    """Return ``value`` as an int, or raise ``ValueError`` unless it is an integer >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or int(value) != value
        or value < 0
    ):
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def positive_float(name, value):
    """Return ``value`` as a float, or raise ``ValueError`` unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def choice(name, value, allowed):
    """Return ``value``, or raise ``ValueError`` unless it is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
    return value


def choices(name, values, allowed):
    """Return ``values`` as a list, or raise ``ValueError`` unless it is a non-empty list of items of ``allowed``."""
    items = list(values)
    if not items or any(v not in allowed for v in items):
        raise ValueError(f"{name} must be a non-empty list among {', '.join(map(str, allowed))}, got {values!r}")
    return items
