// Signed-fetch headers (authchain.md section 8): what is read, every rejection
// code, and the inputs a recursive JSON reader would not survive.

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "dclcomms/auth/signed_fetch.hpp"

namespace {

using dclcomms::auth::parse_signed_fetch;
using dclcomms::auth::SignedFetchHeaders;
using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr int64_t kNow = 1748779200000;
const std::string kSigner = R"({"type":"SIGNER","payload":"0xabc","signature":""})";
const std::string kEntity = R"({"type":"ECDSA_SIGNED_ENTITY","payload":"p","signature":"0x12"})";

Headers valid() {
  return {{"X-Identity-Auth-Chain-0", kSigner},
          {"x-identity-auth-chain-1", kEntity},
          {"Content-Type", "application/json"},
          {"X-IDENTITY-TIMESTAMP", std::to_string(kNow)},
          {"x-identity-metadata", R"({"realmName":"main"})"}};
}

SignedFetchHeaders parse(const Headers& h) {
  return parse_signed_fetch(h, kNow, 60'000, 30'000);
}

TEST(SignedFetch, ReadsLinksTimestampAndMetadataAsSent) {
  const auto h = parse(valid());
  ASSERT_TRUE(h.ok()) << h.message;
  EXPECT_EQ(h.links, (std::vector<std::string>{kSigner, kEntity}));
  EXPECT_EQ(h.link_types, (std::vector<std::string>{"SIGNER", "ECDSA_SIGNED_ENTITY"}));
  EXPECT_EQ(h.chain_json(), "[" + kSigner + "," + kEntity + "]");
  EXPECT_EQ(h.timestamp, std::to_string(kNow));
  EXPECT_EQ(h.timestamp_ms, kNow);
  EXPECT_EQ(h.metadata, R"({"realmName":"main"})");
  EXPECT_EQ(h.body_hash, SignedFetchHeaders::BodyHash::Absent);
  EXPECT_EQ(h.final_signature, "0x12");
}

TEST(SignedFetch, LinksStopAtTheFirstGap) {
  auto headers = valid();
  headers.emplace_back("x-identity-auth-chain-3", kEntity);
  const auto h = parse(headers);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h.links.size(), 2u);
}

TEST(SignedFetch, BodyHashKinds) {
  auto headers = valid();
  headers.back().second = R"({"bodySha256":"AB12"})";
  auto h = parse(headers);
  EXPECT_EQ(h.body_hash, SignedFetchHeaders::BodyHash::Text);
  EXPECT_EQ(h.body_sha256, "AB12");
  headers.back().second = R"({"bodySha256":12})";
  EXPECT_EQ(parse(headers).body_hash, SignedFetchHeaders::BodyHash::NotText);
  headers.back().second = R"({"bodySha256":null})";
  EXPECT_EQ(parse(headers).body_hash, SignedFetchHeaders::BodyHash::Absent);
}

TEST(SignedFetch, Window) {
  auto headers = valid();
  headers[3].second = std::to_string(kNow - 60'000);
  EXPECT_TRUE(parse(headers).ok());
  headers[3].second = std::to_string(kNow - 60'001);
  EXPECT_EQ(parse(headers).code, "signed_fetch_expired");
  headers[3].second = std::to_string(kNow + 30'000);
  EXPECT_TRUE(parse(headers).ok());
  headers[3].second = std::to_string(kNow + 30'001);
  EXPECT_EQ(parse(headers).code, "signed_fetch_future");
  // An extreme window saturates instead of overflowing.
  const auto h = parse_signed_fetch(valid(), kNow, INT64_MAX, INT64_MAX);
  EXPECT_TRUE(h.ok()) << h.message;
}

TEST(SignedFetch, MalformedRequests) {
  const auto code = [](Headers h) { return parse(h).code; };
  const std::string bad = "signed_fetch_malformed";
  auto h = valid();
  h.erase(h.begin() + 1);
  EXPECT_EQ(code(h), bad);  // one link
  h = valid();
  h[1].second = "{not json";
  EXPECT_EQ(code(h), bad);
  h = valid();
  h[1].second = "[1,2]";
  EXPECT_EQ(code(h), bad);  // not an object
  h = valid();
  h[1].second = "{\"type\":\"\xff\"}";
  EXPECT_EQ(code(h), bad);  // invalid UTF-8
  h = valid();
  h[1].second = kEntity + std::string("\0\xcc", 2);
  EXPECT_EQ(code(h), bad);  // a NUL ends nlohmann's input: what follows must not slip through
  for (const char* ts : {"", "12a", "-1", " 1748779200000", "12345678901234567"}) {
    h = valid();
    h[3].second = ts;
    EXPECT_EQ(code(h), bad) << ts;
  }
  h = valid();
  h.erase(h.begin() + 4);
  EXPECT_EQ(code(h), bad);  // no metadata
  h = valid();
  h[4].second = "[]";
  EXPECT_EQ(code(h), bad);
  h = valid();
  h.emplace_back("X-Identity-Metadata", "{}");
  const auto dup = parse(h);
  EXPECT_EQ(dup.code, bad);
  EXPECT_EQ(dup.message, "duplicate header x-identity-metadata");
}

TEST(SignedFetch, DeepNestingIsMalformedNotACrash) {
  auto h = valid();
  h[4].second = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  const auto r = parse(h);
  EXPECT_EQ(r.code, "signed_fetch_malformed");
  EXPECT_EQ(r.message, "x-identity-metadata is nested deeper than 64 levels");
  // Brackets inside strings do not count.
  h[4].second = "{\"a\":\"" + std::string(1000, '[') + "\"}";
  EXPECT_TRUE(parse(h).ok());
}

TEST(SignedFetch, MessagesAreValidUtf8) {
  auto h = valid();
  h.emplace_back("x-identity-\xff\x01", "a");
  h.emplace_back("X-IDENTITY-\xff\x01", "b");
  const auto r = parse(h);
  EXPECT_EQ(r.code, "signed_fetch_malformed");
  EXPECT_EQ(r.message, "duplicate header x-identity-??");
}

}  // namespace
