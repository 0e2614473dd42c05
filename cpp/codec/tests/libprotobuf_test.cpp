// Cross-check against libprotobuf's own parser over the same descriptors:
// whatever we encode, libprotobuf parses to the same content (compared by
// decoding its re-serialization: its field order differs from ours for rfc4,
// which is expected), and on mutated buffers we never accept what it rejects.

#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>
#include <gtest/gtest.h>

#include <memory>

#include "dclcomms/codec/codec.hpp"
#include "dclcomms/codec/descriptor_pool.hpp"
#include "dclcomms/error.hpp"
#include "test_helpers.hpp"

namespace dclcomms::codec {
namespace {

namespace pb = google::protobuf;

TEST(LibprotobufCrossCheck, RandomMessagesParseToTheSameContent) {
  const uint64_t seed = testing::test_seed();
  std::mt19937_64 rng(seed);
  pb::DynamicMessageFactory factory(&descriptor_pool());
  for (const auto* d : testing::all_message_types()) {
    const pb::Message* prototype = factory.GetPrototype(d);
    for (int i = 0; i < 200; ++i) {
      const Value v = testing::random_message(d, rng);
      const std::string ours = encode(d->full_name(), v);
      std::unique_ptr<pb::Message> m(prototype->New());
      ASSERT_TRUE(m->ParseFromString(ours)) << "seed " << seed << " " << d->full_name();
      const std::string theirs = m->SerializeAsString();
      ASSERT_EQ(decode(d->full_name(), theirs), v)
          << "seed " << seed << " " << d->full_name() << " " << v.to_json();
    }
  }
}

TEST(LibprotobufCrossCheck, MutatedBuffersAcceptedByUsAreAcceptedByLibprotobuf) {
  const uint64_t seed = testing::test_seed();
  std::mt19937_64 rng(seed);
  pb::DynamicMessageFactory factory(&descriptor_pool());
  int accepted = 0;
  for (const auto* d : testing::all_message_types()) {
    const pb::Message* prototype = factory.GetPrototype(d);
    for (int i = 0; i < 200; ++i) {
      std::string bytes = encode(d->full_name(), testing::random_message(d, rng));
      if (!bytes.empty()) bytes[rng() % bytes.size()] = static_cast<char>(rng());
      Value ours;
      try {
        ours = decode(d->full_name(), bytes);
      } catch (const Error&) {
        continue;
      }
      ++accepted;
      std::unique_ptr<pb::Message> m(prototype->New());
      ASSERT_TRUE(m->ParseFromString(bytes))
          << "seed " << seed << " " << d->full_name() << " " << testing::hex(bytes);
      ASSERT_EQ(decode(d->full_name(), m->SerializeAsString()), ours)
          << "seed " << seed << " " << d->full_name() << " " << testing::hex(bytes);
    }
  }
  EXPECT_GT(accepted, 100);
}

}  // namespace
}  // namespace dclcomms::codec
