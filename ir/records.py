"""Typed, frozen records that read and write JSON objects exactly (the machinery under `ir.plan`).

A record is a frozen dataclass deriving from `Record`; its annotations are its schema. Reading
(`from_json`) checks every value against its annotation and names the first one that does not fit by
its path ("decision.stages[1].tp: expected an integer, got '2'"); keys the schema does not know are
refused. Writing (`to_json`) gives back the same JSON value, so a file read and written again is byte
for byte the same. Supported annotations: int, float (an int is kept as written), str, bool, None,
`Literal[...]`, `tuple[X, ...]`, `tuple[X, Y]`, `Mapping[str, X]`, nested records, unions of these, and
`JsonValue` (any JSON value, frozen), and
`Absent`: a field whose key may be missing from the object (its default is `ABSENT`, and it is
omitted on writing; None is written as null).

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Point(Record):
...     x: int
...     label: str | Absent = ABSENT
>>> Point.from_json({"x": 3}).to_json()
{'x': 3}
>>> Point.from_json({"x": "3"}, "point")
Traceback (most recent call last):
ir.errors.UserError: point.x: expected an integer, got '3'
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from functools import cache

from ir.errors import UserError


class Absent:
    """The type of `ABSENT`: a key missing from the JSON object (distinct from a null value)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT = Absent()


class JsonValue:
    """Annotation for a free-form JSON value (e.g. a model's config values): any of null, true/false, a finite
    number, a string, a list or an object of those; stored frozen (tuples, read-only mappings)."""


def present(value) -> bool:
    """True unless `value` is ABSENT.

    >>> present(None), present(ABSENT)
    (True, False)
    """
    return value is not ABSENT


class Record:
    """Base of JSON-backed frozen dataclasses (see the module docstring)."""

    @classmethod
    def from_json(cls, value, where: str = ""):
        if not isinstance(value, Mapping):
            raise UserError(f"{where or cls.__name__}: expected an object, got {_show(value)}")
        hints = _hints(cls)
        unknown = sorted(set(value) - set(hints))
        if unknown:
            raise UserError(f"{_at(where, unknown[0])}: unknown key (this planner writes "
                            f"{', '.join(sorted(hints))})")
        kwargs = {}
        for name, hint in hints.items():
            if name in value:
                kwargs[name] = convert(hint, value[name], _at(where, name))
            elif not _allows_absent(hint):
                raise UserError(f"{_at(where, name)}: missing")
        return cls(**kwargs)

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not ABSENT:
                out[f.name] = to_json(value)
        return out

    def replace(self, **changes):
        """A copy with `changes` (records are frozen)."""
        return dataclasses.replace(self, **changes)


def to_json(value):
    """The JSON value of a record field (tuples become lists, mappings dicts, records objects)."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, tuple):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items()}
    return value


def convert(hint, value, where: str):
    """`value` read as `hint` (see the module docstring); UserError naming `where` when it does not fit."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _union(args, value, where)
    if hint is Absent:
        raise UserError(f"{where}: must be left out")
    if hint is JsonValue:
        return _json_value(value, where)
    if hint is type(None) or hint is None:
        if value is not None:
            raise UserError(f"{where}: expected null, got {_show(value)}")
        return None
    if origin is typing.Literal:
        if not any(type(value) is type(a) and value == a for a in args):
            raise UserError(f"{where}: expected one of {', '.join(map(repr, args))}, got {_show(value)}")
        return value
    if origin is tuple:
        return _tuple(args, value, where)
    if origin in (Mapping, dict, typing.Mapping):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise UserError(f"{where}: expected an object, got {_show(value)}")
        return types.MappingProxyType({k: convert(args[1], v, f"{where}.{k}") for k, v in value.items()})
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_json(value, where)
    return _scalar(hint, value, where)


def _json_value(value, where: str, depth: int = 0):
    if depth > 32:
        raise UserError(f"{where}: nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return _scalar(float, value, where) if isinstance(value, float) else value
    if isinstance(value, list):
        return tuple(_json_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return types.MappingProxyType({k: _json_value(v, f"{where}.{k}", depth + 1) for k, v in value.items()})
    raise UserError(f"{where}: not a JSON value: {_show(value)}")


def _scalar(hint, value, where: str):
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"{where}: expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise UserError(f"{where}: expected a finite number, got {_show(value)}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"unsupported record annotation {hint!r} at {where}")


def _union(args: tuple, value, where: str):
    options = [a for a in args if a is not Absent]
    if value is None and type(None) in options:
        return None
    records = [a for a in options if isinstance(a, type) and issubclass(a, Record)]
    if len(records) > 1 and isinstance(value, Mapping) and all("kind" in _hints(r) for r in records):
        # discriminated by a Literal `kind`
        for rec in records:
            kinds = typing.get_args(_hints(rec).get("kind"))
            if value.get("kind") in kinds:
                return rec.from_json(value, where)
        raise UserError(f"{where}.kind: unknown kind {_show(value.get('kind'))}")
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return convert(option, value, where)
        except UserError as exc:
            errors.append((option, str(exc)))
    if isinstance(value, Mapping) and records:  # the record the value most resembles says what is wrong with it
        shared = {rec: len(set(value) & set(_hints(rec))) for rec in records}
        best = max(shared.values())
        if list(shared.values()).count(best) == 1:
            raise UserError(next(e for option, e in errors if shared.get(option) == best))
    raise UserError(errors[0][1] if len(errors) == 1 else f"{where}: {_show(value)} fits none of its types "
                    f"({'; '.join(e.split(': ', 1)[-1] for _, e in errors)})")


def _tuple(args: tuple, value, where: str) -> tuple:
    if not isinstance(value, list):
        raise UserError(f"{where}: expected a list, got {_show(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise UserError(f"{where}: expected {len(args)} items, got {len(value)}")
    return tuple(convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


@cache
def _hints(cls) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def _allows_absent(hint) -> bool:
    return hint is Absent or Absent in typing.get_args(hint)


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
