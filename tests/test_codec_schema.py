"""The codec's schema seen through the protobuf Python runtime.

Built from ``dclcomms.codec.descriptor_set()``, so tests know field presence,
types and names exactly as the codec does, and can use the protobuf runtime's
own parser and JSON printer as an independent oracle (test_codec.py and
test_codec_properties.py import the helpers). The tests at the end check the
embedded schema against the traps listed in spec/wire.md section 8.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from dclcomms import codec


@functools.cache
def pool() -> descriptor_pool.DescriptorPool:
    fds = descriptor_pb2.FileDescriptorSet.FromString(codec.descriptor_set())
    p = descriptor_pool.DescriptorPool()
    for f in fds.file:
        p.Add(f)
    return p


def descriptor(type_name: str) -> Descriptor:
    return pool().FindMessageTypeByName(type_name)


def message_class(type_name: str) -> type[Message]:
    return message_factory.GetMessageClass(descriptor(type_name))


def is_map(f: FieldDescriptor) -> bool:
    return (
        f.type == FieldDescriptor.TYPE_MESSAGE
        and f.is_repeated
        and f.message_type.GetOptions().map_entry
    )


def real_oneof(f: FieldDescriptor) -> str | None:
    """The name of f's oneof, or None (proto3 `optional` synthetic oneofs excluded)."""
    o = f.containing_oneof
    if o is None or (len(o.fields) == 1 and o.name == "_" + f.name):
        return None
    return str(o.name)


def implicit_default(f: FieldDescriptor, value: Any) -> bool:
    """True when value is the default of an implicit-presence scalar field."""
    if f.has_presence or f.is_repeated or f.type == FieldDescriptor.TYPE_MESSAGE:
        return False
    if f.type == FieldDescriptor.TYPE_ENUM:
        return value in (0, f.enum_type.values_by_number[0].name)
    if f.cpp_type in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64):
        return value in (0, "0")
    return value in (0, 0.0, False, "")


def strip_implicit_defaults(type_name: str, message: dict[str, Any]) -> dict[str, Any]:
    """The dict decode() returns for a message written with explicit defaults."""
    return _strip(descriptor(type_name), message)


def _strip(d: Descriptor, message: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in message.items():
        f = d.fields_by_camelcase_name.get(key) or d.fields_by_name[key]
        if is_map(f):
            if not value:
                continue
            vf = f.message_type.fields_by_name["value"]
            if vf.type == FieldDescriptor.TYPE_MESSAGE:
                value = {k: _strip(vf.message_type, v) for k, v in value.items()}
        elif f.is_repeated:
            if not value:
                continue
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                value = [_strip(f.message_type, v) for v in value]
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            value = _strip(f.message_type, value)
        elif implicit_default(f, value):
            continue
        out[f.json_name] = value
    return out


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
