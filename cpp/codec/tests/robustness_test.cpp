// Decoder robustness: random, truncated and mutated buffers for every message
// type either decode or throw a Decode error with a known code; never crash.

#include <gtest/gtest.h>

#include <set>

#include "dclcomms/codec/codec.hpp"
#include "dclcomms/error.hpp"
#include "test_helpers.hpp"

namespace dclcomms::codec {
namespace {

const std::set<std::string> kDecodeCodes = {"truncated",     "bad_varint",   "bad_length",
                                            "bad_wire_type", "invalid_utf8", "too_deep",
                                            "bad_group"};

void decode_or_known_error(const std::string& type, const std::string& bytes,
                           const std::string& ctx) {
  try {
    const Value v = decode(type, bytes);
    ASSERT_EQ(v.kind(), Value::Kind::Object);
    // Whatever decodes re-encodes, and re-decodes to the same value.
    ASSERT_EQ(decode(type, encode(type, v)), v) << ctx << " " << testing::hex(bytes);
  } catch (const Error& e) {
    ASSERT_EQ(e.kind(), ErrorKind::Decode) << ctx;
    ASSERT_EQ(kDecodeCodes.count(e.code()), 1u) << e.code();
  }
}

TEST(Robustness, RandomBuffers) {
  const uint64_t seed = testing::test_seed();
  std::mt19937_64 rng(seed);
  for (const auto* d : testing::all_message_types()) {
    for (int i = 0; i < 2000; ++i) {
      std::string bytes(rng() % 64, '\0');
      for (auto& c : bytes) c = static_cast<char>(rng());
      decode_or_known_error(d->full_name(), bytes, "seed " + std::to_string(seed));
      if (HasFatalFailure()) return;
    }
  }
}

TEST(Robustness, TruncatedAndMutatedValidMessages) {
  const uint64_t seed = testing::test_seed();
  std::mt19937_64 rng(seed);
  for (const auto* d : testing::all_message_types()) {
    for (int i = 0; i < 300; ++i) {
      const std::string valid = encode(d->full_name(), testing::random_message(d, rng));
      const std::string ctx = "seed " + std::to_string(seed) + " " + d->full_name();
      for (size_t cut = 0; cut < valid.size(); cut += 1 + valid.size() / 8) {
        decode_or_known_error(d->full_name(), valid.substr(0, cut), ctx);
      }
      std::string mutated = valid;
      if (!mutated.empty()) mutated[rng() % mutated.size()] = static_cast<char>(rng());
      decode_or_known_error(d->full_name(), mutated, ctx);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(Robustness, DeepGroupNestingIsBounded) {
  std::string bytes(100000, '\x4b');  // 100k nested start-groups: no stack overflow
  try {
    decode("decentraland.kernel.comms.v3.ClientPacket", bytes);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "too_deep");
  }
}

}  // namespace
}  // namespace dclcomms::codec
