"""Argument checks shared by the library: errors name the argument and what is allowed."""


def positive_int(name, value):
    """Return ``value`` as an int, or raise ``ValueError`` unless it is an integer >= 1."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def positive_float(name, value):
    """Return ``value`` as a float, or raise ``ValueError`` unless it is > 0."""
    if not float(value) > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)
