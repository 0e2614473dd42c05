"""The in-process pub/sub: NATS wildcard semantics, typed delivery, heartbeat batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dclcomms.heartbeats import UNSET
from dclcomms.pubsub import (
    Heartbeat,
    HeartbeatBatch,
    InProcessPubSub,
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
    return HeartbeatBatch(addrs, pos, [UNSET] * (n - 1) + [""])


def test_batches_reach_batch_subscribers_whole_and_plain_ones_split() -> None:
    bus = InProcessPubSub()
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
        ("peer.0xa.heartbeat", Heartbeat((0.0, 1.0, 2.0), UNSET)),
        ("peer.0xb.heartbeat", Heartbeat((3.0, 4.0, 5.0), "")),
    ]
    assert one == [("peer.0xb.heartbeat", Heartbeat((3.0, 4.0, 5.0), ""))]
    assert bus.published == 2


def test_single_heartbeat_publish_reaches_batch_subscribers() -> None:
    bus = InProcessPubSub()
    got: list[HeartbeatBatch] = []
    bus.subscribe_heartbeats(got.append)
    bus.publish("peer.0xa.heartbeat", Heartbeat((1.0, 2.0, 3.0), "I4"))
    assert len(got) == 1
    assert list(got[0].addresses) == ["0xa"]
    assert got[0].positions.tolist() == [[1.0, 2.0, 3.0]]
    assert list(got[0].desired_rooms) == ["I4"]


def test_unsubscribe_and_failing_handlers() -> None:
    bus = InProcessPubSub()
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


def test_wire_encoding_round_trips_for_a_nats_bus() -> None:
    """Every bus message has the protobuf encoding of wire.md 4 (what NATS would carry)."""
    from dclcomms import codec
    from dclcomms.pubsub import Discovery, IslandChanged, IslandData, IslandStatus, encode_payload

    msgs = {
        "peer.0xa.heartbeat": Heartbeat((1.5, 0.0, -2.0), ""),
        "peer.0xb.heartbeat": Heartbeat((0.0, 0.0, 0.0), UNSET),
        "engine.peer.0xa.island_changed": IslandChanged(
            "I2",
            "livekit:wss://h?access_token=t",
            "I1",
            {"0xa": (1.0, 2.0, 3.0), "0xb": (4.0, 5.0, 6.0)},
        ),
        "engine.peer.0xc.island_changed": IslandChanged("I3", "offline:offline", None, {}),
        "engine.island.I2.peer_join": IslandPeer("I2", "0xa"),
        "engine.island.I2.peer_left": IslandPeer("I2", "0xb"),
        "engine.islands": IslandStatus(
            (IslandData("I1", ("0xa", "0xb"), 100, (1.0, 0.0, 2.0), 3.5),)
        ),
        "engine.discovery": Discovery("archipelago", 1_700_000_000_123, "abc", 7),
        "peer.0xa.disconnect": None,
    }
    for subject, msg in msgs.items():
        assert decode_payload(subject, encode_payload(msg)) == msg, subject
    # byte-level spot checks against the wire tables
    assert encode_payload(Heartbeat((0.0, 0.0, 0.0), UNSET)) == bytes.fromhex("0a00")  # E3
    assert encode_payload(Heartbeat((0.0, 0.0, 0.0), "")) == bytes.fromhex("0a001200")  # E2
    ic = codec.decode(
        "decentraland.kernel.comms.v3.IslandChangedMessage",
        encode_payload(msgs["engine.peer.0xa.island_changed"]),
    )
    assert list(ic["peers"]) == ["0xa", "0xb"] and ic["fromIslandId"] == "I1"
    # the in-process bus decodes bytes by subject, so publishers may send either
    bus = InProcessPubSub()
    got: list[object] = []
    bus.subscribe("engine.>", lambda s, p: got.append(p))
    bus.publish("engine.island.I2.peer_join", encode_payload(IslandPeer("I2", "0xa")))
    assert got == [IslandPeer("I2", "0xa")]
