"""The in-process bus: NATS wildcard semantics, typed delivery, heartbeat batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dclcomms.bus import (
    Heartbeat,
    HeartbeatBatch,
    InProcessBus,
    IslandPeer,
    decode_payload,
    subject_matches,
)


@pytest.mark.parametrize(
    ("pattern", "subject", "ok"),
    [
        ("peer.*.heartbeat", "peer.0xab.heartbeat", True),
        ("peer.*.heartbeat", "peer.0xab.disconnect", False),
        ("peer.*.heartbeat", "peer.heartbeat", False),
        ("engine.>", "engine.islands", True),
        ("engine.>", "engine.island.I1.peer_join", True),
        ("engine.>", "engine", False),
        ("engine.islands", "engine.islands", True),
        ("engine.islands", "engine.islands.x", False),
        ("*.*", "a.b", True),
        ("a.>.c", "a.b.c", False),
    ],
)
def test_subject_matching(pattern: str, subject: str, ok: bool) -> None:
    assert subject_matches(pattern, subject) is ok


def _batch(addrs: list[str]) -> HeartbeatBatch:
    n = len(addrs)
    pos = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    return HeartbeatBatch(addrs, pos, [None] * (n - 1) + [""], np.arange(n, dtype=np.int64))


def test_batches_reach_batch_subscribers_whole_and_plain_ones_split() -> None:
    bus = InProcessBus()
    batches: list[HeartbeatBatch] = []
    plain: list[tuple[str, Any]] = []
    one: list[tuple[str, Any]] = []
    bus.subscribe_heartbeats(batches.append)
    bus.subscribe("peer.*.heartbeat", lambda s, p: plain.append((s, p)))
    bus.subscribe("peer.0xb.>", lambda s, p: one.append((s, p)))
    b = _batch(["0xa", "0xb"])
    bus.publish_heartbeats(b)
    assert batches == [b]
    assert plain == [
        ("peer.0xa.heartbeat", Heartbeat((0.0, 1.0, 2.0), None)),
        ("peer.0xb.heartbeat", Heartbeat((3.0, 4.0, 5.0), "")),
    ]
    assert one == [("peer.0xb.heartbeat", Heartbeat((3.0, 4.0, 5.0), ""))]
    assert bus.published == 2


def test_single_heartbeat_publish_reaches_batch_subscribers() -> None:
    bus = InProcessBus()
    got: list[HeartbeatBatch] = []
    bus.subscribe_heartbeats(got.append)
    bus.publish("peer.0xa.heartbeat", Heartbeat((1.0, 2.0, 3.0), "I4"))
    assert len(got) == 1
    assert list(got[0].addresses) == ["0xa"]
    assert got[0].positions.tolist() == [[1.0, 2.0, 3.0]]
    assert list(got[0].desired_rooms) == ["I4"]


def test_unsubscribe_and_failing_handlers() -> None:
    bus = InProcessBus()
    got: list[str] = []

    def bad(_s: str, _p: object) -> None:
        raise RuntimeError("handler bug")

    bus.subscribe("engine.island.*.peer_join", bad)
    sub = bus.subscribe("engine.island.*.peer_join", lambda s, p: got.append(p.peer_id))
    bus.publish("engine.island.I1.peer_join", IslandPeer("I1", "0xa"))
    assert got == ["0xa"] and bus.handler_errors == 1
    sub.unsubscribe()
    bus.publish("engine.island.I1.peer_join", IslandPeer("I1", "0xb"))
    assert got == ["0xa"]


def test_disconnect_payload_and_unknown_subjects() -> None:
    assert decode_payload("peer.0xa.disconnect", b"") is None
    with pytest.raises(ValueError, match="no message type"):
        decode_payload("nope.x", b"")
