"""Discovery: every module in `methods/` and `tasks/` registers itself when imported; so do
modules named with `--plugin path/to/module.py` and packages exposing a `bench.methods` entry
point (`[project.entry-points."bench.methods"]` in their pyproject.toml)."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import pkgutil
import sys
from pathlib import Path

from bench.errors import BenchError


@functools.cache
def load_builtins() -> None:
    for package_name in ("tasks", "methods"):
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):  # `_name`: a method's model, loaded on use
                importlib.import_module(f"{package_name}.{module.name}")
    load_entry_points()


def load_entry_points() -> None:
    for entry_point in importlib.metadata.entry_points(group="bench.methods"):
        entry_point.load()


def load_files(paths: tuple[Path, ...] | list[Path]) -> None:
    for path in paths:
        _load_file(Path(path).resolve())


@functools.cache
def _load_file(path: Path) -> None:
    if path.suffix != ".py" or not path.is_file():
        raise BenchError(f"--plugin {path} is invalid: expected an existing Python file (.py)")
    name = f"bench_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
