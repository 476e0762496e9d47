"""A package whose public names are read, on first use, from the submodule that defines each (PEP 562)."""

import importlib
import sys


def namespace(package, homes):
    """``(__getattr__, __dir__, __all__)`` for the package named ``package``: ``homes`` maps each of its
    submodules to the public names it defines (one string, space-separated); a name's submodule is
    imported when the name is first used, and the name is kept in the package from then on."""
    api = {name: module for module, names in homes.items() for name in names.split()}

    def __getattr__(name):
        if name not in api:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{api[name]}"), name)
        setattr(sys.modules[package], name, value)  # later uses skip this function
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(api))

    return __getattr__, __dir__, sorted(api)
