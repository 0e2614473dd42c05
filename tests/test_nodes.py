"""The transport-node registry and NodeBalancedWsRooms, with an injected clock (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from dclcomms.archipelago import Engine
from dclcomms.archipelago.core import ArchipelagoCore
from dclcomms.auth import jwt_decode
from dclcomms.errors import SubjectError
from dclcomms.heartbeats import UNSET
from dclcomms.nats.nodes import (
    NodeBalancedWsRooms,
    NodeRegistry,
    NodeStatus,
    check_node_id,
    status_subject,
)
from dclcomms.policy import IslandView, Transports, WsRoomTransport
from dclcomms.pubsub import HeartbeatBatch, InProcessPubSub, IslandChanged

SECRET = "node-secret-0123456789"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def status(node: str, port: int, **kw: Any) -> NodeStatus:
    base: dict[str, Any] = {
        "node_id": node,
        "kind": "ws-room",
        "url": f"ws://127.0.0.1:{port}",
        "max_island_size": 100,
        "available_seats": -1,
        "users_count": 0,
        "rooms": 0,
        "ts": 1,
    }
    base.update(kw)
    return NodeStatus(**base)


def view(island: str, n: int, transport: str | None = None) -> IslandView:
    peers = tuple(f"0x{i:040x}" for i in range(n))
    return IslandView(island, peers, (0.0, 0.0, 0.0), 1.0, 100, transport)


def policy(clock: Clock, **kw: Any) -> NodeBalancedWsRooms:
    transports = Transports(ws_room=WsRoomTransport("ws://realm:1", SECRET))
    return NodeBalancedWsRooms(transports, registry=NodeRegistry(clock=clock, **kw))


def test_status_json_roundtrip_and_subject() -> None:
    s = status("node-1", 7000, users_count=3, rooms=2, available_seats=10)
    assert NodeStatus.from_json(s.to_json()) == s
    d = json.loads(s.to_json())
    assert set(d) == {
        "nodeId",
        "kind",
        "url",
        "maxIslandSize",
        "availableSeats",
        "usersCount",
        "rooms",
        "ts",
    }
    assert status_subject("node-1") == "dclcomms.transport.node-1.status"


@pytest.mark.parametrize("bad", ["", "a.b", "*", ">", "a b", "x" * 129, "é"])
def test_node_ids_are_validated(bad: str) -> None:
    with pytest.raises(SubjectError) as e:
        check_node_id(bad)
    assert e.value.code == "bad_node_id"
    with pytest.raises(SubjectError):
        status_subject(bad)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"usersCount": -1}, "'usersCount' must be an integer >= 0"),
        ({"availableSeats": -2}, "'availableSeats' must be an integer >= -1"),
        ({"maxIslandSize": 0}, "'maxIslandSize' must be an integer >= 1"),
        ({"rooms": True}, "'rooms' must be an integer >= 0"),
        ({"url": ""}, "'url' must be a non-empty string"),
        ({"kind": 5}, "'kind' must be a non-empty string"),
    ],
)
def test_malformed_status_is_refused(patch: dict[str, Any], message: str) -> None:
    d = json.loads(status("n", 1).to_json())
    d.update(patch)
    with pytest.raises(ValueError, match=message):
        NodeStatus.from_json(json.dumps(d).encode())
    with pytest.raises(ValueError, match="not JSON"):
        NodeStatus.from_json(b"{")
    with pytest.raises(ValueError, match="not a JSON object"):
        NodeStatus.from_json(b"[]")
    d = json.loads(status("n", 1).to_json())
    d["nodeId"] = "a.b"
    with pytest.raises(SubjectError):
        NodeStatus.from_json(json.dumps(d).encode())


def test_registry_expires_after_missed_intervals() -> None:
    clock = Clock()
    reg = NodeRegistry(transport_node_interval_s=10, transport_node_missed=3, clock=clock)
    assert reg.update(status("a", 1)) is True
    assert reg.update(status("b", 2)) is True
    assert reg.update(status("a", 1)) is False
    clock.t += 20
    reg.update(status("b", 2))
    clock.t += 10  # a silent exactly 30 s: still alive
    assert reg.expire() == []
    clock.t += 0.5
    assert reg.expire() == ["a"]
    assert [s.node_id for s in reg.live()] == ["b"]
    assert reg.get("a") is None
    clock.t += 30.5
    assert reg.expire() == ["b"]
    assert len(reg) == 0
    with pytest.raises(ValueError):
        NodeRegistry(transport_node_interval_s=0)
    with pytest.raises(ValueError):
        NodeRegistry(transport_node_missed=0)


def test_balances_new_islands_on_least_loaded_node_with_seats() -> None:
    clock = Clock()
    p = policy(clock)
    # no node yet: the realm's own ws-room transport
    assert p.transport_for(view("i0", 1)) is p.transports.ws_room
    p.island_removed("i0")
    p.on_status(status("n1", 7001))
    p.on_status(status("n2", 7002))
    p.on_status(status("full", 7003, available_seats=0))
    p.on_status(status("lk", 7004, kind="livekit"))  # not a ws-room node: ignored
    t1 = p.transport_for(view("i1", 3))
    t2 = p.transport_for(view("i2", 1))
    t3 = p.transport_for(view("i3", 1))
    assert isinstance(t1, WsRoomTransport) and t1.base_url == "ws://127.0.0.1:7001"
    assert isinstance(t2, WsRoomTransport) and t2.base_url == "ws://127.0.0.1:7002"
    assert t3 is t2  # n2 has 1 peer, n1 has 3
    assert p.island_node == {"i1": "n1", "i2": "n2", "i3": "n2"}
    # announced load counts too: n2 reports 50 users from elsewhere
    p.on_status(status("n2", 7002, users_count=50))
    assert p.transport_for(view("i4", 1)) is t1
    # a member change keeps the island where it is
    assert p.transport_for(view("i2", 2, "ws-room")) is t2
    # strings carry the island, the node's url and a token signed with the shared secret
    conn = t1.issue("i1", ["0x" + "a" * 40])["0x" + "a" * 40]
    assert conn.startswith("ws-room:ws://127.0.0.1:7001/rooms/i1?access_token=")
    claims = jwt_decode(conn.split("access_token=")[1], SECRET)
    assert (claims["sub"], claims["room"]) == ("0x" + "a" * 40, "i1")


def test_island_larger_than_node_capacity_goes_elsewhere() -> None:
    clock = Clock()
    p = policy(clock)
    p.on_status(status("small", 7001, max_island_size=2))
    p.on_status(status("zbig", 7002, max_island_size=50))
    assert p.transport_for(view("i1", 1)).base_url == "ws://127.0.0.1:7001"  # type: ignore[attr-defined]
    # grew past the node's rooms: moved
    assert p.transport_for(view("i1", 3)).base_url == "ws://127.0.0.1:7002"  # type: ignore[attr-defined]
    assert p.island_node["i1"] == "zbig"


def test_dead_node_islands_are_rechecked_and_moved() -> None:
    clock = Clock()
    p = policy(clock, transport_node_interval_s=1, transport_node_missed=3)
    p.on_status(status("n1", 7001))
    p.on_status(status("n2", 7002))
    t1 = p.transport_for(view("i1", 1))
    t2 = p.transport_for(view("i2", 1))
    assert list(p.islands_to_recheck()) == []
    clock.t += 2
    p.on_status(status("n2", 7002))
    clock.t += 1.5  # n1 silent 3.5 s > 3 intervals
    assert list(p.islands_to_recheck()) == ["i1"]
    assert list(p.islands_to_recheck()) == []  # reported once
    assert p.transport_for(view("i1", 1, "ws-room")) is t2
    assert t1 is not t2
    assert p.island_node == {"i1": "n2", "i2": "n2"}
    p.island_removed("i1")
    assert p.island_node == {"i2": "n2"}


def test_core_reissues_island_of_dead_node_to_every_member() -> None:
    """The core's transport-switch path: same island id, new conn_str, from = same id."""
    clock = Clock()
    p = policy(clock, transport_node_interval_s=1, transport_node_missed=3)
    bus = InProcessPubSub()
    core = ArchipelagoCore(Engine(), bus, p, clock_ms=lambda: 1_000_000)
    log: list[tuple[str, Any]] = []
    bus.subscribe("engine.peer.*.island_changed", lambda s, m: log.append((s, m)))
    p.on_status(status("n1", 7001))
    p.on_status(status("n2", 7002, users_count=10))
    peers = [f"0x{i:040x}" for i in (1, 2)]
    pos = np.asarray([(0.0, 1.0, 0.0), (5.0, 1.0, 0.0)], np.float32)
    bus.publish_heartbeats(HeartbeatBatch(peers, pos, [UNSET, UNSET]))
    core.tick()
    first = {s.split(".")[2]: m for s, m in log}
    assert set(first) == set(peers)
    island = first[peers[0]].island_id
    assert all(m.conn_str.startswith("ws-room:ws://127.0.0.1:7001/rooms/") for m in first.values())
    log.clear()
    core.tick()
    assert log == []  # nothing changed
    clock.t += 2
    p.on_status(status("n2", 7002, users_count=10))
    clock.t += 1.5
    core.tick()
    again: dict[str, IslandChanged] = {s.split(".")[2]: m for s, m in log}
    assert set(again) == set(peers)
    for m in again.values():
        assert m.island_id == island and m.from_island_id == island
        assert m.conn_str.startswith(f"ws-room:ws://127.0.0.1:7002/rooms/{island}?access_token=")
    assert core.metrics.switches.get() == 1
