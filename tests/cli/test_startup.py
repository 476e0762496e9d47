"""The `cepaper` command starts like one: ``--help``, ``--version`` and argument errors load no torch
(nor scipy or pandas), and ``import cepaper`` loads a module only when one of its names is used."""

import subprocess
import sys
from pathlib import Path

import pytest

import cepaper
from cepaper.cli import design as cli_design
from cepaper.cli import train as cli_train
from cepaper.search import any_module
from cepaper.training import distributed

SOURCE = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "scipy", "pandas", "matplotlib", "papermill")


def python(*args):
    """``python ARGS`` with this checkout's cepaper, in a fresh process: the completed process."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=SOURCE,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(SOURCE)},
    )


def test_help_imports_no_torch():
    """``-X importtime`` lists every module the process imported (or tried to)."""
    p = python("-X", "importtime", "-m", "cepaper", "--help")
    assert p.returncode == 0 and "design" in p.stdout and "fit-alpha" in p.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in p.stderr.splitlines()}
    assert "cepaper" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_parsing_any_command_imports_no_torch():
    """Every command's ``--help`` and an argument error of each, in one process: none loads a heavy module."""
    code = f"""
import contextlib, io, sys
from cepaper import cli
commands = ("run", "book", "params", "design", "fit-alpha", "train")
errors = (["nope"], ["design", "--arch", "nope"], ["fit-alpha", "--trials", "1"], ["train", "--arch", "resnext29"],
          ["params", "--config", "32x"], [])
for argv in (["--version"], *([c, "--help"] for c in commands), *errors):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.main(argv)
        except SystemExit as e:
            assert e.code == (0 if "--help" in argv or "--version" in argv else 2), (argv, e.code)
        else:
            raise AssertionError(f"{{argv}} ran")
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    p = python("-c", code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_version():
    p = python("-m", "cepaper", "--version")
    assert p.returncode == 0 and p.stdout.strip() == f"cepaper {cepaper.__version__}"


def test_the_parser_s_choices_are_the_library_s():
    assert cli_train.BACKENDS == distributed.BACKENDS and cli_design.FLOPS == any_module.FLOPS


def test_import_cepaper_loads_names_on_first_use():
    p = python(
        "-c", "import sys, cepaper; a = 'torch' in sys.modules; cepaper.relu_ntk; print(a, 'torch' in sys.modules)"
    )
    assert p.stdout.split() == ["False", "True"], p.stderr
    assert set(cepaper._API) == set(cepaper.__all__) and set(cepaper.__all__) <= set(dir(cepaper))
    assert cepaper.complexity.parse_config("32x4d") == (32, 4)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        cepaper.not_a_name  # noqa: B018
