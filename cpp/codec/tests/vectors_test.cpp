// Conformance: every vector of tests/data/conformance/wire-vectors.json
// (produced by the reference @dcl/protocol codecs) round-trips byte-exactly.

#include <gtest/gtest.h>

#include "dclcomms/codec/codec.hpp"
#include "test_helpers.hpp"

namespace dclcomms::codec {
namespace {

using testing::from_json;
using testing::hex;
using testing::load_vectors;

TEST(WireVectors, FileHasVectors) {
  EXPECT_GE(load_vectors().size(), 12u);
}

TEST(WireVectors, EncodeMatchesReferenceBytes) {
  for (const auto& v : load_vectors()) {
    SCOPED_TRACE(v.type_name + ": " + v.description);
    EXPECT_EQ(hex(encode(v.type_name, from_json(v.json))), hex(v.bytes));
  }
}

TEST(WireVectors, DecodeWithDefaultsMatchesReferenceJson) {
  for (const auto& v : load_vectors()) {
    SCOPED_TRACE(v.type_name + ": " + v.description);
    const Value got = decode(v.type_name, v.bytes, DecodeOptions{true});
    EXPECT_EQ(got, from_json(v.json)) << got.to_json() << "\n" << v.json.dump();
  }
}

TEST(WireVectors, DecodeWithoutDefaultsReencodesToTheSameBytes) {
  for (const auto& v : load_vectors()) {
    SCOPED_TRACE(v.type_name + ": " + v.description);
    const Value got = decode(v.type_name, v.bytes);
    EXPECT_EQ(hex(encode(v.type_name, got)), hex(v.bytes));
    EXPECT_EQ(got, decode(v.type_name, encode(v.type_name, got)));
  }
}

}  // namespace
}  // namespace dclcomms::codec
