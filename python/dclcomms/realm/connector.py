"""Connector glue: C++ server events onto the pub/sub, its updates down the sockets.

The handshake, duplicate kicks, limits and close codes live in C++
(``dclcomms.ws.Server``); this module only moves data (archipelago.md 1.5):

* ``Heartbeats`` events -> one :meth:`PubSub.publish_heartbeats` batch;
* ``PeerConnected`` -> ``peer.<addr>.connect`` (the core resets the peer, which
  re-enters the engine with its first heartbeat and receives a fresh
  ``island_changed`` on the new session, also when it came from another
  connector); for an address that already had a session here (the old one was
  kicked, 4006) the disconnect of the replaced session is published first;
* ``PeerDisconnected`` -> ``peer.<addr>.disconnect``;
* ``engine.peer.<addr>.island_changed`` -> ``island_changed`` to that session (the
  connector remembers each session's island from these; a session without an
  island yet gets no ``from_island_id``);
* ``engine.island.<id>.peer_join|peer_left`` -> ``join_island``/``left_island`` to
  the connector's other sessions on that island, except sessions that received
  their ``island_changed`` for that island in the same tick (its member map is
  already current); ``engine.islands`` marks the end of a tick.

Over NATS with the C++ client (:meth:`dclcomms.nats.pubsub.NatsPubSub.relay_islands`)
the last three run in C++ instead, with the same rules: the messages are decoded on
libnats' thread and the bookkeeping (each session's island, who is on which island
here, who entered one this tick) lives with the sessions in the server's hub, on its
I/O thread, which writes each recipient's frame; nothing per message reaches Python.
Python then only reads the island of a session (:meth:`island_of_address`) and, for
listeners (the /bus gateway), still subscribes ``island_changed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dclcomms.metrics import Registry
from dclcomms.pubsub import (
    HeartbeatBatch,
    IslandChanged,
    IslandMembers,
    IslandPeer,
    PubSub,
    Subscription,
)

log = logging.getLogger("dclcomms.realm.connector")


class Connector:
    def __init__(self, server: Any, pubsub: PubSub, registry: Registry) -> None:
        self.server = server
        self.pubsub = pubsub
        self.sessions: set[str] = set()
        self.island_of: dict[str, str] = {}
        self.members: dict[str, set[str]] = {}
        self._fresh: dict[str, str] = {}  # address -> island it entered this tick
        # Told (address, island id) of every island_changed on the pub/sub, connected here
        # or not (the /bus gateway follows its sessions' islands with it).
        self.island_listeners: list[Callable[[str, str], None]] = []
        self.m_connects = registry.counter(
            "dcl_connector_sessions_started_total", "completed connector handshakes"
        )
        self.m_disconnects = registry.counter(
            "dcl_connector_sessions_ended_total", "connector sessions closed or replaced"
        )
        self.m_heartbeats = registry.counter(
            "dcl_connector_heartbeats_total", "accepted heartbeats published on the pub/sub"
        )
        self.m_sent = registry.counter(
            "dcl_connector_island_messages_total",
            "island_changed / join_island / left_island sent, by kind",
        )
        registry.gauge(
            "dcl_connector_sessions", "connected sessions", fn=lambda: len(self.sessions)
        )
        relay = getattr(pubsub, "relay_islands", None)
        self._relay: Any = relay(server) if relay is not None else None
        self._subs: list[Subscription] = []
        if self._relay is None:
            self._subs = [
                pubsub.subscribe("engine.peer.*.island_changed", self._on_island_changed),
                pubsub.subscribe("engine.island.*.peer_join", self._on_join),
                pubsub.subscribe("engine.island.*.peer_left", self._on_left),
                pubsub.subscribe("engine.islands", self._on_tick_end),
            ]
        else:
            self._relayed: dict[str, int] = {}
            registry.before_render(self._relay_metrics)

    @property
    def relayed_in_cpp(self) -> bool:
        """The island messages go to the sessions in C++ (NATS with the C++ client)."""
        return self._relay is not None

    def add_island_listener(self, listener: Callable[[str, str], None]) -> None:
        """``listener(address, island_id)`` for every ``island_changed`` on the pub/sub."""
        self.island_listeners.append(listener)
        if self._relay is not None and len(self.island_listeners) == 1:
            self._subs.append(
                self.pubsub.subscribe("engine.peer.*.island_changed", self._tell_listeners)
            )

    def island_of_address(self, address: str) -> str | None:
        """The island this connector last sent the session of ``address`` (None: none)."""
        if self._relay is not None:
            island: str | None = self.server.connector_island_of(address)
            return island
        return self.island_of.get(address)

    def close(self) -> None:
        for s in self._subs:
            s.unsubscribe()
        self._subs.clear()
        if self._relay is not None:
            self._relay.close()

    def _relay_metrics(self) -> None:
        """The relay's sends (counted by the server) into
        ``dcl_connector_island_messages_total``."""
        st = dict(self.server.stats().get("connector", {}))
        for kind in ("island_changed", "join_island", "left_island"):
            n = int(st.get(f"relayed_{kind}", 0))
            if d := n - self._relayed.get(kind, 0):
                self.m_sent.inc(d, kind=kind)
            self._relayed[kind] = n

    # --- server events -> pub/sub ------------------------------------------------

    def on_connected(self, address: str) -> None:
        if address in self.sessions:  # the previous session was replaced (kicked 4006)
            self._forget(address)
            self.pubsub.publish(f"peer.{address}.disconnect", None)
            self.m_disconnects.inc()
        self.sessions.add(address)
        self.pubsub.publish(f"peer.{address}.connect", None)
        self.m_connects.inc()

    def on_disconnected(self, address: str) -> None:
        if address not in self.sessions:
            return
        self.sessions.discard(address)
        self._forget(address)
        self.pubsub.publish(f"peer.{address}.disconnect", None)
        self.m_disconnects.inc()

    def on_heartbeats(self, batch: HeartbeatBatch) -> None:
        self.m_heartbeats.inc(len(batch))
        self.pubsub.publish_heartbeats(batch)

    def _forget(self, address: str) -> None:
        island = self.island_of.pop(address, None)
        if island is not None:
            m = self.members.get(island)
            if m is not None:
                m.discard(address)
                if not m:
                    del self.members[island]

    # --- pub/sub -> sockets ------------------------------------------------------

    def _tell_listeners(self, subject: str, msg: IslandChanged) -> None:
        addr = subject.split(".")[2]
        for listener in self.island_listeners:
            listener(addr, msg.island_id)

    def _on_island_changed(self, subject: str, msg: IslandChanged) -> None:
        self._tell_listeners(subject, msg)
        addr = subject.split(".")[2]
        if addr not in self.sessions:
            return  # not connected here (reference: dropped)
        # A session that has no island yet (new, or replacing a kicked one whose island
        # the engine still remembered in this tick) gets no ``from``: it never was there.
        from_island = msg.from_island_id if addr in self.island_of else None
        self._forget(addr)
        self.island_of[addr] = msg.island_id
        self.members.setdefault(msg.island_id, set()).add(addr)
        self._fresh[addr] = msg.island_id
        # One C++ call encodes the frame; the member entries stay encoded (shared by
        # every member of the island): copied, not re-encoded.
        peers = msg.peers
        entries = peers.to_bytes() if isinstance(peers, IslandMembers) else list(peers.items())
        self.server.send_island_changed(addr, msg.island_id, msg.conn_str, from_island, entries)
        self.m_sent.inc(kind="island_changed")

    def _on_tick_end(self, _subject: str, _msg: object) -> None:
        self._fresh.clear()

    def _on_join(self, _subject: str, msg: IslandPeer) -> None:
        for addr in self.members.get(msg.island_id, ()):
            if addr != msg.peer_id and self._fresh.get(addr) != msg.island_id:
                self.server.send_join_island(addr, msg.island_id, msg.peer_id)
                self.m_sent.inc(kind="join_island")

    def _on_left(self, _subject: str, msg: IslandPeer) -> None:
        for addr in self.members.get(msg.island_id, ()):
            if addr != msg.peer_id and self._fresh.get(addr) != msg.island_id:
                self.server.send_left_island(addr, msg.island_id, msg.peer_id)
                self.m_sent.inc(kind="left_island")


__all__ = ["Connector"]
