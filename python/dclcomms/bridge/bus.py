"""The /bus's global topics on the bridge (docs/bridge.md, docs/msgbus.md).

A server with a ``bus:<topic>`` scope subscribes ``{"kind":"bus","topic":T}`` and receives
what players publish on the /bus peer topic ``T`` (an operator allow-listed global topic,
``bus_global_topics``), with the player's address as sender; what it publishes reaches
every /bus session subscribed to ``T``, with the credential's identity as sender (never a
player's address: the message travels on ``client.bridge.<T>``, not on a player's
``client.peer.<addr>.<T>``).

:class:`PubSubBusLink` does this on the realm's :class:`~dclcomms.pubsub.PubSub`: the
realm's own (in-process or NATS) for the embedded bridge, a NATS one with the realm's
subject scheme for ``dclcomms bridge serve``.

Subjects (internal names; the NATS schemes map them like every ``client.`` subject):

=================================  ===================================================
``client.peer.<addr>.<T>``         a player's publish on ``T`` (the /bus's own subject)
``client.bridge.<T>``              a server's publish on ``T``: JSON
                                   ``{"from": identity, "data": base64}``
=================================  ===================================================
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from typing import Any

from dclcomms.clock import now_ms
from dclcomms.pubsub import AppData, PubSub, Subscription

log = logging.getLogger("dclcomms.bridge.bus")

BRIDGE_SUBJECT = "client.bridge."  # + topic
# (topic, sender, payload, server time ms)
BusHandler = Callable[[str, str, bytes, int], None]


def encode_envelope(identity: str, data: bytes) -> bytes:
    """The payload of ``client.bridge.<T>``."""
    return json.dumps(
        {"from": identity, "data": base64.b64encode(data).decode()}, separators=(",", ":")
    ).encode()


def decode_envelope(raw: bytes) -> tuple[str, bytes] | None:
    """``(identity, data)`` of a ``client.bridge.<T>`` payload, None when malformed."""
    try:
        d = json.loads(raw)
        sender, data = d["from"], base64.b64decode(d["data"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    if not isinstance(sender, str) or not sender:
        return None
    return sender, data


class PubSubBusLink:
    """Bus topics on a :class:`~dclcomms.pubsub.PubSub` (one pair of subscriptions per
    subscribed topic)."""

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self.on_message: BusHandler | None = None
        self.subs: dict[str, tuple[Subscription, Subscription]] = {}

    def subscribe(self, topic: str, on: bool) -> None:
        if on and topic not in self.subs:
            self.subs[topic] = (
                self.pubsub.subscribe(f"client.peer.*.{topic}", self._on_peer),
                self.pubsub.subscribe(f"{BRIDGE_SUBJECT}{topic}", self._on_bridge),
            )
        elif not on and topic in self.subs:
            for sub in self.subs.pop(topic):
                sub.unsubscribe()

    def publish(self, topic: str, identity: str, data: bytes) -> None:
        self.pubsub.publish(f"{BRIDGE_SUBJECT}{topic}", AppData(encode_envelope(identity, data)))

    def close(self) -> None:
        for topic in list(self.subs):
            self.subscribe(topic, False)

    def _on_peer(self, subject: str, msg: Any) -> None:
        t = subject.split(".")  # client.peer.<addr>.<topic...>
        if len(t) < 4 or not isinstance(msg, AppData) or self.on_message is None:
            return
        self.on_message(".".join(t[3:]), t[2], msg.payload, now_ms())

    def _on_bridge(self, subject: str, msg: Any) -> None:
        if not isinstance(msg, AppData) or self.on_message is None:
            return
        env = decode_envelope(msg.payload)
        if env is None:
            log.warning("bad client.bridge message", extra={"subject": subject})
            return
        self.on_message(subject[len(BRIDGE_SUBJECT) :], env[0], env[1], now_ms())


__all__ = ["BRIDGE_SUBJECT", "BusHandler", "PubSubBusLink", "decode_envelope", "encode_envelope"]
