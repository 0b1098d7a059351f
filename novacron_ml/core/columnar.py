"""Columnar snapshots: many objects of one layout pickled as columns, not one by one.

A detect shard holds thousands of `SeriesState`s, each a dozen small objects and eight numpy
arrays. Pickled object by object, each array costs a reduce call and each object a memo
entry: ~50-80 µs a series, so 0.5-0.8 s a snapshot at 10,000 series, at every epoch
(bench/bench_detect_step.py). `pack` turns a list of like objects into columns instead: the
same field of every object side by side, arrays of one shape stacked into one block, objects
taken apart through their own `__getstate__` and rebuilt through their `__setstate__`
exactly as pickle would (`copyreg.__newobj__`, then the state). `unpack` gives equal objects
back: the same types, the same scalars, each array a copy of its own (no views into a block).

What it does not keep: identity between different fields or objects (an array shared by two
states comes back as two arrays), except for one object shared by every row of a column
(a configuration), which stays one object. Use it only for objects that own their arrays.

>>> import numpy as np
>>> rows = [{"n": i, "ring": np.full(3, float(i))} for i in range(2)]
>>> back = unpack(pack(rows))
>>> [(r["n"], r["ring"].tolist()) for r in back]
[(0, [0.0, 0.0, 0.0]), (1, [1.0, 1.0, 1.0])]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

Column = tuple[Any, ...]
"""A packed column: a kind tag, then the kind's parts (`pack`)."""

_PLAIN, _SAME, _NONE, _OPTIONAL, _ARRAY, _MAPPING, _OBJECT = range(7)


class Columns(NamedTuple):
    """`pack`'s result: the columns' layout and every value but the arrays, and the stacked
    arrays apart (`blocks`: fresh arrays nothing else holds, so a snapshot can keep them as
    they are while it pickles the layout at once). The layout holds the packed objects' own
    values (lists, dicts, a state shared by every row): pickle it before they change;
    `unpack` of an unpickled layout gives those very objects back."""

    layout: Column
    blocks: list[np.ndarray]


def pack(values: Sequence[Any]) -> Columns:
    """Columns of `values`, to pickle in their place (`unpack` gives the values back)."""
    blocks: list[np.ndarray] = []
    return Columns(_pack(values, blocks), blocks)


def unpack(columns: Columns) -> list[Any]:
    """The values `pack` took apart, rebuilt (arrays copied out of their blocks)."""
    return _unpack(columns.layout, columns.blocks)


def _pack(values: Sequence[Any], blocks: list[np.ndarray]) -> Column:
    n = len(values)
    if n == 0:
        return (_PLAIN, [])
    first = values[0]
    if all(v is first for v in values):
        return (_NONE, n) if first is None else (_SAME, n, first)
    if any(v is None for v in values):
        present = [v is not None for v in values]
        return (_OPTIONAL, present, _pack([v for v in values if v is not None], blocks))
    kind = type(first)
    if any(type(v) is not kind for v in values):
        return (_PLAIN, list(values))
    if kind is np.ndarray:
        shape, dtype = first.shape, first.dtype
        if all(v.shape == shape and v.dtype == dtype for v in values):
            blocks.append(np.stack(values))
            return (_ARRAY, len(blocks) - 1)
        return (_PLAIN, list(values))
    if kind is dict:
        keys = tuple(first)
        if len(keys) > 64 or any(tuple(v) != keys for v in values):
            return (_PLAIN, list(values))
        return (_MAPPING, keys, [_pack([v[k] for v in values], blocks) for k in keys])
    if not _takes_apart(kind):  # numbers, strings, tuples, lists; custom reductions
        return (_PLAIN, list(values))
    states = [v.__getstate__() for v in values]
    head = states[0]
    if type(head) is tuple and hasattr(kind, "__setstate__"):
        if all(type(s) is tuple and len(s) == len(head) for s in states):
            fields = [_pack([s[i] for s in states], blocks) for i in range(len(head))]
            return (_OBJECT, kind, None, fields)
    elif type(head) is dict:
        keys = tuple(head)
        if all(type(s) is dict and tuple(s) == keys for s in states):
            fields = [_pack([s[k] for s in states], blocks) for k in keys]
            return (_OBJECT, kind, keys, fields)
    return (_PLAIN, list(values))


def _takes_apart(kind: type) -> bool:
    """Whether pickle rebuilds `kind` as `pack` does: `kind.__new__(kind)`, then the object's
    `__getstate__()` given to its `__setstate__` (or, without one, to its `__dict__`). Not so
    for builtins, and not for classes with their own reduction (enums, msgspec structs,
    River models, datetimes) or constructor arguments."""
    known = _TAKES_APART.get(kind)
    if known is None:
        known = _TAKES_APART[kind] = _reduces_plainly(kind)
    return known


_TAKES_APART: dict[type, bool] = {}


def _reduces_plainly(kind: type) -> bool:
    if kind.__module__ == "builtins":
        return False
    if kind.__reduce_ex__ is not object.__reduce_ex__ or kind.__reduce__ is not object.__reduce__:
        return False
    return not any(hasattr(kind, name) for name in ("__getnewargs__", "__getnewargs_ex__"))


def _unpack(column: Column, blocks: Sequence[np.ndarray]) -> list[Any]:
    kind = column[0]
    if kind == _PLAIN:
        return list(column[1])
    if kind == _NONE:
        return [None] * column[1]
    if kind == _SAME:
        return [column[2]] * column[1]
    if kind == _OPTIONAL:
        present, rest = column[1], iter(_unpack(column[2], blocks))
        return [next(rest) if p else None for p in present]
    if kind == _ARRAY:
        return [row.copy() for row in blocks[column[1]]]
    if kind == _MAPPING:
        keys, fields = column[1], [_unpack(f, blocks) for f in column[2]]
        return [dict(zip(keys, row, strict=True)) for row in zip(*fields, strict=True)]
    if kind == _OBJECT:
        cls, keys, fields = column[1], column[2], [_unpack(f, blocks) for f in column[3]]
        out = []
        for row in zip(*fields, strict=True):
            obj = cls.__new__(cls)
            state = row if keys is None else dict(zip(keys, row, strict=True))
            setstate = getattr(obj, "__setstate__", None)
            if setstate is not None:
                setstate(state)
            else:  # what pickle does for a plain object: its __dict__
                obj.__dict__.update(state)
            out.append(obj)
        return out
    raise ValueError(f"not a packed column: kind {kind!r}")
