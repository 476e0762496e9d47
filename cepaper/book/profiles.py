"""Sections, profiles and parameters: which notebook a section is, what a profile sets, and the
checked parameters of one execution (:func:`resolve_parameters`).

A notebook's ``parameters`` cell holds its quick-profile defaults, typed (``name: type = value``); a
profile ``profiles/<name>.yaml`` sets, per section, only parameters the cell declares, and ``-p NAME
VALUE`` overrides one (a YAML 1.2 value).
"""

import ast
import re

import yaml

from cepaper.book.results import REPO, _yaml_file, book_sections

NOTEBOOKS = REPO / "notebooks"
PROFILES = REPO / "profiles"


def notebook_path(section):
    """The notebook of a section; the section must be one the book contains."""
    known = book_sections()
    if section not in known:
        raise ValueError(f"section must be one of {', '.join(known)}; got {section!r}")
    paths = sorted(NOTEBOOKS.glob(f"[0-9][0-9]_{section}.py"))
    if len(paths) != 1:
        raise FileNotFoundError(
            f"section {section} needs exactly one notebook notebooks/NN_{section}.py, found {len(paths)}"
        )
    return paths[0]


def profile_names():
    """The profiles: the names of the files ``profiles/<name>.yaml``."""
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


def load_profile(profile):
    """Parameters per section of ``profiles/<profile>.yaml``; ``profile`` must be one of
    :func:`profile_names` (a name, never a path: it names folders under ``_build/`` and the results)."""
    names = profile_names()
    if profile not in names:
        raise ValueError(f"profile must be one of {', '.join(names)}; got {profile!r}")
    path = PROFILES / f"{profile}.yaml"
    loaded = _yaml_file(path) or {}
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{rel} must map sections to their parameters (section: {{name: value}}), got {type(loaded).__name__}"
        )
    for section, params in loaded.items():
        if params is None:
            loaded[section] = {}
        elif not isinstance(params, dict):
            raise ValueError(f"{rel}: section {section} must map parameter names to values, got {params!r}")
    return loaded


def _parameter_cell(path):
    import jupytext

    nb = jupytext.read(path)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path.name} must have exactly one cell tagged 'parameters', found {len(cells)}")
    return ast.parse(cells[0].source).body


def notebook_parameters(path):
    """Defaults of the ``parameters`` cell of a py:percent notebook, as ``{name: value}``."""
    return {
        node.target.id if isinstance(node, ast.AnnAssign) else t.id: ast.literal_eval(node.value)
        for node in _parameter_cell(path)
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }


def notebook_types(path):
    """The annotated types of the ``parameters`` cell (``name: float = None``), as ``{name: type}``."""
    builtin = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "dict": dict}
    return {
        node.target.id: builtin[node.annotation.id]
        for node in _parameter_cell(path)
        if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, ast.Name) and node.annotation.id in builtin
    }


def _type_ok(kind, value):
    if kind is None or value is None:
        return True
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _check_list(section, name, value, default):
    """Elements of a list parameter have the type of the default's elements (when it has any)."""
    kinds = {type(v) for v in default if v is not None} if isinstance(default, list) else set()
    if len(kinds) != 1 or not isinstance(value, list):
        return
    kind = kinds.pop()
    for i, v in enumerate(value):
        if not _type_ok(kind, v):
            raise ValueError(
                f"parameter {name!r} of section {section} must be a list of "
                f"{_PLURALS.get(kind, kind.__name__)}; element {i} is {v!r}"
            )


def resolve_parameters(section, profile, overrides=()):
    """The parameters papermill passes: notebook defaults < profile < overrides, all checked."""
    path = notebook_path(section)
    defaults, types = notebook_parameters(path), notebook_types(path)
    params = {**load_profile(profile).get(section, {}), **dict(overrides)}
    for name, value in params.items():
        if name == "profile":
            raise ValueError(
                f"profile is not a parameter of section {section}: choose it with --profile "
                f"({', '.join(profile_names())})"
            )
        if name not in defaults:
            raise ValueError(
                f"unknown parameter {name!r} for section {section}; "
                f"allowed: {', '.join(sorted(set(defaults) - {'profile'}))}"
            )
        kind = types.get(name, None if defaults[name] is None else type(defaults[name]))
        if not _type_ok(kind, value):
            raise ValueError(
                f"parameter {name!r} of section {section} must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}"
            )
        _check_list(section, name, value, defaults[name])
    return {**defaults, **params, "profile": profile}


class _Yaml12Loader(yaml.SafeLoader):
    """YAML as 1.2 reads numbers: ``1e-2`` and ``1E3`` are floats (1.1 reads them as strings)."""


def parse_overrides(pairs):
    """``[(NAME, "VALUE"), ...]`` from the command line, values parsed as YAML 1.2 would."""
    out = []
    for name, value in pairs:
        try:
            out.append((name, yaml.load(value, Loader=_Yaml12Loader)))
        except yaml.YAMLError as e:
            raise ValueError(
                f"-p {name}: {value!r} is not a YAML value ({str(e).splitlines()[0]}); "
                "quote strings, write lists as [1, 2]"
            ) from None
    return out


_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings", list: "lists"}

_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)
