"""The dclcomms error family: every error carries a stable ``code``.

Codes are the contract: the same strings appear in WebSocket close reasons,
HTTP error bodies (``{"error": ..., "code": ...}``) and metrics. ``CODES``
lists every code the package emits, by error class; a test keeps it honest.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every dclcomms error."""

    code: str

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), str(self), self.code))


def _rebuild(cls: type[Error], message: str, code: str) -> Error:
    return cls(message, code=code)


class DecodeError(Error, ValueError):
    """Bytes that are not a valid message of the requested type."""


class EncodeError(Error, ValueError):
    """A message value (dict) that cannot be encoded as the requested type."""


class UnknownTypeError(Error, KeyError):
    """A fully qualified message type name the codec does not know."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class AuthError(Error):
    """An identity could not be proven (auth chain, signature, signed fetch)."""


class TokenError(Error, ValueError):
    """A JWT that is malformed, forged, expired or otherwise rejected."""


class ConfigError(Error, ValueError):
    """Invalid parameters or configuration.

    ``field`` names the offending setting or parameter (e.g. ``"rooms_max_users"``) when
    the error is about one; ``None`` otherwise (an unreadable file, an unknown key).
    """

    field: str | None

    def __init__(self, message: str, *, code: str, field: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_config, (type(self), str(self), self.code, self.field))


def _rebuild_config(
    cls: type[ConfigError], message: str, code: str, field: str | None
) -> ConfigError:
    return cls(message, code=code, field=field)


class TransportError(Error):
    """A client transport (connection string, adapter, connector session) failed.

    Raised by :mod:`dclcomms.client`; ``close_code`` is the WebSocket close code
    when the server closed the socket (else ``None``); ``status`` the HTTP status
    of a refused HTTP call (the gatekeeper's, else ``None``).
    """

    close_code: int | None = None
    status: int | None = None


class SubjectError(Error, ValueError):
    """A token that may not go into a NATS subject (dclcomms.nats.subjects)."""


class PubSubError(Error):
    """The NATS pub/sub cannot connect or is closed (dclcomms.nats.pubsub)."""


BusError = PubSubError  # its old name


class MessageBusError(Error):
    """A /bus frame refused (dclcomms.msgbus); sent to the client as an ``error`` frame."""


class BridgeError(Error):
    """A /bridge credential or frame refused (dclcomms.bridge; control-plane.md 5): sent to
    the server as an ``error`` frame, raised by :class:`dclcomms.bridge.BridgeClient`."""


# Every code, by class. Keep in sync with the C++ sources (a test checks that
# every code raised from C++ appears here).
CODES: dict[type[Error], frozenset[str]] = {
    DecodeError: frozenset(
        {
            "truncated",
            "bad_varint",
            "bad_length",
            "bad_wire_type",
            "invalid_utf8",
            "too_deep",
            "bad_group",
        }
    ),
    EncodeError: frozenset(
        {
            "unknown_field",
            "duplicate_field",
            "bad_type",
            "out_of_range",
            "bad_base64",
            "bad_enum",
            "oneof_conflict",
            "too_deep",
        }
    ),
    UnknownTypeError: frozenset({"unknown_type"}),
    AuthError: frozenset(
        {
            # Raised by helpers (recover_address, Identity, to_checksum_address).
            "bad_signature_encoding",
            "bad_signature_length",
            "bad_recovery_id",
            "signature_range",
            "signer_mismatch",
            "bad_address",
            "bad_private_key",
            # AuthResult.code values of verify_auth_chain / verify_signed_fetch
            # (authchain.md sections 4, 5, 7, 8; docs/auth.md).
            "json_invalid",
            "schema_invalid",
            "malformed_chain",
            "ephemeral_payload_invalid",
            "ephemeral_expired",
            "final_authority_mismatch",
            "eip1271_no_provider",
            "eip1271_invalid",
            "eip1271_rpc_error",
            "internal_error",
            "signed_fetch_malformed",
            "signed_fetch_expired",
            "signed_fetch_future",
            "signed_fetch_body_mismatch",
            "replayed",
        }
    ),
    TokenError: frozenset(
        {
            "malformed",
            "bad_header",
            "unsupported_alg",
            "bad_signature",
            "bad_claims",
            "expired",
            "not_yet_valid",
            "bad_issuer",
            "missing_exp",
        }
    ),
    ConfigError: frozenset(
        {
            "invalid_parameter",
            # archipelago: invalid_position (non-finite), invalid_peer_id (empty / not a str)
            "invalid_position",
            "invalid_peer_id",
            # realm configuration (dclcomms.config, dclcomms.policy)
            "unknown_key",
            "bad_value",
            "bad_toml",
            "config_not_found",
            "bad_policy",
            # ws server (dclcomms.ws.Server)
            "already_started",
            "invalid_host",
            "bind_failed",
            "eventfd_failed",
        }
    ),
    TransportError: frozenset(
        {
            # dclcomms.client: connection strings and adapters
            "bad_connection_string",
            "unknown_protocol",
            "unsupported_protocol",
            "connect_failed",
            "handshake_failed",
            "handshake_timeout",
            "livekit_unreachable",
            "livekit_unsupported",
            "not_connected",
            # a frame a connected transport or connector cannot make sense of
            "protocol_error",
            # dclcomms.client.CommunicationsDirector: the realm and its connector
            "about_failed",
            "connector_failed",
            # the /bus client and the P2P adapter (dclcomms.client.msgbus, .p2p)
            "bus_failed",
            "bus_unavailable",
            "p2p_unavailable",
            # scene rooms: the gatekeeper's answers (dclcomms.client.gatekeeper)
            "scene_rejected",
            "scene_denied",
            "scene_banned",
            "gatekeeper_unavailable",
            "gatekeeper_failed",
        }
    ),
    # NATS subjects and bus (dclcomms.nats.subjects, dclcomms.nats.pubsub)
    SubjectError: frozenset(
        {
            "bad_address",
            "bad_island_id",
            "bad_subject",
            "bad_node_id",
            "bad_topic",
            "reserved_topic",
        }
    ),
    PubSubError: frozenset({"nats_unavailable", "bus_closed"}),
    # the /bus message-bus WebSocket (dclcomms.msgbus; control-plane.md 4)
    MessageBusError: frozenset(
        {
            "bad_frame",
            "bad_topic",
            "reserved_topic",
            "forbidden_topic",
            "bad_payload",
            "payload_too_large",
            "too_many_subscriptions",
            "not_subscribed",
            # P2P signalling (dclcomms.signalling; transports.md 4)
            "not_same_island",
            "bad_signal",
            "rate_limited",
            # the /bus client (dclcomms.client.msgbus): the session is gone
            "bus_closed",
        }
    ),
    # the third-party server bridge (dclcomms.bridge; control-plane.md 5, docs/bridge.md)
    BridgeError: frozenset(
        {
            "bad_frame",
            "not_authenticated",
            "already_authenticated",
            "unknown_key",
            "key_expired",
            "key_revoked",
            "invalid_signed_fetch",
            "forbidden_scope",
            "bad_topic",
            "bad_scope",
            "read_only",
            "not_subscribed",
            "bad_payload",
            "payload_too_large",
            "rate_limited",
            "too_many_subscriptions",
            "resolver_unavailable",
            "key_not_found",
            # /bus global topics on the bridge (kind "bus")
            "reserved_topic",
            "bus_unavailable",
            # the client (BridgeClient): connection and session
            "connect_failed",
            "closed",
        }
    ),
}
