"""The codec's schema seen through the protobuf Python runtime.

Built from ``dclcomms.codec.descriptor_set()``, so tests know field presence,
types and names exactly as the codec does, and can use the protobuf runtime's
own parser and JSON printer as an independent oracle (test_codec.py and
test_codec_properties.py import the helpers). The tests at the end check the
embedded schema against the traps listed in spec/wire.md section 8.
"""

from __future__ import annotations

from dclcomms import codec
from tests.helpers.codec_schema import (
    descriptor,
    is_map,
    real_oneof,
)

# --- the embedded schema against spec/wire.md (section 8, "field-number traps") ---------


def _numbers(type_name: str) -> list[tuple[str, int]]:
    """(name, number) in declaration order: the encoder's write order (E8)."""
    return [(f.name, f.number) for f in descriptor(type_name).fields]


def test_rfc4_packet_protocol_version_is_11_after_the_oneof() -> None:
    fields = _numbers("decentraland.kernel.comms.rfc4.Packet")
    assert fields[-1] == ("protocol_version", 11)
    assert dict(fields)["movement_compressed"] == 12
    members = [f for f in descriptor("decentraland.kernel.comms.rfc4.Packet").fields]
    assert [real_oneof(f) for f in members[:-1]] == ["message"] * (len(members) - 1)
    assert real_oneof(members[-1]) is None


def test_rfc4_profile_request_declares_address_4_before_version_3() -> None:
    fields = _numbers("decentraland.kernel.comms.rfc4.ProfileRequest")
    assert fields == [("address", 4), ("profile_version", 3)]


def test_rfc4_position_skips_field_2() -> None:
    numbers = [n for _, n in _numbers("decentraland.kernel.comms.rfc4.Position")]
    assert numbers == [1, 3, 4, 5, 6, 7, 8, 9]


def test_rfc4_movement_declaration_order() -> None:
    numbers = [n for _, n in _numbers("decentraland.kernel.comms.rfc4.Movement")]
    assert numbers[numbers.index(11) + 1] == 24
    assert numbers[numbers.index(15) + 1] == 23


def test_presence_of_the_hot_fields() -> None:
    hb = descriptor("decentraland.kernel.comms.v3.Heartbeat")
    assert hb.fields_by_name["position"].has_presence  # singular message
    assert hb.fields_by_name["desired_room"].has_presence  # optional string
    ic = descriptor("decentraland.kernel.comms.v3.IslandChangedMessage")
    assert ic.fields_by_name["from_island_id"].has_presence
    assert not ic.fields_by_name["island_id"].has_presence
    assert is_map(ic.fields_by_name["peers"])
    kicked = descriptor("decentraland.kernel.comms.v3.KickedMessage")
    assert [v.name for v in kicked.fields_by_name["reason"].enum_type.values] == ["KR_NEW_SESSION"]


def test_descriptor_set_names_match_message_types() -> None:
    names = set(codec.message_types())
    for name in names:
        assert descriptor(name).full_name == name
