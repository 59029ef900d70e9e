"""Command-line flags made from a config dataclass's fields, so the field is the only default.

As vLLM's `EngineArgs.add_cli_args`: each field `some_name` becomes `--some-name` (or
`metadata["flag"]`) with the field's default, the annotation's type (`X | None` -> `X`) and, from
`field(metadata=...)`, its `help`, `choices`, `metavar` and `type` (a parser for the flag's text
when the annotation's type is not one). A bool field becomes `--name/--no-name`
(argparse.BooleanOptionalAction); `metadata["negative_aliases"]` keeps older spellings of `--no-name`.
The parsed namespace holds each value under the field's name, so `from_cli_args` needs no mapping.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Iterable, TypeVar

T = TypeVar("T")


def flag_of(f: dataclasses.Field) -> str:
    """The flag of field `f`: `--kebab-case` of its name unless its metadata names another."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _value_type(annotation: Any) -> Any:
    """`int | None` -> int; `tuple[int, ...]` -> tuple; a plain type is itself."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"cannot make a flag of the union {annotation}")
        annotation = args[0]
    return typing.get_origin(annotation) or annotation


def flag_fields(cls: type, only: Iterable[str] | None = None) -> list[dataclasses.Field]:
    """The fields of `cls` that become flags (all init fields, or those named in `only`)."""
    wanted = None if only is None else set(only)
    chosen = [f for f in dataclasses.fields(cls) if f.init and (wanted is None or f.name in wanted)]
    if wanted is not None and wanted != {f.name for f in chosen}:
        raise ValueError(f"{cls.__name__} has no fields {sorted(wanted - {f.name for f in chosen})}")
    return chosen


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, *, only: Iterable[str] | None = None,
                        title: str | None = None) -> argparse._ArgumentGroup:
    """Add one flag per field of `cls` to `parser` (in a group titled `title`, or the class name)."""
    hints = typing.get_type_hints(cls)
    doc = (cls.__doc__ or "").strip().split("\n\n")[0] or None
    group = parser.add_argument_group(title or cls.__name__, doc)
    for f in flag_fields(cls, only):
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name} has no default, so it cannot be an optional flag")
        meta = f.metadata
        kind = _value_type(hints[f.name])
        help_text = meta.get("help", "").replace("%", "%%")  # argparse formats help with %
        if isinstance(f.default, tuple):  # shown as it is typed: 1,4,8
            help_text += f" (default: {','.join(map(str, f.default)) or repr('')})"
        elif f.default is not None:
            help_text += " (default: %(default)s)"
        help_text = help_text.strip()
        if kind is bool:
            group.add_argument(flag_of(f), dest=f.name, default=f.default, help=help_text,
                               action=argparse.BooleanOptionalAction)
            for alias in meta.get("negative_aliases", ()):
                group.add_argument(alias, dest=f.name, action="store_false", default=argparse.SUPPRESS,
                                   help=f"same as --no-{flag_of(f)[2:]}")
            continue
        parse = meta.get("type", kind)
        if parse not in (int, float, str) and "type" not in meta:
            raise TypeError(f"{cls.__name__}.{f.name}: give metadata['type'] to parse a {kind.__name__} flag")
        group.add_argument(flag_of(f), dest=f.name, type=parse, default=f.default, help=help_text,
                           choices=meta.get("choices"), metavar=meta.get("metavar"))
    return group


def dataclass_from_cli_args(cls: type[T], ns: argparse.Namespace) -> T:
    """An instance of `cls` from the values its flags put into `ns` (fields without one keep their default)."""
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(ns, f.name)})
