"""dclcomms: a wire-compatible comms backend for Decentraland-style worlds.

The compiled core lives in the private module ``dclcomms._core``; import the
public API from the ``dclcomms.*`` modules instead.
"""

from __future__ import annotations

from dclcomms import _core
from dclcomms.errors import (
    AuthError,
    BusError,
    ConfigError,
    DecodeError,
    EncodeError,
    Error,
    MessageBusError,
    SubjectError,
    TokenError,
    TransportError,
    UnknownTypeError,
)

__version__: str = _core.__version__

__all__ = [
    "AuthError",
    "BusError",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "Error",
    "MessageBusError",
    "SubjectError",
    "TokenError",
    "TransportError",
    "UnknownTypeError",
    "__version__",
]
