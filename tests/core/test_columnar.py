"""Columnar snapshots (`novacron_ml.core.columnar`): what `pack` takes apart, `unpack` rebuilds
equal, of the same types, with arrays of their own."""

from __future__ import annotations

import enum
import pickle
import struct
import types
from dataclasses import dataclass, field

import msgspec
import numpy as np
import pytest

from novacron_ml.core.columnar import Columns, pack, unpack


class Ring:
    """A slots object with its own tuple state, like the detectors."""

    __slots__ = ("config", "data", "pos")

    def __init__(self, config: object, size: int, pos: int) -> None:
        self.config, self.data, self.pos = config, np.arange(size, dtype=np.float32) + pos, pos

    def __getstate__(self) -> tuple[object, ...]:
        return (self.config, self.data, self.pos)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        self.config, self.data, self.pos = state  # type: ignore[assignment]


class Kind(enum.Enum):
    A = "a"
    B = "b"


class Record(msgspec.Struct):
    name: str
    value: float


@dataclass
class State:
    ring: Ring
    maybe: Ring | None
    scores: dict[str, float]
    rings: dict[str, Ring]
    kind: Kind
    record: Record | None
    history: list[float] = field(default_factory=list)
    count: int = 0
    level: float = 0.0
    flag: bool = False


CONFIG = {"shared": True}


def _states(n: int) -> list[State]:
    out = []
    for i in range(n):
        scores = {"a": i / 3, "b": 1.0} if i % 3 else {"b": 2.0}  # keys differ: kept as they are
        out.append(
            State(
                Ring(CONFIG, 5, i),
                Ring(CONFIG, 2 + i % 2, i) if i % 2 else None,  # shapes differ: kept as they are
                scores,
                {"x": Ring(CONFIG, 4, i), "y": Ring(CONFIG, 4, -i)},
                Kind.A if i % 2 else Kind.B,
                Record(f"r{i}", i * 0.5) if i % 4 == 0 else None,
                [float(i)] * (i % 3),
                i,
                i * 0.1,
                bool(i % 2),
            )
        )
    return out


def same_value(a: object, b: object) -> bool:
    """Whether two objects hold the same values all the way down: the same types, floats
    bit for bit, arrays of the same dtype and shape and bytes, objects by what pickle keeps
    of them (`__reduce_ex__`). Not by identity, and not by pickled bytes: which equal strings
    are one object (and so one memo entry) differs between objects built apart."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)  # type: ignore[arg-type]
    if a is None or isinstance(a, (bool, int, str, bytes, type, enum.Enum)):
        return a == b
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple))
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (types.FunctionType, types.BuiltinFunctionType)):
        return a is b  # the rebuilding function of a reduction
    return same_value(a.__reduce_ex__(4), b.__reduce_ex__(4))


@pytest.mark.parametrize("n", [0, 1, 2, 7, 40])
def test_unpacked_objects_hold_the_same_values_as_the_originals(n: int) -> None:
    states = _states(n)
    back = unpack(pickle.loads(pickle.dumps(pack(states))))
    assert len(back) == n
    assert same_value(back, states)
    for s in back:
        assert type(s.count) is int and type(s.level) is float and type(s.flag) is bool
        assert s.ring.data.dtype == np.float32 and s.kind in Kind


def test_rings_are_stacked_and_come_back_as_arrays_of_their_own() -> None:
    states = _states(12)
    packed = pack(states)
    data = pickle.dumps(packed)
    # every Ring's 5-float ring of the first field went into one block, not 12 arrays
    assert data.count(b"numpy") < 12
    back = unpack(pickle.loads(data))
    arrays = [s.ring.data for s in back] + [r.data for s in back for r in s.rings.values()]
    assert all(a.base is None and a.flags.writeable for a in arrays)
    back[0].ring.data[0] = 99.0  # writing one state's ring touches no other
    assert [s.ring.data[0] for s in back[1:]] == [s.ring.data[0] for s in states[1:]]


def test_one_object_shared_by_every_row_stays_one_object() -> None:
    back = unpack(pickle.loads(pickle.dumps(pack(_states(9)))))
    configs = {id(s.ring.config) for s in back} | {
        id(r.config) for s in back for r in s.rings.values()
    }
    assert len(configs) == 1


def test_objects_with_their_own_reduction_are_pickled_as_they_are() -> None:
    values = [Kind.A, Kind.B, Kind.A]
    assert unpack(pack(values)) == values
    records = [Record("a", 1.0), Record("b", 2.0)]
    assert unpack(pack(records)) == records


def test_an_unknown_column_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not a packed column"):
        unpack(Columns((99,), []))


def test_same_value_sees_a_changed_array_float_and_field() -> None:
    a, b = _states(3), _states(3)
    assert same_value(a, b)
    b[1].rings["y"].data[2] += 1e-6
    assert not same_value(a, b)
    b = _states(3)
    b[2].level = -0.0 if a[2].level == 0.0 else a[2].level * (1 + 1e-15)
    assert not same_value(a, b)
    b = _states(3)
    b[0].ring.data = b[0].ring.data.astype(np.float64)
    assert not same_value(a, b)
