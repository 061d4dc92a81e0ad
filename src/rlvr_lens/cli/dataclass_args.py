"""Command-line flags generated from a config dataclass's fields (``HfArgumentParser``'s idiom, torch-free).

:func:`add_dataclass_arguments` adds one flag per field: ``--field-name`` from the name, the
type from the annotation, the default and the help text (with ``(default: X)``) from the
field and its ``metadata["help"]``. Booleans become switches: ``--x`` for a field that
defaults to ``False``, ``--no-x`` for one that defaults to ``True``. ``metadata["choices"]``
restricts a value; ``metadata["min"]`` (integers) and ``metadata["low"]`` / ``["high"]`` /
``["low_open"]`` (floats) make argparse reject out-of-range values with a sentence.
:func:`dataclass_from_args` reads the parsed values back into keyword arguments.

Unlike ``transformers.HfArgumentParser`` this imports nothing heavy, so ``--help`` stays fast
(see ``tests/test_cli_fast.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from rlvr_lens.cli.common import float_in, int_at_least

#: Annotation -> argparse value type (fields of other types need a hand-written flag).
_SCALARS = {int: int, float: float, str: str, bool: bool}
_METAVARS = {int: "N", float: "X", str: "NAME"}


def field_types(cls: type) -> dict[str, type]:
    """``field name -> int / float / str / bool`` for the scalar fields of dataclass ``cls``
    (``Optional`` and dataclass-valued fields are left out)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if hints[f.name] in _SCALARS}


def flag(name: str) -> str:
    """``--field-name`` of field ``field_name``."""
    return "--" + name.replace("_", "-")


def _value_type(kind: type, meta: dict[str, Any]):
    if kind is int and "min" in meta:
        return int_at_least(meta["min"])
    if kind is float and ("low" in meta or "high" in meta):
        return float_in(meta.get("low"), meta.get("high"), low_open=meta.get("low_open", False))
    return kind


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    aliases: dict[str, tuple[str, ...]] | None = None,
    exclude: tuple[str, ...] = (),
    defaults: dict[str, tuple[Any, str]] | None = None,
) -> list[str]:
    """Add a flag for every scalar field of dataclass ``cls`` to ``parser``; returns the field names.

    Args:
        aliases: ``field -> extra option strings`` (old flag names that keep working).
        exclude: fields that get no flag (the caller adds its own).
        defaults: ``field -> (command-line default, how the help shows it)`` where the command
            line's default differs from the field's (e.g. ``None``: "the value of another flag").
    """
    aliases, defaults = aliases or {}, defaults or {}
    types = field_types(cls)
    added = []
    for f in dataclasses.fields(cls):
        kind = types.get(f.name)
        if f.name in exclude or kind is None:
            continue
        meta = dict(f.metadata)
        text = meta.get("help", "")
        default, shown = defaults.get(f.name, (f.default, None))
        names = [flag(f.name), *aliases.get(f.name, ())]
        if kind is bool:
            if f.default:  # a switch that turns the setting off
                names = ["--no-" + f.name.replace("_", "-"), *aliases.get(f.name, ())]
                parser.add_argument(*names, dest=f.name, action="store_false", default=True, help=f"do not {text}")
            else:
                parser.add_argument(*names, dest=f.name, action="store_true", default=False, help=text)
        else:
            shown = shown if shown is not None else f"{f.default}"
            parser.add_argument(
                *names,
                dest=f.name,
                type=_value_type(kind, meta),
                default=default,
                choices=meta.get("choices"),
                metavar=None if meta.get("choices") else _METAVARS[kind],
                help=f"{text} (default: {shown})",
            )
        added.append(f.name)
    return added


def dataclass_from_args(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """``{field: parsed value}`` for the fields ``names`` that :func:`add_dataclass_arguments` added."""
    return {name: getattr(args, name) for name in names}
