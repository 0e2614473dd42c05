"""The NATS hot paths against the generic ones they replace.

* ``IslandChanged.to_bytes`` (header + the member map encoded once) is byte for
  byte the generic codec's encoding; ``IslandChanged.from_bytes`` (header +
  shared decoded member map) gives what the generic decoder gives, and fails
  with the same code on bad bytes.
* The batch heartbeat encoder/decoder of the compiled codec against
  ``Heartbeat.to_bytes`` / ``Heartbeat.from_bytes`` (generic codec).
* The NATS bus's subject fast path against the scheme, both schemes.
* Over a real nats-server: messages for one island with per-peer connection
  strings keep their own header and share one decoded member map.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dclcomms import _core, codec
from dclcomms.archipelago import Engine
from dclcomms.archipelago.core import ArchipelagoCore
from dclcomms.errors import DecodeError, EncodeError, SubjectError
from dclcomms.heartbeats import UNSET
from dclcomms.nats.pubsub import NatsPubSub, _Subjects
from dclcomms.nats.subjects import ADDR, ISLAND, SCHEMES, Route, Scheme
from dclcomms.policy import FixedTransport, RealmPolicy, Transports, WsRoomTransport
from dclcomms.pubsub import (
    Heartbeat,
    HeartbeatBatch,
    InProcessPubSub,
    IslandChanged,
    IslandMembers,
    _PeersCache,
)
from tests.helpers.nats_fixtures import (
    NatsServer,
    nats_server,  # noqa: F401 - fixture
)

SETTINGS = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- helpers ---------------------------------------------------------------------

specials = st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 0.1, 16.5, -3e38, 1e-45])
coordinate = st.one_of(
    specials,
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.integers(-3000, 3000).map(float),
)
position = st.tuples(coordinate, coordinate, coordinate)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
peer_ids = st.one_of(st.integers(0, 2**160 - 1).map(lambda i: f"0x{i:040x}"), text)
members = st.lists(st.tuples(peer_ids, position), max_size=40)
island_changed = st.builds(
    lambda i, c, f, p: (i, c, f, p),
    text,
    st.one_of(text, st.text(min_size=100, max_size=400)),  # per-peer tokens are long
    st.one_of(st.none(), text),
    members,
)


def generic_encode(island: str, conn: str, from_id: str | None, peers: Any) -> bytes:
    msg: dict[str, Any] = {"islandId": island, "connStr": conn}
    if from_id is not None:
        msg["fromIslandId"] = from_id
    msg["peers"] = {a: {"x": p[0], "y": p[1], "z": p[2]} for a, p in dict(peers).items()}
    return codec.encode(codec.ISLAND_CHANGED, msg)


def generic_decode(data: bytes) -> IslandChanged:
    """What IslandChanged.from_bytes returned before the fast path (generic codec)."""
    m = codec.decode(codec.ISLAND_CHANGED, data)
    peers = {
        a: (float(p.get("x", 0.0)), float(p.get("y", 0.0)), float(p.get("z", 0.0)))
        for a, p in m.get("peers", {}).items()
    }
    return IslandChanged(m.get("islandId", ""), m.get("connStr", ""), m.get("fromIslandId"), peers)


def same_float(a: float, b: float) -> bool:
    return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))


def same_peers(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same members in the same order, coordinates bit for bit (NaN equal to NaN)."""
    return list(a) == list(b) and all(
        all(same_float(x, y) for x, y in zip(a[k], b[k], strict=True)) for k in a
    )


def same_message(a: IslandChanged, b: IslandChanged) -> bool:
    return (a.island_id, a.conn_str, a.from_island_id) == (
        b.island_id,
        b.conn_str,
        b.from_island_id,
    ) and same_peers(a.peers, b.peers)


def to_f32(p: tuple[float, float, float]) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in np.asarray(p, dtype=np.float64).astype(np.float32))
    return (x, y, z)


# --- IslandChanged ---------------------------------------------------------------


@SETTINGS
@given(island_changed, st.booleans())
def test_island_changed_encodes_like_the_generic_codec(msg: Any, shared: bool) -> None:
    island, conn, from_id, pairs = msg
    pairs = [(a, to_f32(p)) for a, p in pairs]  # generic encode refuses > float32 range
    peers: Mapping[str, Any] = IslandMembers(pairs) if shared else dict(pairs)
    got = IslandChanged(island, conn, from_id, peers).to_bytes()
    assert got == generic_encode(island, conn, from_id, peers)
    if shared:  # the map is encoded once, then reused
        assert isinstance(peers, IslandMembers)
        assert peers.to_bytes() is peers.to_bytes()


@SETTINGS
@given(island_changed, st.data())
def test_island_changed_decodes_like_the_generic_codec(msg: Any, data: st.DataObject) -> None:
    island, conn, from_id, pairs = msg
    pairs = [(a, to_f32(p)) for a, p in pairs]
    raw = generic_encode(island, conn, from_id, pairs)
    # mutations: truncation, a flipped byte, fields after the peers, repeated message
    kind = data.draw(st.sampled_from(["as is", "truncate", "flip", "append", "twice"]))
    if kind == "truncate" and raw:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "flip" and raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1 :]
    elif kind == "append":
        raw += generic_encode(data.draw(text), "", data.draw(st.one_of(st.none(), text)), [])
    elif kind == "twice":
        raw += raw
    try:
        want = generic_decode(raw)
    except DecodeError as e:
        with pytest.raises(DecodeError) as got_error:
            IslandChanged.from_bytes(raw)
        assert got_error.value.code == e.code
        return
    got = IslandChanged.from_bytes(raw)
    assert same_message(got, want), (got, want)
    assert isinstance(got.peers, IslandMembers)
    again = IslandChanged.from_bytes(raw)
    assert same_message(again, want)


def test_island_changed_messages_of_one_island_share_the_decoded_map() -> None:
    pairs = [(f"0x{i:040x}", (float(i), 0.0, float(-i))) for i in range(50)]
    shared = IslandMembers(pairs)
    a = IslandChanged("I1", "livekit:wss://h?access_token=aaa", None, shared).to_bytes()
    b = IslandChanged("I1", "livekit:wss://h?access_token=bbbb", "I0", shared).to_bytes()
    ga, gb = IslandChanged.from_bytes(a), IslandChanged.from_bytes(b)
    assert (ga.conn_str, ga.from_island_id) == ("livekit:wss://h?access_token=aaa", None)
    assert (gb.conn_str, gb.from_island_id) == ("livekit:wss://h?access_token=bbbb", "I0")
    assert ga.peers is gb.peers  # decoded once
    assert ga.peers == dict(pairs) and list(ga.peers) == [p for p, _ in pairs]
    # the decoded map keeps its bytes: re-encoding reuses them
    assert IslandChanged("I1", "x", None, ga.peers).to_bytes() == generic_encode(
        "I1", "x", None, pairs
    )


def test_peers_cache_keeps_one_map_per_island_bounded() -> None:
    cache = _PeersCache(max_islands=2, min_bytes=100)

    def message(n: int, x: float = 1.0) -> tuple[bytes, int]:
        peers = IslandMembers([(f"0x{i:040x}", (x, 2.0, 3.0)) for i in range(n)])
        head = _core.codec_encode_island_changed("I1", "c", None, ())
        return head + peers.to_bytes(), len(head)

    data, at = message(4)
    first = cache.members("I1", data, at)
    assert cache.members("I1", data, at) is first
    assert cache.members("I1", b"\x00" + data, at + 1) is first  # compared by content
    moved = cache.members("I1", *message(4, x=5.0))  # same size, other positions
    assert moved is not first and moved["0x" + "0" * 40] == (5.0, 2.0, 3.0)
    assert cache.members("I1", *message(5)) is not moved
    cache.members("I2", data, at)
    cache.members("I3", data, at)  # forgets I1, the least recently decoded
    assert "I1" not in cache._maps and len(cache._maps) == 2
    small, small_at = message(1)
    assert cache.members("I4", small, small_at) is not cache.members("I4", small, small_at)
    assert cache.members("I4", small, small_at) == {"0x" + "0" * 40: (1.0, 2.0, 3.0)}


def test_island_members_is_a_read_only_mapping() -> None:
    m = IslandMembers({"0xb": (1.0, 2.0, 3.0), "0xa": (0.0, 0.0, 0.0)})
    assert list(m) == ["0xb", "0xa"] and len(m) == 2 and "0xa" in m and "0xc" not in m
    assert m["0xb"] == (1.0, 2.0, 3.0) and m.get("0xc") is None
    assert list(m.items()) == [("0xb", (1.0, 2.0, 3.0)), ("0xa", (0.0, 0.0, 0.0))]
    assert m == {"0xa": (0.0, 0.0, 0.0), "0xb": (1.0, 2.0, 3.0)}
    assert m == {"0xa": (0.0, 0.0, 0.0), "0xb": (1.0, 2.0, 3.0)}
    assert m == IslandMembers(m) and m != {"0xa": (0.0, 0.0, 0.0)} and m != [1]
    assert repr(m).startswith("IslandMembers({'0xb'")
    with pytest.raises(TypeError):
        m["0xc"] = (0.0, 0.0, 0.0)  # type: ignore[index]
    with pytest.raises(TypeError):
        hash(m)
    src = {"0xa": (1.0, 1.0, 1.0)}
    copy = IslandMembers(src)
    src["0xz"] = (0.0, 0.0, 0.0)
    assert list(copy) == ["0xa"]  # built from a copy


def test_core_shares_one_member_map_per_island() -> None:
    ws_room = WsRoomTransport("ws://127.0.0.1:1", "unused-secret")
    policy = RealmPolicy(Transports(ws_room, fixed=FixedTransport("offline:offline")))
    engine = Engine(join_distance=64.0, leave_distance=80.0, max_island_size=10)
    bus = InProcessPubSub()
    core = ArchipelagoCore(engine, bus, policy)
    got: list[IslandChanged] = []
    bus.subscribe("engine.peer.*.island_changed", lambda _s, m: got.append(m))
    n = 60
    pos = np.zeros((n, 3), np.float32)
    pos[:, 0] = np.arange(n) * 20.0  # a line of peers 20 m apart: islands of 10
    bus.publish_heartbeats(HeartbeatBatch([f"0x{i:040x}" for i in range(n)], pos, [UNSET] * n))
    core.tick()
    assert len(got) == n
    by_island: dict[str, set[int]] = {}
    for m in got:
        assert isinstance(m.peers, IslandMembers)
        # every member at the position it last reported (kept by the engine)
        assert m.peers == {a: (int(a, 16) * 20.0, 0.0, 0.0) for a in m.peers}
        by_island.setdefault(m.island_id, set()).add(id(m.peers))
    assert all(len(ids) == 1 for ids in by_island.values())
    assert len(by_island) == 6


# --- heartbeat batches -------------------------------------------------------------

rooms = st.one_of(st.just(UNSET), st.just(""), text)


@SETTINGS
@given(st.lists(st.tuples(position, rooms), max_size=30))
def test_heartbeat_batch_encoder_matches_to_bytes(items: list[Any]) -> None:
    pos = np.asarray([p for p, _ in items], dtype=np.float64).reshape(-1, 3).astype(np.float32)
    desired = [r for _, r in items]
    got = _core.codec_encode_heartbeats(pos, desired)
    want = [Heartbeat(tuple(p), r).to_bytes() for p, r in zip(pos.tolist(), desired, strict=True)]
    assert got == want


def test_heartbeat_batch_encoder_rejects_bad_input() -> None:
    with pytest.raises(EncodeError) as e:
        _core.codec_encode_heartbeats(np.zeros((2, 3), np.float32), [UNSET])
    assert e.value.code == "bad_type"
    with pytest.raises(EncodeError) as e:
        _core.codec_encode_heartbeats(np.zeros((1, 3), np.float32), [7])  # type: ignore[list-item]
    assert e.value.code == "bad_type"
    with pytest.raises(EncodeError) as e:  # None is not a desired room (UNSET is "absent")
        _core.codec_encode_heartbeats(np.zeros((1, 3), np.float32), [None])  # type: ignore[list-item]
    assert e.value.code == "bad_type"
    assert _core.codec_encode_heartbeats(np.zeros((0, 3), np.float32), []) == []


heartbeat_bytes = st.one_of(
    st.builds(lambda p, r: Heartbeat(to_f32(p), r).to_bytes(), position, rooms),
    st.builds(lambda r: codec.encode(codec.HEARTBEAT, {"desiredRoom": r}), text),  # no position
    st.binary(max_size=24),  # mostly undecodable
    st.builds(lambda p, cut: Heartbeat(to_f32(p)).to_bytes()[:cut], position, st.integers(0, 16)),
)


@SETTINGS
@given(st.lists(heartbeat_bytes, max_size=30))
def test_heartbeat_batch_decoder_matches_from_bytes(items: list[bytes]) -> None:
    positions, has_position, desired, errors = _core.codec_decode_heartbeats(items)
    assert positions.dtype == np.float32 and positions.shape == (len(items), 3)
    assert has_position.dtype == np.bool_ and has_position.shape == (len(items),)
    failed = dict(errors)
    for i, data in enumerate(items):
        try:
            want = Heartbeat.from_bytes(data)
        except DecodeError as e:
            assert i in failed and not has_position[i]
            assert failed[i].startswith(codec.HEARTBEAT + ": ") and str(e).startswith(
                codec.HEARTBEAT + ": "
            )
            continue
        assert i not in failed
        if want is None:
            assert not has_position[i]
            continue
        assert has_position[i]
        want32 = np.asarray(want.position, np.float32)
        nan = np.isnan(want32)
        assert (np.isnan(positions[i]) == nan).all()
        assert positions[i][~nan].tobytes() == want32[~nan].tobytes()  # bit for bit, +0 for -0
        assert (
            desired[i] is want.desired_room
            if want.desired_room is UNSET
            else desired[i] == (want.desired_room)
        )


# --- subjects ----------------------------------------------------------------------

tokens = st.one_of(
    st.from_regex(r"0x[0-9a-f]{40}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
    st.sampled_from(["", "*", ">", "0xAB", "I 1", "a.b", "0x" + "G" * 40, "I" * 129, "x\n"]),
    text,
)
shapes = st.sampled_from(
    [
        "peer.{}.heartbeat",
        "peer.{}.disconnect",
        "engine.peer.{}.island_changed",
        "engine.island.{}.peer_join",
        "engine.island.{}.peer_left",
        "engine.islands",
        "client-proto.peer.{}.heartbeat",
        "client-proto.{}.island_changed",
        "client-proto.island.{}.peer_join",
        "archipelago.islands",
        "{}",
        "peer.{}",
        "peer.{}.heartbeat.x",
    ]
)


def outcome(f: Any, subject: str) -> tuple[str, str]:
    try:
        return ("ok", f(subject))
    except SubjectError as e:
        return ("error", e.code)


@SETTINGS
@given(st.sampled_from(sorted(SCHEMES)), shapes, tokens)
def test_subject_fast_path_matches_the_scheme(name: str, shape: str, token: str) -> None:
    scheme = SCHEMES[name]
    fast = _Subjects(scheme)
    subject = shape.replace("{}", token)
    assert outcome(fast.to_wire, subject) == outcome(scheme.to_wire, subject)
    assert outcome(fast.from_wire, subject) == outcome(scheme.from_wire, subject)


def test_subject_fast_path_covers_the_hot_families() -> None:
    for scheme in SCHEMES.values():
        # the native scheme batches the hot families instead (no per-peer wire subject)
        assert len(_Subjects(scheme).families) == (0 if scheme.batched else 4), scheme.name


def test_subject_fast_path_leaves_other_mappings_to_the_scheme() -> None:
    # a wire form that does not carry the token verbatim: no fast path for it
    odd = Scheme(
        "odd",
        (
            Route("peer.{}.heartbeat", "heartbeats", ADDR),
            Route("engine.island.{}.peer_join", "x.{}.{}", ISLAND),  # token twice
            Route("engine.peer.{}.island_changed", "changed.{}", ADDR),
        ),
    )
    fast = _Subjects(odd)
    assert [f[0] for f in fast.families] == ["engine.peer."]
    a = "0x" + "ab" * 20
    assert fast.to_wire(f"peer.{a}.heartbeat") == odd.to_wire(f"peer.{a}.heartbeat")
    assert fast.to_wire(f"engine.peer.{a}.island_changed") == f"changed.{a}"
    assert fast.from_wire(f"changed.{a}") == f"engine.peer.{a}.island_changed"
    with pytest.raises(SubjectError):
        fast.to_wire("engine.peer.0xAB.island_changed")
    empty = _Subjects(Scheme("empty", (Route("engine.islands", "islands", None),)))
    assert empty.families == [] and empty.to_wire("engine.islands") == "islands"
    with pytest.raises(SubjectError):
        empty.to_wire(f"peer.{a}.heartbeat")


# --- over NATS ---------------------------------------------------------------------


def test_island_changed_over_nats_per_peer_headers_shared_map(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    async def body() -> None:
        pub = await NatsPubSub.connect([nats_server.url], subjects="workers")
        sub = await NatsPubSub.connect([nats_server.url], subjects="workers")
        try:
            got: list[tuple[str, IslandChanged]] = []
            sub.subscribe("engine.peer.*.island_changed", lambda s, m: got.append((s, m)))
            batches: list[HeartbeatBatch] = []
            sub.subscribe_heartbeats(batches.append)
            await sub.ready()
            addrs = [f"0x{i:040x}" for i in range(40)]
            shared = IslandMembers((a, (float(i), 0.0, 2.5)) for i, a in enumerate(addrs))
            for i, a in enumerate(addrs):  # per-peer connection strings (LiveKit identity)
                from_id = None if i % 2 else f"I{i}"
                pub.publish(
                    f"engine.peer.{a}.island_changed",
                    IslandChanged("I9", f"livekit:wss://h?access_token={a}", from_id, shared),
                )
            # heartbeats: one with no position and one undecodable are dropped
            pub.publish_heartbeats(
                HeartbeatBatch(addrs[:2], np.ones((2, 3), np.float32), [UNSET, "r"])
            )
            pub.publish(f"peer.{addrs[2]}.heartbeat", codec.encode(codec.HEARTBEAT, {}))
            await pub.flush()
            await pub.nc.publish(f"peer.{addrs[3]}.heartbeat", b"\xff")
            deadline = asyncio.get_running_loop().time() + 5
            while len(got) < 40 or sum(len(b) for b in batches) < 2:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert [s for s, _ in got] == [f"engine.peer.{a}.island_changed" for a in addrs]
            for i, (_s, m) in enumerate(got):
                assert m.conn_str == f"livekit:wss://h?access_token={addrs[i]}"
                assert m.from_island_id == (None if i % 2 else f"I{i}")
                assert m.peers == shared and m.peers is got[0][1].peers
            assert [a for b in batches for a in b.addresses] == addrs[:2]
            assert [r for b in batches for r in b.desired_rooms] == [UNSET, "r"]
            assert sub.m_dropped.get(reason="decode") == 1
        finally:
            await pub.aclose()
            await sub.aclose()

    asyncio.run(asyncio.wait_for(body(), 30))
