"""What every ``cepaper`` subcommand shares: the usage error, strict JSON output, argparse types
whose errors name the argument and what is allowed, and warnings in the command's terms."""

import argparse
import contextlib
import contextvars
import json
import math
import sys

from cepaper import complexity
from cepaper.book import results


class UsageError(ValueError):
    """Bad command-line input: printed as ``cepaper: error: ...`` with exit status 2."""


def plain(x, where="result"):
    """``x`` as plain JSON values: numpy scalars and arrays converted, NaN (an undefined value, e.g.
    the standard error of a single run) as ``None``; an infinity is a ``ValueError`` naming the field."""
    if isinstance(x, dict):
        return {str(k): plain(v, f"{where}.{k}") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(x)]
    if hasattr(x, "tolist"):  # numpy arrays and scalars
        return plain(x.tolist(), where)
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, float) and math.isinf(x):
        raise ValueError(f"{where} is {x}: the computation overflowed; the inputs are outside what it can represent")
    return x


#: The stdout of the running command while its own stdout is sent to stderr (a ``--module`` factory's
#: prints): where :func:`emit` writes; ``None``: ``sys.stdout``.
STDOUT = contextvars.ContextVar("STDOUT", default=None)


def emit(args, payload, text):
    """Print ``payload`` as JSON with ``--json`` (strict JSON: no NaN or Infinity, see :func:`plain`),
    else the human-readable ``text``."""
    out = STDOUT.get() or sys.stdout  # the command's stdout, where a factory's prints are not
    print(json.dumps(plain(payload), indent=1, allow_nan=False) if getattr(args, "json", False) else text, file=out)


def cli_type(convert):
    """An argparse ``type`` from a converter that raises ``ValueError``: argparse then exits with
    status 2 and ``argument --NAME: <message>``."""

    def parse(text):
        try:
            return convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def positive_int_arg(text):
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def nonneg_int_arg(text):
    if not text.strip().isdigit():
        raise ValueError(f"must be an integer >= 0, got {text!r}")
    return int(text)


def positive_float_arg(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a number > 0, got {text!r}")
    return value


def trials_arg(text):
    if not text.strip().isdigit() or int(text) < 2:
        raise ValueError(f"must be an integer >= 2 (a variance needs two draws), got {text!r}")
    return int(text)


NO_GPU = "pass --device cpu, or run on a machine with a GPU"


def check_device(device):
    """``--device``, checked as every command checks it (``results.check_device``: torch can use it here),
    the error naming the flag."""
    try:
        return results.check_device(device, fix=NO_GPU)
    except ValueError as e:
        raise UsageError(f"--{e}" if str(e).startswith("device") else str(e)) from None


@contextlib.contextmanager
def factory_terms(args):
    """A ``--module`` factory's forward that raised on its example input (``factories.ForwardError``), in the
    command's terms: the ``--input-shape`` (or ``--network-input-shape``) and ``--device`` that were tried."""
    try:
        yield
    except ValueError as e:
        factories = sys.modules.get("cepaper.search.factories")  # loaded when e is its ForwardError
        if factories is None or not isinstance(e, factories.ForwardError):
            raise
        network = getattr(args, "network_input_shape", None)
        flag = "--network-input-shape" if network is not None and tuple(network) == e.input_shape else "--input-shape"
        shape = ",".join(map(str, e.input_shape))
        raise UsageError(
            f"{flag} {shape} with --device {args.device}: the module's forward on a batch of that shape raised "
            f"{e.raised}; give {flag} as one example of what the factory's module takes (channels first, "
            "without the batch), and a --device it runs on"
        ) from None


def config_arg(text):
    return complexity.format_config(*complexity.parse_config(text))


def shape_arg(text):
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts or not all(t.isdigit() and int(t) >= 1 for t in parts):
        raise ValueError(f"must be comma-separated integers >= 1 such as 256,32,32, got {text!r}")
    return tuple(int(t) for t in parts)


# modules of the optional dependencies -> the extra that installs them (pyproject.toml)
EXTRAS = {
    **dict.fromkeys(
        ("papermill", "jupytext", "nbformat", "jupyter_book", "jupyter_client", "IPython", "ipykernel", "matplotlib"),
        "book",
    ),
    "mathjax": "book",
    "submitit": "dist",
}


def warning_text(message):
    """A warning in the command's terms: a heavy tail of Algorithm 1's draws names the flags that fix it;
    any other warning is its message alone."""
    fit = sys.modules.get("cepaper.alpha.fit")  # loaded when the warning is its HeavyTailWarning
    if fit is not None and isinstance(message, fit.HeavyTailWarning) and message.entry is not None:
        join = lambda xs: ", ".join(str(x) for x in xs)
        return (
            f"the draws of the {message.entry} entry at widths {join(message.widths)} have a heavy tail (Pareto "
            f"k-hat of K^2 {join(message.khat)} > {fit.KHAT_MAX}): {join(sorted(set(message.trials)))} draws do "
            "not estimate E[K^2] there reliably, so alpha's interval is too narrow; pass more --trials, or "
            "--widths without these widths"
        )
    return str(message)


def show_warning(command, message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` of the command: ``cepaper COMMAND: warning: ...``, without the file and
    source line of the code that warned."""
    print(f"cepaper {command}: warning: {warning_text(message)}", file=file or sys.stderr, flush=True)
