"""dclcomms: a wire-compatible comms backend for Decentraland-style worlds.

The compiled core lives in the private module ``dclcomms._core``; import the
public API from the ``dclcomms.*`` modules instead. Modules are grouped by layer:
``auth``, ``codec``, ``archipelago`` (engine and core service), ``pubsub`` (the
internal publish/subscribe), ``nats``, ``config``, ``ws`` (the C++ server),
``realm``, ``msgbus`` (the client ``/bus``), ``client``, ``sim``. Import paths of
the earlier flat layout keep working (:mod:`dclcomms._moved`).
"""

from __future__ import annotations

from dclcomms import _core, _moved
from dclcomms.errors import (
    AuthError,
    BusError,
    ConfigError,
    DecodeError,
    EncodeError,
    Error,
    MessageBusError,
    PubSubError,
    SubjectError,
    TokenError,
    TransportError,
    UnknownTypeError,
)

__version__: str = _core.__version__

_moved.install()

__all__ = [
    "AuthError",
    "BusError",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "Error",
    "MessageBusError",
    "PubSubError",
    "SubjectError",
    "TokenError",
    "TransportError",
    "UnknownTypeError",
    "__version__",
]
