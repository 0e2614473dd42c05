#pragma once
// Shared helpers for the codec GoogleTest suite: conformance vectors, JSON ->
// Value, hex, and a seeded random message generator driven by descriptors.

#include <google/protobuf/descriptor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "dclcomms/codec/value.hpp"

namespace dclcomms::codec::testing {

struct Vector {
  std::string type_name;  // fully qualified
  std::string description;
  nlohmann::json json;
  std::string bytes;
};

std::vector<Vector> load_vectors();

Value from_json(const nlohmann::json& j);
std::string unhex(std::string_view hex);
std::string hex(std::string_view bytes);

// A random message of `d` as a Value in the decoder's canonical form (so
// decode(encode(v)) == v): implicit-presence scalars are non-default, floats
// are shortest float32 decimals, bytes are standard base64.
Value random_message(const google::protobuf::Descriptor* d, std::mt19937_64& rng, int depth = 0);

// Every (non map-entry) message type with its descriptor.
std::vector<const google::protobuf::Descriptor*> all_message_types();

// The seed for randomized tests: DCLCOMMS_TEST_SEED if set, else a fixed one.
uint64_t test_seed();

}  // namespace dclcomms::codec::testing
