"""Subject schemes and subject safety (dclcomms.nats.subjects)."""

from __future__ import annotations

import json

import pytest

from dclcomms.errors import SubjectError
from dclcomms.nats.subjects import V3, WORKERS, check_address, check_island_id, check_topic, scheme
from dclcomms.pubsub import (
    AppData,
    Discovery,
    Heartbeat,
    IslandPeer,
    decode_payload,
    encode_payload,
)

A = "0x" + "ab" * 20
B = "0x" + "0123456789" * 4


@pytest.mark.parametrize(
    ("internal", "workers", "v3"),
    [
        (f"peer.{A}.heartbeat", f"peer.{A}.heartbeat", f"client-proto.peer.{A}.heartbeat"),
        (f"peer.{A}.connect", f"peer.{A}.connect", f"peer.{A}.connect"),
        (f"peer.{A}.disconnect", f"peer.{A}.disconnect", f"peer.{A}.disconnect"),
        (
            f"engine.peer.{B}.island_changed",
            f"engine.peer.{B}.island_changed",
            f"client-proto.{B}.island_changed",
        ),
        (
            "engine.island.I1z.peer_join",
            "engine.island.I1z.peer_join",
            "client-proto.island.I1z.peer_join",
        ),
        (
            "engine.island.I1z.peer_left",
            "engine.island.I1z.peer_left",
            "client-proto.island.I1z.peer_left",
        ),
        ("engine.islands", "engine.islands", "archipelago.islands"),
        ("engine.discovery", "engine.discovery", "service.discovery"),
    ],
)
def test_both_schemes_map_every_subject_both_ways(internal: str, workers: str, v3: str) -> None:
    assert WORKERS.to_wire(internal) == workers
    assert WORKERS.from_wire(workers) == internal
    assert V3.to_wire(internal) == v3
    assert V3.from_wire(v3) == internal


@pytest.mark.parametrize(
    "bad",
    [
        "*",
        ">",
        "0xab.cd",
        "0x" + "ab" * 19 + "a*",
        "0x" + "ab" * 19 + "a>",
        "0x" + "ab" * 19 + "a.",
        "0x" + "ab" * 19 + "a ",
        "0x" + "ab" * 19 + "\tb",
        "0x" + "AB" * 20,  # not lowercase
        "0x" + "ab" * 21,  # too long
        "",
    ],
)
def test_bad_addresses_are_refused_everywhere(bad: str) -> None:
    with pytest.raises(SubjectError) as e:
        check_address(bad)
    assert e.value.code == "bad_address"
    for sch in (WORKERS, V3):
        with pytest.raises(SubjectError) as e2:
            sch.to_wire(f"peer.{bad}.heartbeat")
        # a '.' or missing token changes the shape: no route -> bad_subject
        assert e2.value.code in ("bad_address", "bad_subject")
    if "." not in bad and bad:
        with pytest.raises(SubjectError) as e3:
            WORKERS.to_wire(f"engine.peer.{bad}.island_changed")
        assert e3.value.code == "bad_address"


@pytest.mark.parametrize("bad", ["I*", "I>", "I 1", "I\n", "", "I" * 129, "é1"])
def test_bad_island_ids_are_refused(bad: str) -> None:
    with pytest.raises(SubjectError) as e:
        check_island_id(bad)
    assert e.value.code == "bad_island_id"
    with pytest.raises(SubjectError) as e2:
        V3.to_wire(f"engine.island.{bad}.peer_join")
    assert e2.value.code == "bad_island_id"
    with pytest.raises(SubjectError) as e3:
        WORKERS.from_wire(f"engine.island.{bad}.peer_left")
    assert e3.value.code == "bad_island_id"


def test_a_dot_in_an_island_id_cannot_forge_a_subject() -> None:
    with pytest.raises(SubjectError) as e:
        WORKERS.to_wire("engine.island.I1.x.peer_join")
    assert e.value.code == "bad_subject"
    assert check_island_id("I1_a-Z9") == "I1_a-Z9"


def test_unknown_subjects_and_schemes() -> None:
    for s in ("nope", "engine.other", f"peer.{A}.session"):
        with pytest.raises(SubjectError) as e:
            WORKERS.to_wire(s)
        assert e.value.code == "bad_subject"
    with pytest.raises(SubjectError) as e2:
        scheme("v4")
    assert e2.value.code == "bad_subject"
    assert scheme("v3") is V3 and scheme("workers") is WORKERS


def test_subscription_patterns_translate() -> None:
    assert WORKERS.wire_patterns("peer.*.heartbeat") == ["peer.*.heartbeat"]
    assert V3.wire_patterns("peer.*.heartbeat") == ["client-proto.peer.*.heartbeat"]
    assert V3.wire_patterns("engine.peer.*.island_changed") == ["client-proto.*.island_changed"]
    assert V3.wire_patterns(f"engine.peer.{A}.island_changed") == [
        f"client-proto.{A}.island_changed"
    ]
    assert V3.wire_patterns("engine.>") == [
        "client-proto.*.island_changed",
        "client-proto.island.*.peer_join",
        "client-proto.island.*.peer_left",
        "archipelago.islands",
        "service.discovery",
    ]
    assert V3.wire_patterns(f"peer.{A}.>") == [
        f"client-proto.peer.{A}.heartbeat",
        f"peer.{A}.connect",
        f"peer.{A}.disconnect",
    ]
    for bad in ("peer.0xZZ.heartbeat", "engine.island.I*x.peer_join", "a b", "x.y", "peer..x"):
        with pytest.raises(SubjectError):
            V3.wire_patterns(bad)


def test_payloads_are_protobuf_except_v3_discovery_json() -> None:
    hb = Heartbeat((1.0, 2.0, 3.0), "I2")
    for sch in (WORKERS, V3):
        assert sch.encode(f"peer.{A}.heartbeat", hb) == encode_payload(hb)
        assert sch.decode(f"peer.{A}.heartbeat", encode_payload(hb)) == hb
        ip = IslandPeer("I2", A)
        assert sch.decode("engine.island.I2.peer_join", sch.encode("x", ip)) == ip
    d = Discovery("archipelago", 1_700_000_000_123, "abc", 7)
    assert WORKERS.encode("engine.discovery", d) == encode_payload(d)
    js = json.loads(V3.encode("engine.discovery", d))
    assert js == {
        "serverName": "archipelago",
        "status": {"currentTime": 1_700_000_000_123, "commitHash": "abc", "userCount": 7},
    }
    assert V3.decode("engine.discovery", V3.encode("engine.discovery", d)) == d
    assert decode_payload("engine.discovery", WORKERS.encode("engine.discovery", d)) == d
    with pytest.raises(ValueError, match=r"service\.discovery"):
        V3.decode("engine.discovery", b"{}")


@pytest.mark.parametrize(
    ("internal", "workers", "v3"),
    [
        (f"client.peer.{A}.chat", f"client.peer.{A}.chat", f"client-proto.peer.{A}.chat"),
        (
            f"client.peer.{A}.island.I1z.voice:meta",
            f"client.peer.{A}.island.I1z.voice:meta",
            f"client-proto.peer.{A}.island.I1z.voice:meta",
        ),
        (
            f"client.peer.{A}.{B}.offer",
            f"client.peer.{A}.{B}.offer",
            f"client-proto.peer.{A}.{B}.offer",
        ),
        ("client.news", "client.news", "client-proto.news"),
        ("client.a.b.c.d.e.f.g.h", "client.a.b.c.d.e.f.g.h", "client-proto.a.b.c.d.e.f.g.h"),
    ],
)
def test_application_data_subjects(internal: str, workers: str, v3: str) -> None:
    assert WORKERS.to_wire(internal) == workers and WORKERS.from_wire(workers) == internal
    assert V3.to_wire(internal) == v3 and V3.from_wire(v3) == internal
    # the payload is opaque bytes, both ways, in both schemes
    for sch in (WORKERS, V3):
        assert sch.decode(internal, b"\x00\xffraw") == AppData(b"\x00\xffraw")
        assert sch.encode(internal, AppData(b"\x00\xffraw")) == b"\x00\xffraw"


@pytest.mark.parametrize(
    ("internal", "code"),
    [
        (f"client.peer.{A}", "reserved_topic"),  # no topic: would be the system topic peer.<A>
        (f"client.peer.{A}.heartbeat", "reserved_topic"),  # v3: the heartbeat subject
        (f"client.peer.{A}.x.island_changed", "reserved_topic"),
        ("client.island.I1.peer_join", "reserved_topic"),  # v3: the engine's join subject
        (f"client.{A}.island_changed", "reserved_topic"),  # v3: island_changed
        ("client.peer.x", "reserved_topic"),
        (f"client.peer.{A}." + ".".join("t" * 9), "bad_subject"),  # 9 tokens
        (f"client.peer.{A}.a b", "bad_topic"),
        ("client.a*b", "bad_topic"),
        ("client.a/b", "bad_topic"),
        (f"client.peer.{A.upper().replace('0X', '0x')}.chat", "bad_address"),
    ],
)
def test_application_data_topics_are_validated(internal: str, code: str) -> None:
    for sch in (WORKERS, V3):
        with pytest.raises(SubjectError) as e:
            sch.to_wire(internal)
        assert e.value.code == code, (sch.name, e.value)
    assert check_topic("a.b-c:d_e") == "a.b-c:d_e"


def test_application_data_subscriptions_translate_without_overlap() -> None:
    assert V3.wire_patterns("client.peer.*.island.I1.chat") == [
        "client-proto.peer.*.island.I1.chat"
    ]
    assert V3.wire_patterns(f"client.peer.{A}.>") == [f"client-proto.peer.{A}.>"]
    assert WORKERS.wire_patterns("client.news") == ["client.news"]
    # one NATS subscription per message: covered patterns are dropped
    assert WORKERS.wire_patterns("client.>") == ["client.>"]
    assert V3.wire_patterns(">")[-1] == "client-proto.>"
    assert "client-proto.peer.*.heartbeat" not in V3.wire_patterns(">")
    with pytest.raises(SubjectError) as e:
        V3.wire_patterns("client.peer.*.a b")
    assert e.value.code in ("bad_subject", "bad_topic")
