"""The P2P mesh logic without WebRTC: envelopes, topology, duplicates, order, relaying.

A simulated mesh of :class:`MeshRouter` objects (links are Python queues, delivery
order shuffled with a seeded RNG) checks the properties the WebRTC mesh relies on:
every member receives every reliable packet once and in order, on any connected
topology, also when a member disappears; unreliable packets reach everyone once
over the source's tree.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from dclcomms.client.p2p import (
    F_RELIABLE,
    HEADER_BYTES,
    MeshRouter,
    P2POptions,
    _split_candidates,
    bfs_parents,
    decode_envelope,
    decode_links,
    encode_envelope,
    encode_links,
    relayed,
    ring_neighbours,
)


def addr(i: int) -> str:
    return f"0x{i:040x}"


def test_envelope_round_trip_and_rejects() -> None:
    a = addr(0xABC)
    data = encode_envelope(a, 7, 2**32 - 1, b"rfc4", flags=F_RELIABLE, ttl=5)
    assert len(data) == HEADER_BYTES + 4
    env = decode_envelope(data)
    assert (env.src, env.instance, env.seq, env.payload, env.hops, env.ttl) == (
        a,
        7,
        2**32 - 1,
        b"rfc4",
        0,
        5,
    )
    assert env.reliable and not env.control
    assert decode_envelope(relayed(data)).hops == 1
    for bad in (
        b"",
        data[: HEADER_BYTES - 1],
        b"\x02" + data[1:],  # version
        data[:1] + b"\x80" + data[2:],  # unknown flag
        data[:2] + b"\x05" + data[3:],  # hops >= ttl
    ):
        with pytest.raises(ValueError):
            decode_envelope(bad)
    peers = {addr(1), addr(2)}
    assert decode_links(encode_links(peers)) == peers
    with pytest.raises(ValueError):
        decode_links(b"\x00" * 21)


def test_ring_neighbours() -> None:
    members = [addr(i) for i in range(8)]
    assert ring_neighbours(addr(0), members, 4) == [addr(1), addr(7), addr(2), addr(6)]
    assert ring_neighbours(addr(3), members, 4) == [addr(4), addr(2), addr(5), addr(1)]
    assert sorted(ring_neighbours(addr(0), members[:4], 4)) == members[1:4]  # everyone
    assert ring_neighbours(addr(0), [addr(0)], 4) == []
    # symmetric: i wants j iff j wants i (target even, same view of the members)
    for n in range(2, 12):
        ms = [addr(i) for i in range(n)]
        want = {m: set(ring_neighbours(m, ms, 4)) for m in ms}
        assert all((a in want[b]) == (b in want[a]) for a in ms for b in ms if a != b)
        assert all(len(w) == min(4, n - 1) for w in want.values())


def test_bfs_parents_lowest_address_first() -> None:
    adj = {"a": {"b", "c"}, "b": {"a", "d"}, "c": {"a", "d"}, "d": {"b", "c"}}
    assert bfs_parents("a", adj) == {"b": "a", "c": "a", "d": "b"}


def test_split_candidates_for_trickle() -> None:
    sdp = "\r\n".join(
        [
            "v=0",
            "m=application 9 DTLS/SCTP 5000",
            "a=mid:0",
            "a=ice-ufrag:UFRG",
            "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
            "a=candidate:2 1 udp 2130706431 127.0.0.1 5001 typ host",
            "a=end-of-candidates",
            "a=sctp-port:5000",
            "",
        ]
    )
    rest, cands = _split_candidates(sdp)
    assert "candidate" not in rest and "a=sctp-port:5000" in rest
    assert cands == [
        {
            "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
            "sdpMLineIndex": 0,
            "sdpMid": "0",
            "usernameFragment": "UFRG",
        },
        {
            "candidate": "candidate:2 1 udp 2130706431 127.0.0.1 5001 typ host",
            "sdpMLineIndex": 0,
            "sdpMid": "0",
            "usernameFragment": "UFRG",
        },
    ]


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        P2POptions(target_connections=7, max_connections=6)
    with pytest.raises(ValueError):
        P2POptions(ttl=1)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_router_duplicates_order_and_gaps() -> None:
    clock = Clock()
    me, src = addr(1), addr(2)
    r = MeshRouter(me, 1, reorder_timeout_s=2.0, clock=clock)
    s = MeshRouter(src, 99, clock=clock)
    p = [s.originate(f"r{i}".encode(), reliable=True) for i in range(5)]
    d, _ = r.receive(p[0], src, [src])
    assert [x.payload for x in d] == [b"r0"]
    assert r.receive(p[0], src, [src]) == ([], [])  # duplicate
    assert r.receive(p[2], src, [src]) == ([], [])  # held: r1 missing
    d, _ = r.receive(p[1], src, [src])
    assert [x.payload for x in d] == [b"r1", b"r2"]
    assert r.receive(p[4], src, [src]) == ([], [])  # r3 lost for good
    clock.t = 1.0
    assert r.expire() == ([], [])
    clock.t = 2.5
    d, _ = r.expire()
    assert [x.payload for x in d] == [b"r4"] and r.counters["reliable_gaps"] == 1
    assert r.receive(p[3], src, [src]) == ([], [])  # too late now
    # unreliable: any order, once each, nothing older than the window
    u = [s.originate(f"u{i}".encode(), reliable=False) for i in range(70)]
    got = [x.payload for i in (5, 3, 4, 3, 69) for x in r.receive(u[i], src, [src])[0]]
    assert got == [b"u5", b"u3", b"u4", b"u69"]
    assert r.receive(u[4], src, [src])[0] == []  # outside the 64-packet window
    assert r.counters["stale"] == 1


def _mesh(n: int, edges: set[tuple[int, int]], seed: int) -> None:
    """Flood n routers' packets over ``edges`` with shuffled delivery; check the rules."""
    rng = random.Random(seed)
    ids = [addr(0x100 + i) for i in range(n)]
    routers = {a: MeshRouter(a, rng.getrandbits(32), ttl=10) for a in ids}
    nbrs: dict[str, set[str]] = defaultdict(set)
    for i, j in edges:
        nbrs[ids[i]].add(ids[j])
        nbrs[ids[j]].add(ids[i])
    # per-link FIFO queues for reliable (ordered channels), a bag for unreliable
    fifo: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    bag: list[tuple[str, str, bytes]] = []
    got: dict[str, list[tuple[str, bytes, bool]]] = defaultdict(list)

    def send(frm: str, packet: bytes, to: list[str], reliable: bool) -> None:
        for t in to:
            if reliable:
                fifo[(frm, t)].append(packet)
            else:
                bag.append((frm, t, packet))

    def pump() -> None:
        while any(fifo.values()) or bag:
            keys = [k for k, q in fifo.items() if q]
            if bag and (not keys or rng.random() < 0.3):
                frm, to, packet = bag.pop(rng.randrange(len(bag)))
            else:
                frm, to = rng.choice(keys)
                packet = fifo[(frm, to)].pop(0)
            if to not in routers:
                continue
            deliveries, relays = routers[to].receive(packet, frm, nbrs[to])
            got[to] += [(d.src, d.payload, d.reliable) for d in deliveries]
            for data, peers, reliable in relays:
                send(to, data, peers, reliable)

    for a in ids:  # everyone announces its connections first
        send(a, routers[a].set_own_links(nbrs[a]), sorted(nbrs[a]), True)
    pump()
    for k in range(20):
        for a in ids:
            send(a, routers[a].originate(f"{a}:{k}".encode(), reliable=True), sorted(nbrs[a]), True)
            u = routers[a].originate(f"u{a}:{k}".encode(), reliable=False)
            send(a, u, sorted(nbrs[a]), False)
        if k % 3 == 0:
            pump()
    pump()
    for a in ids:
        for b in ids:
            if a == b:
                continue
            rel = [p for s, p, r in got[a] if s == b and r]
            assert rel == [f"{b}:{k}".encode() for k in range(20)], (a, b)  # all, in order
            unrel = sorted(p for s, p, r in got[a] if s == b and not r)
            assert unrel == sorted(f"u{b}:{k}".encode() for k in range(20)), (a, b)  # once each


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("n", [2, 3, 6, 8, 12])
def test_simulated_ring_mesh_delivers_everything_once_and_in_order(n: int, seed: int) -> None:
    ids = [addr(0x100 + i) for i in range(n)]
    edges = {
        tuple(sorted((i, ids.index(p))))
        for i, a in enumerate(ids)
        for p in ring_neighbours(a, ids, 4)
    }
    _mesh(n, edges, seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [4, 5])
def test_simulated_line_and_random_meshes(seed: int) -> None:
    _mesh(6, {(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)}, seed)  # a line: 5 hops end to end
    rng = random.Random(seed)
    edges = {(i, i + 1) for i in range(9)} | {
        tuple(sorted(rng.sample(range(10), 2))) for _ in range(8)
    }
    _mesh(10, edges, seed)  # type: ignore[arg-type]


def test_ttl_bounds_relaying() -> None:
    a, b, c = addr(1), addr(2), addr(3)
    ra = MeshRouter(a, 1, ttl=2)
    rb = MeshRouter(b, 2, ttl=2)
    packet = ra.originate(b"x", reliable=True)
    _, relays = rb.receive(packet, a, [a, c])
    assert relays and decode_envelope(relays[0][0]).hops == 1  # 1 + 1 < 2? no: hop 1 of 2
    _, relays2 = MeshRouter(c, 3, ttl=2).receive(relays[0][0], b, [b, addr(4)])
    assert relays2 == []  # hops + 1 == ttl: stops here
