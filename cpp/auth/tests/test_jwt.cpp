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

// The base64url text of data (the middle part of a token signed over it).
std::string b64url(const std::string& data) {
  const std::string t = Hs256Signer("").token(data);
  const size_t a = t.find('.') + 1;
  return t.substr(a, t.rfind('.') - a);
}

// header.claims signed under secret: any bytes in either part.
std::string signed_token(const std::string& header, const std::string& claims,
                         const std::string& secret) {
  const std::string input = b64url(header) + "." + b64url(claims);
  return input + "." + b64url(Hs256Signer(secret).mac(input));
}

TEST(Jwt, NulBytesAreRejectedNeverTruncated) {
  using namespace std::string_literals;
  const std::string header = R"({"alg":"HS256","typ":"JWT"})";
  const JwtCheck at150{150, 0, std::nullopt, false};
  // The reference: these bytes, signed, are accepted.
  EXPECT_EQ(code_of(signed_token(header, R"({"exp":200})", "s"), "s", at150), "accepted");
  // Signed claims with a NUL after the object: JSON text never holds a raw NUL,
  // and the parser must not stop there and accept the prefix.
  for (const std::string& claims :
       {"{\"exp\":200}\0"s, "{\"exp\":200}\0{\"exp\":999999}"s, "{\"exp\":200}\0garbage"s,
        "\0{\"exp\":200}"s, "{\"exp\":200,\"sub\":\"a\0b\"}"s, "{\"exp\":200\0}"s}) {
    EXPECT_EQ(code_of(signed_token(header, claims, "s"), "s", at150), "malformed") << claims.size();
  }
  // The same in the header (checked before the signature).
  for (const std::string& h : {header + "\0"s, header + "\0{\"alg\":\"none\"}"s,
                               "{\"alg\":\"HS256\",\"typ\":\"JWT\0\"}"s, "\0"s + header}) {
    EXPECT_EQ(code_of(signed_token(h, R"({"exp":200})", "s"), "s", at150), "bad_header")
        << h.size();
  }
  // A NUL in the token text itself (e.g. a percent-decoded %00), anywhere.
  const std::string good = signed_token(header, R"({"exp":200})", "s");
  for (size_t at : {size_t{0}, good.find('.'), good.find('.') + 1, good.rfind('.'), good.size()}) {
    std::string t = good;
    t.insert(at, 1, '\0');
    EXPECT_EQ(code_of(t, "s", at150), "malformed") << at;
  }
  // An escaped \u0000 inside a JSON string is valid JSON: kept, byte for byte.
  const ojson claims =
      jwt_decode(signed_token(header, R"({"exp":200,"sub":"a\u0000b"})", "s"), "s", at150);
  EXPECT_EQ(claims.at("sub").get<std::string>(), "a\0b"s);
  // A key with a NUL is a different key: "s\0x" never verifies what "s" signed.
  EXPECT_EQ(code_of(good, "s\0x"s, at150), "bad_signature");
  EXPECT_EQ(code_of(signed_token(header, R"({"exp":200})", "s\0x"s), "s\0x"s, at150), "accepted");
  EXPECT_EQ(code_of(signed_token(header, R"({"exp":200})", "s\0x"s), "s", at150), "bad_signature");
}

}  // namespace
