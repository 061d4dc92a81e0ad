"""``--config FILE``: a command's options in a TOML file, flags overriding it, the resolved run saved.

Every flag of a command that offers ``--config`` has a key: the flag's long name without
``--`` and with ``_`` for ``-`` (``--batch-size`` -> ``batch_size``, ``--no-progress`` ->
``no_progress``). Values have the flag's type; an option that takes a comma-separated list
(``analyses``, ``fractions``, ``token_pairs``) also accepts a TOML array. ``--model`` is
``model = ["base=PATH", "rlvr=PATH"]`` or a table ``[model]`` of ``NAME = "PATH"`` in
order, base first. Example::

    model = ["base=ckpt/base", "rlvr=ckpt/rlvr"]
    data = "data/math500.jsonl"
    out = "runs/audit-1"
    analyses = ["perplexity", "contamination"]
    batch_size = 16

A flag given on the command line overrides the file's value (``--model`` given on the
command line replaces the file's list). The resolved options are saved as
``<out>/config.toml`` with absolute paths, so ``rlvr-lens audit --config <out>/config.toml``
repeats the run (its finished steps come from the cache). Relative paths in a config file
are read relative to the current directory, like those of flags.

A key that is no flag, a value of the wrong type, or a file that is not TOML is one
sentence (:class:`~rlvr_lens.errors.UserError`, exit status 2).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from rlvr_lens.errors import UserError

#: Keys whose values are local paths (made absolute in the saved config).
PATH_KEYS = ("data", "out")
#: Options never put in a config file.
_SKIPPED_DESTS = ("help", "config", "version")


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        metavar="TOML",
        help="read options from a TOML file (keys = flag names with _, e.g. batch_size); flags override it; "
        "the resolved options are saved as OUT/config.toml",
    )


def _key(action: argparse.Action) -> str:
    long = [o for o in action.option_strings if o.startswith("--")]
    return long[0][2:].replace("-", "_")


def config_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Key -> argparse action of every option of ``parser`` that a config file may set."""
    return {
        _key(a): a
        for a in parser._actions  # argparse has no public list of a parser's options
        if a.option_strings and a.dest not in _SKIPPED_DESTS and not isinstance(a, argparse._HelpAction)
    }


def _kind(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return "bool"
    if isinstance(action, argparse._AppendAction):
        return "list"
    kind = getattr(action.type, "kind", action.type)  # ranged types (cli.common) say their kind
    if kind is int:
        return "int"
    if kind is float:
        return "float"
    return "str"


_TYPE_WORDS = {"bool": "true or false", "list": "an array of strings", "int": "an integer", "float": "a number", "str": "a string"}


def _toml_type(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"}.get(
        type(value), type(value).__name__
    )


def _coerce(key: str, value: Any, action: argparse.Action, source: str) -> Any:
    """The value of config key ``key`` as the flag would have parsed it, or a one-sentence error."""
    kind = _kind(action)
    flag = action.option_strings[-1]

    def conflict() -> UserError:
        return UserError(
            f"Config key {key!r} in {source} must be {_TYPE_WORDS[kind]}, like the flag {flag}; got {_toml_type(value)} ({value!r})."
        )

    if kind == "bool":
        if not isinstance(value, bool):
            raise conflict()
        return value
    if kind == "list":
        if isinstance(value, dict):  # [model] table: NAME = "PATH", in order
            if not all(isinstance(v, str) for v in value.values()):
                raise conflict()
            return [f"{name}={path}" for name, path in value.items()]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise conflict()
        return list(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise conflict()
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise conflict()
        value = float(value)
    else:  # a string option; a comma-separated list may be an array
        if isinstance(value, list) and value and all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str):
            raise conflict()
    if action.choices is not None and value not in action.choices:
        raise UserError(f"Config key {key!r} in {source} is {value!r}; choose one of {', '.join(map(str, action.choices))}.")
    if kind in ("int", "float") and callable(action.type) and hasattr(action.type, "kind"):
        try:
            value = action.type(str(value))  # the flag's own range check
        except argparse.ArgumentTypeError as error:
            raise UserError(f"Config key {key!r} in {source} {error}, like the flag {flag}.") from None
    return value


def read_config(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read the TOML file ``path`` and check it against ``parser``'s options: dest -> value."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise UserError(f"No config file at {path}.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not a valid TOML file ({error}).") from None
    actions = config_actions(parser)
    values: dict[str, Any] = {}
    for key, value in data.items():
        action = actions.get(key)
        if action is None:
            raise UserError(f"Unknown key {key!r} in {path}; the keys are the options of `{parser.prog}`: {', '.join(actions)}.")
        values[action.dest] = _coerce(key, value, action, str(path))
    return values


def _config_path(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (``--config X`` or ``--config=X``), if any."""
    for index, token in enumerate(argv):
        if token == "--":
            break
        if token == "--config" and index + 1 < len(argv):
            return argv[index + 1]
        if token.startswith("--config="):
            return token.split("=", 1)[1]
    return None


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``rlvr-lens COMMAND ...``; for a command with ``--config``, apply the file and attach
    ``args.resolved_config`` (see :func:`resolved_config`)."""
    commands: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            commands = dict(action.choices)
    command = next((token for token in argv if not token.startswith("-")), None)
    sub = commands.get(command) if command else None
    if sub is None or "config" not in {a.dest for a in sub._actions}:
        return parser.parse_args(argv)
    rest = argv[argv.index(command) + 1 :]
    path = _config_path(rest)
    args = parse_with_config(sub, rest, path) if path else sub.parse_args(rest)
    args.command = command
    args.resolved_config = resolved_config(sub, args)
    return args


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str], config_path: str) -> argparse.Namespace:
    """Parse ``argv`` with ``parser``, taking every option not given on the command line from the config file.

    Options the file sets stop being required; ``--model`` (append) given on the command
    line replaces the file's list instead of adding to it.
    """
    values = read_config(config_path, parser)
    lists = {}
    for action in parser._actions:
        if action.dest in values:
            action.required = False
            if isinstance(action, argparse._AppendAction):
                lists[action.dest] = values.pop(action.dest)
    parser.set_defaults(**values)
    args = parser.parse_args(argv)
    for dest, value in lists.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)
    return args


def resolved_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Key -> value of every option of the run (local paths absolute); ``None`` = the option's unset default."""
    resolved: dict[str, Any] = {}
    for key, action in config_actions(parser).items():
        value = getattr(args, action.dest, None)
        if key in PATH_KEYS and isinstance(value, str):
            value = str(Path(value).resolve())
        elif isinstance(action, argparse._AppendAction) and value:
            value = [_absolute_model(v) for v in value]
        resolved[key] = value
    return resolved


def _absolute_model(text: str) -> str:
    name, sep, path = text.partition("=")
    if sep and Path(path).exists():
        return f"{name}={Path(path).resolve()}"
    if not sep and Path(text).exists():
        return str(Path(text).resolve())
    return text


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def config_toml(resolved: dict[str, Any], *, command: str) -> str:
    """TOML text of a resolved config; options without a value are kept as comments."""
    lines = [f"# rlvr-lens {command}: the resolved options of this run.", f"# Repeat it with: rlvr-lens {command} --config <this file>", ""]
    for key, value in resolved.items():
        lines.append(f"# {key} = (not set)" if value is None else f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def save_config(out_dir: str | Path, resolved: dict[str, Any], *, command: str) -> Path:
    """Write ``<out_dir>/config.toml`` atomically; return its path."""
    from rlvr_lens.io import atomic_write_text

    return atomic_write_text(Path(out_dir) / "config.toml", config_toml(resolved, command=command))
