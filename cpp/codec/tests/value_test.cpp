// The Value tree helpers: base64, float32 -> decimal, equality, JSON text;
// and concurrent use of the codec (the registry is a shared static).

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

#include "dclcomms/codec/codec.hpp"
#include "dclcomms/codec/fast.hpp"
#include "dclcomms/codec/value.hpp"
#include "test_helpers.hpp"

namespace dclcomms::codec {
namespace {

TEST(Base64, KnownAnswers) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("\xfb\xff\xfe"), "+//+");
  std::string out;
  for (const char* text : {"Zm9vYg==", "Zm9vYg"}) {
    ASSERT_TRUE(base64_decode(text, out)) << text;
    EXPECT_EQ(out, "foob");
  }
  ASSERT_TRUE(base64_decode("-__-", out));
  EXPECT_EQ(out, "\xfb\xff\xfe");
}

TEST(Base64, RejectsInvalidInput) {
  std::string out;
  for (const char* text :
       {"Z", "Zm9vY", "Zm9v=", "Zm9vYg=", "Zg===", "Z=g=", "Zm 9v", "Zm9v\n", "*A=="}) {
    EXPECT_FALSE(base64_decode(text, out)) << text;
  }
}

TEST(FloatToJson, ShortestFloat32Decimal) {
  EXPECT_EQ(float_to_json_double(16.5f), 16.5);
  EXPECT_EQ(float_to_json_double(0.1f), 0.1);
  EXPECT_EQ(float_to_json_double(-32.25f), -32.25);
  EXPECT_EQ(float_to_json_double(68978928.0f), 68978930.0);  // 7 digits suffice
  EXPECT_EQ(float_to_json_double(std::numeric_limits<float>::denorm_min()), 1e-45);
  EXPECT_EQ(float_to_json_double(std::numeric_limits<float>::max()), 3.4028235e38);
  EXPECT_TRUE(std::isnan(float_to_json_double(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(float_to_json_double(-std::numeric_limits<float>::infinity()),
            -std::numeric_limits<double>::infinity());
  // Every result reads back as the same float32.
  std::mt19937 rng(7);
  for (int i = 0; i < 100000; ++i) {
    const uint32_t bits = rng();
    float f;
    std::memcpy(&f, &bits, 4);
    if (!std::isfinite(f)) continue;
    ASSERT_EQ(static_cast<float>(float_to_json_double(f)), f) << bits;
  }
}

TEST(ValueTree, EqualityAndJson) {
  const Value a(Object{{"x", 1}, {"y", Value(List{true, nullptr, "s"})}});
  const Value b(Object{{"y", Value(List{true, nullptr, "s"})}, {"x", 1.0}});
  EXPECT_EQ(a, b);  // key order and number kinds do not matter
  EXPECT_NE(a, Value(Object{{"x", 2}}));
  EXPECT_EQ(Value(uint64_t{5}), Value(int64_t{5}));
  EXPECT_NE(Value(int64_t{-1}), Value(~uint64_t{0}));
  EXPECT_EQ(Value(std::nan("")), Value(std::nan("")));
  EXPECT_EQ(a.to_json(), R"({"x":1,"y":[true,null,"s"]})");
  EXPECT_EQ(Value(Object{{"b", Value(Bytes{"\x01"})}, {"d", 0.5}}).to_json(),
            R"({"b":"AQ==","d":0.5})");
}

TEST(Concurrency, ParallelEncodeDecodeAgree) {
  const auto vectors = testing::load_vectors();
  auto work = [&](std::vector<std::string>* out) {
    for (int round = 0; round < 50; ++round) {
      for (const auto& v : vectors) {
        out->push_back(encode(v.type_name, decode(v.type_name, v.bytes)));
        if (v.type_name == "decentraland.kernel.comms.v3.ClientPacket") {
          decode_client_packet(v.bytes);
        }
      }
    }
  };
  std::vector<std::vector<std::string>> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back(work, &r);
  for (auto& t : threads) t.join();
  for (const auto& r : results) {
    ASSERT_EQ(r.size(), vectors.size() * 50);
    for (size_t i = 0; i < r.size(); ++i) ASSERT_EQ(r[i], vectors[i % vectors.size()].bytes);
  }
}

}  // namespace
}  // namespace dclcomms::codec
