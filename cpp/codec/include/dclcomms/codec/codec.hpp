#pragma once
// The generic wire codec: any message type of proto/ <-> the protobuf JSON
// mapping as a Value tree (wire.md section 2, rules E1-E9).
//
// Encoding walks fields in declaration order (E8, the byte order of the
// reference ts-proto encoder): a oneof is written at its declaration position,
// rfc4 Packet writes its oneof member before protocol_version (11). Decoding
// accepts any field order, skips unknown fields, lets the last oneof member
// win and merges repeated occurrences of a singular sub-message.
//
// Thread-safety: all functions are safe to call concurrently; the descriptor
// registry is built once (thread-safe static) and never mutated afterwards.

#include <string>
#include <string_view>
#include <vector>

#include "dclcomms/codec/value.hpp"

namespace dclcomms::codec {

struct DecodeOptions {
  // Like protobuf's always_print_fields_with_no_presence: implicit-presence
  // fields of every decoded message are emitted with their defaults (0,
  // false, "", enum value 0, [] and {}); unset `optional` fields and unset
  // sub-messages stay absent.
  bool including_defaults = false;
};

// Encodes `message` (an Object; keys in lowerCamelCase or snake_case) as
// `type_name` (fully qualified, e.g. "decentraland.kernel.comms.v3.ClientPacket").
// Throws Error{UnknownType, "unknown_type"} for an unknown type and
// Error{Encode, code} (unknown_field, duplicate_field, bad_type, out_of_range,
// bad_base64, bad_enum, oneof_conflict, too_deep) for a value that does not
// fit the schema.
std::string encode(std::string_view type_name, const Value& message);

// Decodes `data` as `type_name` into an Object: lowerCamelCase keys,
// declaration order, 64-bit integers as decimal strings, bytes as base64,
// enums by name, floats as their shortest float32 decimal, NaN/Infinity as
// strings, maps as objects with string keys in wire order. Throws
// Error{Decode, code} (truncated, bad_varint, bad_length, bad_wire_type,
// bad_group, invalid_utf8, too_deep) with the type name in the message.
Value decode(std::string_view type_name, std::string_view data, const DecodeOptions& options = {});

// Fully qualified names of every message type the codec knows (sorted),
// including nested types but not synthetic map entries.
std::vector<std::string> message_types();

// The descriptor set the codec was built from (serialized FileDescriptorSet).
std::string_view descriptor_set() noexcept;

}  // namespace dclcomms::codec
