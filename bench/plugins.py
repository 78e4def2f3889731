"""Discovery: every module in `methods/` and `tasks/` registers itself when imported."""

from __future__ import annotations

import functools
import importlib
import pkgutil


@functools.cache
def load_builtins() -> None:
    for package_name in ("tasks", "methods"):
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package_name}.{module.name}")
