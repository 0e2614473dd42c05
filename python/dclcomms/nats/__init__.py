"""The realm's parts over NATS (archipelago.md §4, control-plane.md §3).

* :mod:`dclcomms.nats.pubsub` - :class:`NatsPubSub`, the
  :class:`~dclcomms.pubsub.PubSub` over a NATS connection;
* :mod:`dclcomms.nats.subjects` - the subject schemes (``workers``, ``v3``) and the
  checks of every token that goes into a subject;
* :mod:`dclcomms.nats.nodes` - transport-node announcements and the policy that
  balances islands across room nodes;
* :mod:`dclcomms.nats.processes` - the core, stats and HTTP-front services that
  ``dclcomms core|connector|stats`` and ``dclcomms realm --nats`` run (the commands
  are in :mod:`dclcomms.realm.cli`; imported by them, not here).

See docs/nats.md.
"""

from __future__ import annotations

from dclcomms.nats.nodes import NodeBalancedWsRooms, NodeRegistry, NodeStatus
from dclcomms.nats.pubsub import NatsPubSub
from dclcomms.nats.subjects import SCHEMES, Scheme, scheme

__all__ = [
    "SCHEMES",
    "NatsPubSub",
    "NodeBalancedWsRooms",
    "NodeRegistry",
    "NodeStatus",
    "Scheme",
    "scheme",
]
