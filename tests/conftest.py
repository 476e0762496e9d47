"""Shared test fixtures, and the hypothesis settings of the property-based tests."""

import inspect
import os
import textwrap

import pytest
from hypothesis import settings

from cepaper.ntk import intra_op_threads

# Property tests stay within seconds (few examples, no per-example deadline on a busy CPU); in CI
# (CI=true) they draw the same examples every run and keep no example database.
settings.register_profile("cepaper", max_examples=50, deadline=None)
settings.register_profile("ci", parent=settings.get_profile("cepaper"), derandomize=True, database=None)
settings.load_profile("ci" if os.environ.get("CI") else "cepaper")


@pytest.fixture
def plant(monkeypatch):
    """Plant a one-line bug in a scratch copy of a library function, for the duration of a test.

    ``plant(module, "name", old, new)`` compiles the source of ``module.name`` with ``old`` replaced
    by ``new`` (``old`` must occur exactly once) in the module's namespace, so that ``module.name`` is
    the planted copy until the test ends (other monkeypatches of the module still apply to it); the
    file itself is never touched. Tests use it to show that a check has power, i.e. that it fails
    with a realistic bug in the code it checks.
    """
    def planted(module, name, old, new):
        if any("__mutmut_" in key for key in vars(module)):      # mutmut's copy wraps every function
            pytest.skip("planting a bug needs the plain source; mutation testing plants its own")
        src = textwrap.dedent(inspect.getsource(getattr(module, name)))
        if src.count(old) != 1:
            raise AssertionError(f"{old!r} occurs {src.count(old)} times in {module.__name__}.{name}, not once")
        monkeypatch.setattr(module, name, getattr(module, name))        # restored when the test ends
        exec(compile(src.replace(old, new), f"<planted {module.__name__}.{name}>", "exec"), vars(module))
        return getattr(module, name)

    return planted


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test (tiny models: threads only add overhead on a busy CPU)."""
    with intra_op_threads(1):
        yield
