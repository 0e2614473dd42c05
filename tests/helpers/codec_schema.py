"""The compiled schema seen through the protobuf runtime (descriptors, implicit defaults)."""

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
