"""The `cepaper` command starts like one: ``--help``, ``--version`` and argument errors load no torch
(nor scipy or pandas), and ``import cepaper`` loads a module only when one of its names is used."""

import ast
import importlib
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


def test_each_command_is_a_module_level_function_of_its_module():
    """Issue 23 item 5: each `add_*` declares the arguments and sets ``func`` to a function at the top level of
    its module (not one nested in ``add_*``), named after the command."""
    from cepaper import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        func = p.get_default("func")
        assert "<locals>" not in func.__qualname__ and func.__module__.startswith("cepaper.cli."), (name, func)
        assert getattr(importlib.import_module(func.__module__), func.__name__) is func, name
        assert func.__name__ == name.replace("-", "_"), (name, func.__name__)


def local_imports(path):
    """``(line, module)`` of every cepaper import inside a function of ``path`` not marked ``# heavy: ...``."""
    lines = path.read_text().splitlines()
    found = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                if isinstance(node, ast.Import):
                    module = node.names[0].name
                if module and module.startswith("cepaper") and "# heavy:" not in lines[node.lineno - 1]:
                    found.append((node.lineno, module))
    return sorted(set(found))


def test_the_cli_imports_at_the_top_except_the_heavy_modules(tmp_path):
    """Issue 23 item 5: the CLI's modules import cepaper at the top; an import inside a function is one that
    would load torch (or another heavy module) for `--help`, marked ``# heavy: <what>``."""
    bad = {p.name: local_imports(p) for p in (SOURCE / "cepaper" / "cli").glob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}
    planted = tmp_path / "planted.py"
    planted.write_text(
        "def f():\n    from cepaper import files  # light\n    from cepaper import data  # heavy: torch\n"
    )
    assert local_imports(planted) == [(2, "cepaper")]
