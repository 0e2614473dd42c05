"""The wire codec: protobuf messages of the Decentraland comms protocol <-> dicts.

Dicts follow the protobuf JSON mapping (``docs/protocol.md``): lowerCamelCase
keys (snake_case accepted on input), 64-bit integers as decimal strings, bytes
as base64 strings (``bytes`` accepted on input), enums by name, floats as their
shortest float32 decimal, ``"NaN"``/``"Infinity"``/``"-Infinity"`` for
non-finite numbers, maps as dicts with string keys in wire order. Encoding
writes fields in declaration order, byte-compatible with the reference
(ts-proto) encoder.

>>> from dclcomms import codec
>>> frame = codec.encode("decentraland.kernel.comms.v3.ServerPacket", {"kicked": {}})
>>> frame.hex()
'3200'
>>> codec.decode("decentraland.kernel.comms.v3.ServerPacket", frame)
{'kicked': {}}

All functions are thread-safe and release the GIL while encoding or decoding
inputs of 2 KiB or more (below that, releasing costs more than it frees).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any, Final

from dclcomms import _core

__all__ = [
    "CLIENT_PACKET",
    "HEARTBEAT",
    "ISLAND_CHANGED",
    "RFC4_PACKET",
    "SERVER_PACKET",
    "WS_PACKET",
    "decode",
    "decode_heartbeat",
    "demo_main",
    "descriptor_set",
    "encode",
    "encode_island_changed",
    "message_types",
]

BytesLike = bytes | bytearray | memoryview

# The frame types by role (wire.md): archipelago client->server and
# server->client frames, the NATS payloads, RFC-5 room frames, RFC-4 peer payloads.
CLIENT_PACKET: Final = "decentraland.kernel.comms.v3.ClientPacket"
SERVER_PACKET: Final = "decentraland.kernel.comms.v3.ServerPacket"
HEARTBEAT: Final = "decentraland.kernel.comms.v3.Heartbeat"
ISLAND_CHANGED: Final = "decentraland.kernel.comms.v3.IslandChangedMessage"
WS_PACKET: Final = "decentraland.kernel.comms.rfc5.WsPacket"
RFC4_PACKET: Final = "decentraland.kernel.comms.rfc4.Packet"


def encode(type_name: str, message: Mapping[str, Any]) -> bytes:
    """Encode ``message`` as the fully qualified protobuf type ``type_name``.

    Explicit default values are accepted and write nothing (rule E9); ``None``
    means "absent". Raises :class:`dclcomms.EncodeError` (``.code`` one of
    ``unknown_field``, ``duplicate_field``, ``bad_type``, ``out_of_range``,
    ``bad_base64``, ``bad_enum``, ``oneof_conflict``, ``too_deep``) and
    :class:`dclcomms.UnknownTypeError` for an unknown type name.
    """
    if not isinstance(message, dict) and isinstance(message, Mapping):
        message = dict(message)
    return _core.codec_encode(type_name, message)


def decode(type_name: str, data: BytesLike, *, including_defaults: bool = False) -> dict[str, Any]:
    """Decode ``data`` as the fully qualified protobuf type ``type_name``.

    Implicit-presence fields holding their default are omitted unless
    ``including_defaults`` is true (then they are printed with their default,
    like protobuf's ``always_print_fields_with_no_presence``; unset optional
    fields and sub-messages stay absent). Raises :class:`dclcomms.DecodeError`
    (a ``ValueError``; ``.code`` one of ``truncated``, ``bad_varint``,
    ``bad_length``, ``bad_wire_type``, ``bad_group``, ``invalid_utf8``,
    ``too_deep``) and :class:`dclcomms.UnknownTypeError`.
    """
    return _core.codec_decode(type_name, _as_bytes(data), including_defaults)


def message_types() -> list[str]:
    """Fully qualified names of every message type the codec knows (sorted)."""
    return _core.codec_message_types()


def descriptor_set() -> bytes:
    """The serialized ``google.protobuf.FileDescriptorSet`` of the codec's schema."""
    return _core.codec_descriptor_set()


def encode_island_changed(
    island_id: str,
    conn_str: str,
    from_island_id: str | None,
    peers: Sequence[tuple[str, tuple[float, float, float]]],
    *,
    server_packet: bool = False,
) -> bytes:
    """Fast path for ``IslandChangedMessage`` (the NATS payload).

    ``peers`` is a sequence of ``(peer_id, (x, y, z))`` in island member order;
    positions are stored as float32. With ``server_packet=True`` the result is
    the ``ServerPacket{island_changed}`` WebSocket frame instead. Same bytes as
    :func:`encode` of the equivalent dict. Raises :class:`dclcomms.EncodeError`
    (``bad_type``, ``out_of_range``) for malformed peers.
    """
    return _core.codec_encode_island_changed(
        island_id, conn_str, from_island_id, peers, server_packet
    )


def decode_heartbeat(data: BytesLike) -> dict[str, Any]:
    """Fast path for a bare ``Heartbeat``; same result as :func:`decode`."""
    return _core.codec_decode_heartbeat(_as_bytes(data))


def _as_bytes(data: BytesLike) -> bytes:
    # The compiled decoder reads bytes without the GIL: give it an immutable copy.
    return data if isinstance(data, bytes) else bytes(data)


V3 = "decentraland.kernel.comms.v3."
RFC5 = "decentraland.kernel.comms.rfc5."
RFC4 = "decentraland.kernel.comms.rfc4."

# The messages of the wire conformance vectors, one per kind of frame.
DEMO_MESSAGES: list[tuple[str, dict[str, Any]]] = [
    (
        V3 + "ClientPacket",
        {"challengeRequest": {"address": "0x667c7897292DE5Ff9A1066eBd83cd96b902fD928"}},
    ),
    (V3 + "ServerPacket", {"challengeResponse": {"challengeToSign": "dcl-0.eteoa4r566"}}),
    (V3 + "ServerPacket", {"welcome": {"peerId": "0x667c7897292de5ff9a1066ebd83cd96b902fd928"}}),
    (V3 + "ClientPacket", {"heartbeat": {"position": {"x": 16.5, "z": -32.25}}}),
    (V3 + "Heartbeat", {"position": {"x": 1.0, "y": 2.0, "z": 3.0}}),
    (
        V3 + "ServerPacket",
        {
            "islandChanged": {
                "islandId": "I1",
                "connStr": "livekit:wss://livekit.example?access_token=t",
                "peers": {"0x1111111111111111111111111111111111111111": {"x": 8.0, "z": 8.0}},
            }
        },
    ),
    (V3 + "ServerPacket", {"kicked": {}}),
    (
        RFC5 + "WsPacket",
        {
            "welcomeMessage": {
                "alias": 7,
                "peerIdentities": {
                    "3": "0x3333333333333333333333333333333333333333",
                    "5": "0x5555555555555555555555555555555555555555",
                },
            }
        },
    ),
    (
        RFC5 + "WsPacket",
        {
            "peerUpdateMessage": {
                "fromAlias": 7,
                "body": "KhAKBWhlbGxvEQAA4M61cnlCWGQ=",
                "unreliable": True,
            }
        },
    ),
    (RFC4 + "Packet", {"profileVersion": {"profileVersion": 3}, "protocolVersion": 100}),
    (
        RFC4 + "Packet",
        {
            "profileRequest": {
                "address": "0x667c7897292de5ff9a1066ebd83cd96b902fd928",
                "profileVersion": 3,
            }
        },
    ),
    (RFC4 + "Packet", {"chat": {"message": "hello", "timestamp": 1748779200000.0}}),
]


def demo_main(argv: Sequence[str]) -> int:
    """``dclcomms codec-demo``: encode and decode the conformance messages."""
    parser = argparse.ArgumentParser(
        prog="dclcomms codec-demo",
        description="Encode and decode one message of each conformance frame kind and print "
        "a table (type, size, hex prefix, round trip).",
    )
    parser.add_argument("--width", type=int, default=16, help="hex prefix length in bytes")
    ns = parser.parse_args(list(argv))
    if ns.width < 1:
        parser.error("--width must be at least 1")
    print(f"{'type':<44} {'bytes':>5}  {'hex prefix':<{2 * ns.width + 3}} round-trip")
    failures = 0
    for type_name, message in DEMO_MESSAGES:
        data = encode(type_name, message)
        ok = (
            decode(type_name, data) == message
            and encode(type_name, decode(type_name, data)) == data
        )
        failures += not ok
        prefix = data[: ns.width].hex() + ("..." if len(data) > ns.width else "")
        short = type_name.removeprefix("decentraland.kernel.comms.")
        print(f"{short:<44} {len(data):>5}  {prefix:<{2 * ns.width + 3}} {'ok' if ok else 'FAIL'}")
    return 1 if failures else 0
