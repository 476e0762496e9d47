"""Shared test fixtures."""

import inspect
import textwrap

import pytest


@pytest.fixture
def plant(monkeypatch):
    """Plant a one-line bug in a scratch copy of a library function, for the duration of a test.

    ``plant(module, "name", old, new)`` compiles the source of ``module.name`` with ``old`` replaced
    by ``new`` (``old`` must occur exactly once) in a copy of the module's namespace, and sets it as
    ``module.name``: the file itself is never touched. Tests use it to show that a check has power,
    i.e. that it fails with a realistic bug in the code it checks.
    """
    def planted(module, name, old, new):
        src = textwrap.dedent(inspect.getsource(getattr(module, name)))
        if src.count(old) != 1:
            raise AssertionError(f"{old!r} occurs {src.count(old)} times in {module.__name__}.{name}, not once")
        namespace = dict(vars(module))
        exec(compile(src.replace(old, new), f"<planted {module.__name__}.{name}>", "exec"), namespace)
        monkeypatch.setattr(module, name, namespace[name])
        return namespace[name]

    return planted
