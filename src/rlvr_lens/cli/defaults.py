"""Defaults of config dataclasses for ``--help``, read without importing the analysis modules.

The analysis modules import torch, transformers and TRL at the top (several seconds), but
``rlvr-lens <command> --help`` only needs the defaults of their config dataclasses to print
them. :func:`dataclass_defaults` reads them from the module's source with :mod:`ast`:
every field whose default is a Python literal (number, string, ``None``, tuple of
literals). ``tests/test_cli_fast.py`` checks that the values equal those of the imported
dataclasses, so a default that stops being a literal is caught there.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any


@cache
def _module_tree(module: str) -> ast.Module:
    """The parsed source of ``module`` (``package.sub.name``), found from the top package's
    directory: ``importlib.util.find_spec`` would import the parent packages, and some of
    their ``__init__`` modules import torch."""
    top, *parts = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"no package {top}")
    for root in spec.submodule_search_locations:
        path = Path(root, *parts[:-1], f"{parts[-1]}.py") if parts else Path(root, "__init__.py")
        if path.is_file():
            return ast.parse(path.read_text(encoding="utf-8"))
    raise ImportError(f"no source for module {module}")


def dataclass_defaults(module: str, class_name: str) -> SimpleNamespace:
    """The literal field defaults of dataclass ``class_name`` in ``module``, as attributes.

    Fields whose default is not a literal (``field(default_factory=...)``, a call) are left
    out, so using one is an ``AttributeError`` that the CLI test catches. Raises
    ``LookupError`` when the class is missing.
    """
    for node in _module_tree(module).body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            values: dict[str, Any] = {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                    if "ClassVar" in ast.unparse(item.annotation):
                        continue
                    try:
                        values[item.target.id] = ast.literal_eval(item.value)
                    except ValueError:
                        continue  # not a literal: see the docstring
            return SimpleNamespace(**values)
    raise LookupError(f"no class {class_name} in {module}")


def module_constant(module: str, name: str) -> Any:
    """The literal value of module-level constant ``name`` in ``module`` (e.g. a tuple of names)."""
    for node in _module_tree(module).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
            return ast.literal_eval(node.value)
    raise LookupError(f"no constant {name} in {module}")
