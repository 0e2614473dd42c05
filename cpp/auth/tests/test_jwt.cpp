// HS256 JWT: round trip, every rejection code, LiveKit vectors byte for byte.

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "dclcomms/auth/jwt.hpp"
#include "dclcomms/auth/livekit.hpp"
#include "dclcomms/error.hpp"

namespace {

using namespace dclcomms::auth;
using ojson = nlohmann::ordered_json;

std::string code_of(const std::string& token, const std::string& secret, const JwtCheck& check) {
  try {
    jwt_decode(token, secret, check);
  } catch (const dclcomms::Error& e) {
    EXPECT_EQ(e.kind(), dclcomms::ErrorKind::Token);
    return e.code();
  }
  return "accepted";
}

TEST(Jwt, RoundTripKeepsClaimOrder) {
  const ojson claims = {{"sub", "0xabc"}, {"room", "r1"}, {"exp", 200}, {"iat", 100}};
  const std::string token = jwt_encode(claims, "secret");
  EXPECT_EQ(token.substr(0, token.find('.')), "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9");
  const ojson back = jwt_decode(token, "secret", JwtCheck{150, 0, std::nullopt, true});
  EXPECT_EQ(back.dump(), claims.dump());
}

TEST(Jwt, KnownToken) {
  // RFC 7515 appendix A.1 uses a binary key; this is the jwt.io HS256 example.
  const std::string token =
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
      "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0"
      "IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
  const ojson claims = jwt_decode(token, "your-256-bit-secret", JwtCheck{});
  EXPECT_EQ(claims.at("name"), "John Doe");
  EXPECT_EQ(code_of(token, "other-secret", JwtCheck{}), "bad_signature");
}

TEST(Jwt, Rejections) {
  const std::string good = jwt_encode({{"exp", 200}, {"nbf", 100}, {"iss", "k"}}, "s");
  EXPECT_EQ(code_of(good, "s", JwtCheck{150, 0, "k", true}), "accepted");
  EXPECT_EQ(code_of(good, "s", JwtCheck{200, 0, std::nullopt, false}), "expired");
  EXPECT_EQ(code_of(good, "s", JwtCheck{229, 30, std::nullopt, false}), "accepted");
  EXPECT_EQ(code_of(good, "s", JwtCheck{230, 30, std::nullopt, false}), "expired");
  EXPECT_EQ(code_of(good, "s", JwtCheck{99, 0, std::nullopt, false}), "not_yet_valid");
  EXPECT_EQ(code_of(good, "s", JwtCheck{99, 1, std::nullopt, false}), "accepted");
  EXPECT_EQ(code_of(good, "s", JwtCheck{150, 0, "other", false}), "bad_issuer");
  EXPECT_EQ(code_of(jwt_encode({{"a", 1}}, "s"), "s", JwtCheck{0, 0, std::nullopt, true}),
            "missing_exp");
  EXPECT_EQ(code_of(jwt_encode({{"exp", "soon"}}, "s"), "s", JwtCheck{}), "malformed");
  EXPECT_EQ(code_of("a.b", "s", JwtCheck{}), "malformed");
  EXPECT_EQ(code_of("a.b.c.d", "s", JwtCheck{}), "malformed");
  EXPECT_EQ(code_of(good + "=", "s", JwtCheck{150, 0, std::nullopt, false}), "malformed");
  EXPECT_EQ(code_of("e30." + good.substr(good.find('.') + 1), "s", JwtCheck{}), "bad_header");
  // alg none with an empty signature, and HS512/RS256 headers.
  const std::string body = good.substr(good.find('.'), good.rfind('.') - good.find('.'));
  EXPECT_EQ(code_of("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0" + body + ".", "s", JwtCheck{}),
            "unsupported_alg");
  EXPECT_EQ(code_of("eyJhbGciOiJIUzUxMiJ9" + body + ".AAAA", "s", JwtCheck{}), "unsupported_alg");
  // Flipped signature byte.
  std::string forged = good;
  forged.back() = forged.back() == 'A' ? 'B' : 'A';
  EXPECT_NE(code_of(forged, "s", JwtCheck{150, 0, std::nullopt, false}), "accepted");
}

TEST(Jwt, EncodeRejectsOtherAlgorithms) {
  const ojson header = {{"alg", "none"}};
  try {
    jwt_encode({{"a", 1}}, "s", &header);
    FAIL() << "alg none encoded";
  } catch (const dclcomms::Error& e) {
    EXPECT_EQ(e.code(), "unsupported_alg");
  }
  try {
    jwt_encode(ojson::array(), "s");
    FAIL() << "array claims encoded";
  } catch (const dclcomms::Error& e) {
    EXPECT_EQ(e.code(), "bad_claims");
  }
}

TEST(LiveKit, VectorsByteForByte) {
  std::ifstream in(std::string(DCLCOMMS_CONFORMANCE_DIR) + "/livekit-vectors.json");
  ASSERT_TRUE(in);
  const auto doc = nlohmann::json::parse(in);
  const std::string key = doc.at("key_material").at("apiKey");
  const std::string secret = doc.at("key_material").at("apiSecret");
  for (const auto& v : doc.at("valid")) {
    const auto& opts = v.at("inputs").at("options");
    const auto& grant = v.at("inputs").at("addGrant");
    LiveKitTokenOptions o;
    o.identity = opts.at("identity");
    o.room = grant.at("room");
    o.ttl_s = opts.at("ttl");
    o.now_s = v.at("inputs").at("mint_clock_unix");
    if (!opts.at("metadata").is_null()) o.metadata = opts.at("metadata").get<std::string>();
    const ojson overrides = {{"canPublish", grant.at("canPublish")},
                             {"canUpdateOwnMetadata", grant.at("canUpdateOwnMetadata")}};
    o.grants = &overrides;
    EXPECT_EQ(livekit_token(key, secret, o), v.at("token").get<std::string>()) << v.at("id");
    const ojson claims =
        jwt_decode(v.at("token").get<std::string>(), secret, JwtCheck{o.now_s, 0, key, true});
    EXPECT_EQ(claims.at("sub"), o.identity);
  }
}

}  // namespace

namespace {

TEST(LiveKit, FastPathMatchesTheJsonTree) {
  // grants = {} forces the generic nlohmann path; nullptr takes the direct one.
  const ojson empty = ojson::object();
  for (const char* metadata : {"{\"a\":\"b\\\\c\"}", "plain", ""}) {
    LiveKitTokenOptions o;
    o.identity = "0xabc";
    o.room = "room \"quoted\" \\ backslash";
    o.now_s = 1767225600;
    o.name = "Bob";
    o.metadata = metadata;
    const std::string fast = livekit_token("APIkey", "secret", o);
    o.grants = &empty;
    EXPECT_EQ(fast, livekit_token("APIkey", "secret", o)) << metadata;
  }
  // Non-ASCII and control characters go through nlohmann's escaping.
  LiveKitTokenOptions o;
  o.identity = "0xabc";
  o.room = "caf\xc3\xa9\n";
  o.now_s = 100;
  const ojson claims = jwt_decode(livekit_token("k", "s", o), "s", JwtCheck{100, 0, "k", true});
  EXPECT_EQ(claims.at("video").at("room"), "caf\xc3\xa9\n");
  o.room = "bad \xff utf-8";
  try {
    livekit_token("k", "s", o);
    FAIL() << "invalid UTF-8 encoded";
  } catch (const dclcomms::Error& e) {
    EXPECT_EQ(e.code(), "bad_claims");
  }
}

}  // namespace

namespace {

TEST(LiveKit, ManyTokensAreEachLiveKitToken) {
  LiveKitTokenOptions o;
  o.room = "I1";
  o.now_s = 1767225600;
  o.ttl_s = 60;
  // plain, quoted (escaped on the direct path) and non-ASCII (nlohmann's path)
  const std::vector<std::string_view> ids = {"0xabc", "a\"b", "caf\xc3\xa9", "0xdef"};
  const std::vector<std::string> tokens = livekit_tokens("APIkey", "secret", o, ids);
  ASSERT_EQ(tokens.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    o.identity = std::string(ids[i]);
    EXPECT_EQ(tokens[i], livekit_token("APIkey", "secret", o)) << i;
  }
  EXPECT_TRUE(livekit_tokens("APIkey", "secret", o, {}).empty());
  for (const auto& [key, secret, id] :
       {std::tuple<std::string, std::string, std::string>{"", "s", "0xa"},
        {"k", "", "0xa"},
        {"k", "s", ""}}) {
    try {
      livekit_tokens(key, secret, o, {id});
      FAIL() << "accepted key '" << key << "' secret '" << secret << "' id '" << id << "'";
    } catch (const dclcomms::Error& e) {
      EXPECT_EQ(e.code(), "bad_claims");
    }
  }
}

TEST(Jwt, SignerWritesJwtEncodesTokens) {
  // Keys shorter than, as long as and longer than the SHA-256 block (hashed
  // first), and empty; payloads of one to several hash blocks.
  for (const std::string& secret : {std::string(), std::string("s"), std::string(64, 'k'),
                                    std::string(65, 'k'), std::string(300, '\xff')}) {
    Hs256Signer signer(secret);
    for (size_t n : {0, 1, 55, 56, 64, 200}) {
      const ojson claims = {{"sub", std::string(n, 'a')}, {"room", "I1"}, {"iat", -7}, {"exp", 99}};
      EXPECT_EQ(signer.token(claims.dump()), jwt_encode(claims, secret)) << secret.size() << n;
      const ojson back = jwt_decode(signer.token(claims.dump()), secret, JwtCheck{});
      EXPECT_EQ(back, claims);
    }
  }
}

}  // namespace
