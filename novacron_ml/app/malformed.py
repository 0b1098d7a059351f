"""A catalogue of malformed messages, each with the dead-letter reason it must produce.

Used by the demo (`--bad-rate`), the producer (`novacron-ml produce --bad-rate`) and the tests,
so "every malformed message ends in the DLQ with its reason" is checked against one list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from novacron_ml.core.deadletter import Reason

Builder = Callable[[int], bytes]


def _obj(ts: object, value: str = "1.5", extra: str = "") -> bytes:
    ts_text = ts if isinstance(ts, str) else str(ts)
    fields = '"host":"host-bad","cluster":"cluster-bad","metric":"cpu_util"'
    return f'{{"ts":{ts_text},{fields},"value":{value}{extra}}}'.encode()


MALFORMED: tuple[tuple[Reason, Builder], ...] = (
    (Reason.UNDECODABLE, lambda now: b"\xff\xfe\x00garbage"),
    (Reason.BAD_JSON, lambda now: _obj(now)[:-7]),
    (Reason.BAD_JSON, lambda now: b"{not json at all}"),
    (Reason.WRONG_TYPE, lambda now: _obj(now, value='"high"')),
    (Reason.WRONG_TYPE, lambda now: _obj(now, value="true")),
    (Reason.NON_FINITE, lambda now: _obj(now, value="1e999")),
    (Reason.MISSING_FIELD, lambda now: b'{"ts":%d,"host":"h","cluster":"c","value":1}' % now),
    (Reason.UNKNOWN_FIELD, lambda now: _obj(now, extra=',"unit":"ms"')),
    (
        Reason.INVALID_VALUE,
        lambda now: b'{"ts":%d,"host":"","cluster":"c","metric":"m","value":1}' % now,
    ),
    (Reason.BAD_TIMESTAMP, lambda now: _obj('"yesterday"')),
    (Reason.BAD_TIMESTAMP, lambda now: _obj('"2026-01-01T00:00:00"')),
    (Reason.TS_FUTURE, lambda now: _obj(now + 86_400_000)),
    (Reason.TS_PAST, lambda now: _obj(now - 30 * 86_400_000)),
    (Reason.OVERSIZED, lambda now: b'{"pad":"' + b"x" * 1_200_000 + b'"}'),
    (Reason.EMPTY, lambda now: b""),
    (Reason.EMPTY, lambda now: b"[]"),
    (
        Reason.BAD_LINE_PROTOCOL,
        lambda now: b"cpu_util,host=h1,cluster=c1 value= %d" % (now * 10**6),
    ),
    (Reason.NON_FINITE, lambda now: b"cpu_util,host=h1,cluster=c1 value=NaN %d" % (now * 10**6)),
    (Reason.MISSING_FIELD, lambda now: b"cpu_util,cluster=c1 value=1 %d" % (now * 10**6)),
    (Reason.MISSING_FIELD, lambda now: b"cpu_util,host=h1,cluster=c1 value=1"),
    (Reason.BAD_TIMESTAMP, lambda now: b"cpu_util,host=h1,cluster=c1 value=1 %d" % (10**400)),
    (Reason.BAD_JSON, lambda now: b"\xef\xbb\xbf" + _obj(now)),  # a byte order mark first
    (Reason.BAD_JSON, lambda now: b"[" * 5_000 + b"]" * 5_000),  # nested past the limit
    (Reason.BAD_JSON, lambda now: b'{"a":' * 5_000 + b"1" + b"}" * 5_000),
    # control characters in names: an ANSI escape in a host, a NUL in a tag, DEL in a metric
    (
        Reason.INVALID_VALUE,
        lambda now: b'{"ts":%d,"host":"\\u001b[31mred","cluster":"c","metric":"m","value":1}' % now,
    ),
    (
        Reason.INVALID_VALUE,
        lambda now: b"cpu_util,host=h1,cluster=c1,az=a\x00 value=1 %d" % (now * 10**6),
    ),
    (
        Reason.INVALID_VALUE,
        lambda now: b"cpu\x7futil,host=h1,cluster=c1 value=1 %d" % (now * 10**6),
    ),
)
"""(expected reason, builder(now_ms) -> payload) for each kind of bad message."""


def with_malformed(
    messages: Iterator[tuple[bytes, bytes]] | Iterator[tuple[bytes, bytes, int]],
    rate: float,
    seed: int,
    now_ms: Callable[[], int],
    on_inject: Callable[[Reason, bytes], None] | None = None,
) -> Iterator[tuple[bytes, bytes] | tuple[bytes, bytes, int]]:
    """Interleave malformed messages into a stream at `rate` (a fraction of messages).

    With (key, value, timestamp) messages a malformed one takes its predecessor's timestamp.
    """
    rng = np.random.default_rng([seed, 0xBAD])
    cases = MALFORMED
    for message in messages:
        yield message
        if rate > 0 and rng.random() < rate:
            reason, build = cases[int(rng.integers(len(cases)))]
            payload = build(now_ms())
            if on_inject is not None:
                on_inject(reason, payload)
            if len(message) > 2:
                yield b"malformed", payload, message[2]
            else:
                yield b"malformed", payload
