"""Typed, JSON-serializable analysis results.

Every analysis returns a dataclass that derives from :class:`Result`. A result holds only
plain data (numbers, strings, lists, dicts, nested result dataclasses), so
``result.to_dict()`` is JSON and ``ResultType.from_dict(d)`` rebuilds it. Saving and
loading go through :mod:`rlvr_lens.io`, so a result file is never half-written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from rlvr_lens.io import atomic_write_json

R = TypeVar("R", bound="Result")


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()  # numpy / torch scalars
    return value


def _from_plain(tp: Any, value: Any) -> Any:
    """Rebuild a value of type ``tp`` from its plain JSON form (dataclasses, lists, dicts)."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _from_plain(args[0], value) if len(args) == 1 else value
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {f.name: _from_plain(hints[f.name], value[f.name]) for f in dataclasses.fields(tp) if f.init and f.name in value}
        return tp(**kwargs)
    if origin in (list, tuple):
        (arg, *_) = typing.get_args(tp) or (Any,)
        return [_from_plain(arg, v) for v in value]
    if origin is dict:
        _, arg = typing.get_args(tp) or (Any, Any)
        return {k: _from_plain(arg, v) for k, v in value.items()}
    if tp is float and isinstance(value, int):
        return float(value)
    return value


@dataclasses.dataclass
class Result:
    """Base class of every analysis result. Subclasses are dataclasses of plain data."""

    #: Name of the analysis that produced the result (used as file name and report anchor).
    kind: ClassVar[str] = "result"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **_to_plain(self)}

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        data = {k: v for k, v in data.items() if k != "kind"}
        return _from_plain(cls, data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls: type[R], path: str | os.PathLike) -> R:
        return cls.from_dict(json.loads(Path(path).read_text()))
