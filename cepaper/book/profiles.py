"""The plan of a run (the first step of `cepaper run`: plan → execute → publish → render): which notebook a
section is, what a profile sets, the checked parameters of one execution (:func:`resolve_parameters`), and
the profile it publishes under (:func:`label`, :func:`plan`).

A notebook's ``parameters`` cell holds its quick-profile defaults, typed (``name: type = value``); a
profile ``profiles/<name>.yaml`` sets, per section, only parameters the cell declares, and ``-p NAME
VALUE`` overrides one (a YAML 1.2 value).
"""

import ast
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from cepaper.book.results import NO_BOOK, REPO, book_sections, in_repo, section_dir, yaml_file

SUMMARIES = ("claims",)  # sections that read every other section's results: executed last
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
    if not PROFILES.is_dir():
        raise FileNotFoundError(f"the profiles are files profiles/<name>.yaml, and there is no {PROFILES}; {NO_BOOK}")
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


def load_profile(profile):
    """Parameters per section of ``profiles/<profile>.yaml``; ``profile`` must be one of
    :func:`profile_names` (a name, never a path: it names folders under ``_build/`` and the results)."""
    names = profile_names()
    if profile not in names:
        raise ValueError(f"profile must be one of {', '.join(names)}; got {profile!r}")
    path = PROFILES / f"{profile}.yaml"
    loaded = yaml_file(path) or {}
    rel = in_repo(path)
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{rel} must map sections to their parameters (section: {{name: value}}), got {type(loaded).__name__}"
        )
    for section, params in loaded.items():
        if params is None:
            loaded[section] = {}
        elif not isinstance(params, dict):
            raise ValueError(f"{rel}: section {section} must map parameter names to values, got {_shown(params)}")
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


_BUILTIN = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "dict": dict}


def _annotation(node):
    """``(type, element type)`` of an annotation ``int``, ``list`` or ``list[int]``; ``None`` for another."""
    if isinstance(node, ast.Name) and node.id in _BUILTIN:
        return _BUILTIN[node.id], None
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == "list"
        and isinstance(node.slice, ast.Name)
        and node.slice.id in _BUILTIN
    ):
        return list, _BUILTIN[node.slice.id]
    return None


def _annotations(path):
    return {
        node.target.id: kinds
        for node in _parameter_cell(path)
        if isinstance(node, ast.AnnAssign) and (kinds := _annotation(node.annotation)) is not None
    }


def notebook_types(path):
    """The annotated types of the ``parameters`` cell (``name: float = None``), as ``{name: type}``
    (``list[int]`` is ``list``)."""
    return {name: kind for name, (kind, _) in _annotations(path).items()}


def notebook_element_types(path):
    """The element types the ``parameters`` cell declares for its lists (``widths: list[int] = []``),
    as ``{name: type}``: what the elements of a list whose default is empty are checked against."""
    return {name: element for name, (_, element) in _annotations(path).items() if element is not None}


def _type_ok(kind, value):
    if kind is None or value is None:
        return True
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _check_list(section, name, value, default, element=None):
    """Elements of a list parameter have its declared element type ``element`` (``list[int]``), else
    the type of the default's elements (when it has any)."""
    kinds = {type(v) for v in default if v is not None} if isinstance(default, list) else set()
    kinds = {element} if element is not None else kinds
    if len(kinds) != 1 or not isinstance(value, list):
        return
    kind = kinds.pop()
    for i, v in enumerate(value):
        if not _type_ok(kind, v):
            raise ValueError(
                f"parameter {name!r} of section {section} must be a list of "
                f"{_PLURALS.get(kind, kind.__name__)}; element {i} is {_shown(v)}"
            )


#: The most elements (list items, mapping keys and values, scalars) and the most characters (of the
#: strings in it) one parameter value may hold: enough for any grid of the paper, far below what
#: would exhaust memory when papermill writes the value into the notebook.
MAX_ELEMENTS = 100_000
MAX_CHARS = 1_000_000


def _shown(value):
    """``repr(value)`` cut short (a message names a value, it does not print a large one whole)."""
    import reprlib

    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlist, short.maxdict, short.maxlevel = 80, 80, 10, 10, 3
    return short.repr(value)


def _check_size(what, value):
    """``value`` holds at most :data:`MAX_ELEMENTS` elements and :data:`MAX_CHARS` characters of
    strings; else a ValueError naming ``what`` (the parameter) and the limit. Walked without
    recursion, stopping at the limit (a value of shared references is never expanded in full)."""
    elements, chars, todo = 0, 0, [value]
    while todo:
        v = todo.pop()
        elements += 1
        if isinstance(v, dict):
            todo += [*v.keys(), *v.values()]
        elif isinstance(v, (list, tuple)):
            todo += v
        elif isinstance(v, (str, bytes)):
            chars += len(v)
        if elements > MAX_ELEMENTS:
            raise ValueError(f"{what} holds more than {MAX_ELEMENTS:,} elements, the most a parameter value may hold")
        if chars > MAX_CHARS:
            raise ValueError(f"{what} holds more than {MAX_CHARS:,} characters, the most a parameter value may hold")


def resolve_parameters(section, profile, overrides=()):
    """The parameters papermill passes: notebook defaults < profile < overrides, all checked."""
    path = notebook_path(section)
    defaults, types, elements = notebook_parameters(path), notebook_types(path), notebook_element_types(path)
    params = {**load_profile(profile).get(section, {}), **dict(overrides)}
    for name, value in params.items():
        if name == "profile":
            raise ValueError(
                f"profile is not a parameter of section {section}: choose it with --profile "
                f"({', '.join(profile_names())})"
            )
        if name == "results_dir":
            raise ValueError(
                f"results_dir of section {section} is chosen by `cepaper run` (it stages, then publishes under "
                "results/<profile>/); choose the folder with CEPAPER_RESULTS, or publish apart with -p (default) "
                "or over the profile's results with --replace"
            )
        if name not in defaults:
            raise ValueError(
                f"unknown parameter {name!r} for section {section}; "
                f"allowed: {', '.join(sorted(set(defaults) - {'profile'}))}"
            )
        kind = types.get(name, None if defaults[name] is None else type(defaults[name]))
        _check_size(f"parameter {name!r} of section {section}", value)  # before anything shows or copies it
        if not _type_ok(kind, value):
            raise ValueError(
                f"parameter {name!r} of section {section} must be {_TYPE_NAMES.get(kind, kind.__name__)}, "
                f"got {_shown(value)}"
            )
        _check_list(section, name, value, defaults[name], elements.get(name))
    return {**defaults, **params, "profile": profile}


class _Yaml12Loader(yaml.SafeLoader):
    """YAML as 1.2 reads numbers: ``1e-2`` and ``1E3`` are floats (1.1 reads them as strings)."""


def parse_overrides(pairs):
    """``[(NAME, "VALUE"), ...]`` from the command line, values parsed as YAML 1.2 would.

    A value may not use anchors or aliases (``&a``, ``*a``: a few hundred bytes of them expand to
    gigabytes), and holds at most :data:`MAX_CHARS` characters and :data:`MAX_ELEMENTS` elements."""
    out = []
    for name, value in pairs:
        if len(value) > MAX_CHARS:
            raise ValueError(
                f"-p {name}: the value is {len(value):,} characters long, more than the {MAX_CHARS:,} "
                "a parameter value may hold"
            )
        try:
            for event in yaml.parse(value, Loader=_Yaml12Loader):
                if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                    raise ValueError(
                        f"-p {name}: YAML anchors and aliases (&{event.anchor}, *{event.anchor}) are not allowed "
                        "in a parameter value; write the value out in full"
                    )
            parsed = yaml.load(value, Loader=_Yaml12Loader)
        except yaml.YAMLError as e:
            raise ValueError(
                f"-p {name}: {_shown(value)} is not a YAML value ({str(e).splitlines()[0]}); "
                "quote strings, write lists as [1, 2]"
            ) from None
        except RecursionError:
            raise ValueError(f"-p {name}: the value is nested too deeply; write it flatter") from None
        _check_size(f"-p {name}", parsed)
        out.append((name, parsed))
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


#: Overrides that say how a section runs, not what it computes: they keep the profile's results folder.
HOW_TO_RUN = ("executor", "gpus_per_run", "wait", "rerun_stale", "threads", "device", "data_root")


def label(profile, overrides=()):
    """The profile a run with ``overrides`` publishes under: ``profile`` itself when they only say how
    it runs (:data:`HOW_TO_RUN`), else ``<profile>+<name>=<value>,...`` (a long or structured value
    as its short hash), so a run with other parameters never overwrites the profile's own results."""
    parts = []
    for name, value in overrides:
        if name in HOW_TO_RUN:
            continue
        text = json.dumps(value, sort_keys=True)
        short = text.strip('"')
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,24}", short):
            short = hashlib.sha256(text.encode()).hexdigest()[:8]
        parts.append(f"{name}={short}")
    return profile if not parts else f"{profile}+{','.join(parts)}"


@dataclass(frozen=True)
class Step:
    """One section of a run, planned: its notebook, its checked parameters (``params["profile"]`` the
    profile it publishes under) and ``dest``, where its results are published
    (``results/<profile>/<section>``). Every later step (execute, publish, render) reads these
    instead of finding them again."""

    section: str
    params: dict
    notebook: Path
    dest: Path

    @property
    def profile(self):
        return self.params["profile"]


def plan(sections, profile="quick", overrides=(), apart=False):
    """The :class:`Step` of each of ``sections`` (all of the book when empty) in the order they execute,
    every parameter checked (a ValueError before anything executes). With ``apart`` and overrides of what
    a section computes, a step's profile is their :func:`label`: the run publishes apart from the
    profile's own results (`cepaper run -p`, unless ``--replace``)."""
    load_profile(profile)
    sections = list(sections) or book_sections()
    # the claims page summarizes the other sections' results: it executes after them
    sections = [s for s in sections if s not in SUMMARIES] + [s for s in sections if s in SUMMARIES]
    name = label(profile, overrides) if apart else profile
    return [
        Step(
            section,
            {**resolve_parameters(section, profile, overrides), "profile": name},
            notebook_path(section),
            section_dir(section, name),
        )
        for section in sections
    ]
