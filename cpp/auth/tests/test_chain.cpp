// Auth-chain verification: every conformance vector, then one test per
// failure code with chains signed here.

#include <gtest/gtest.h>

#include <fstream>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "dclcomms/auth/auth.hpp"
#include "dclcomms/auth/batch.hpp"
#include "dclcomms/auth/datetime.hpp"
#include "dclcomms/auth/eip1271.hpp"
#include "dclcomms/auth/keys.hpp"

namespace {

using namespace dclcomms::auth;
using nlohmann::json;

constexpr int64_t kNow = 1748779200000;  // 2025-06-01T12:00:00.000Z

TEST(ChainVectors, MatchTheReferenceVerdicts) {
  std::ifstream in(std::string(DCLCOMMS_CONFORMANCE_DIR) + "/auth-vectors.json");
  ASSERT_TRUE(in) << "auth-vectors.json not found";
  const json doc = json::parse(in);
  size_t count = 0;
  for (const auto& v : doc.at("vectors")) {
    const auto& e = v.at("expected");
    // dclcomms follows the @dcl/crypto 3.7.0 verdict (null = not even JSON).
    const bool want =
        e.at("validate_signature_ok").is_boolean() && e.at("validate_signature_ok").get<bool>();
    const AuthResult r =
        verify_auth_chain(v.at("auth_chain_json").get<std::string>(),
                          v.at("challenge").get<std::string>(), v.at("now_ms").get<int64_t>());
    EXPECT_EQ(r.ok, want) << v.at("id") << ": " << r.code << " " << r.message;
    if (want) {
      EXPECT_EQ(r.signer, e.at("peer_id").get<std::string>()) << v.at("id");
    }
    if (!r.ok) {
      EXPECT_FALSE(r.code.empty()) << v.at("id");
    }
    ++count;
  }
  EXPECT_GE(count, 40u);
}

PrivateKey key_of(uint8_t byte) {
  PrivateKey k;
  k.fill(byte);
  return k;
}

json link(const std::string& type, const std::string& payload, const json& signature) {
  return json{{"type", type}, {"payload", payload}, {"signature", signature}};
}

std::string ephemeral_text(const std::string& address, int64_t expires_ms) {
  return "Decentraland Login\nEphemeral address: " + to_checksum_address(address) +
         "\nExpiration: " + format_iso8601_ms(expires_ms);
}

// [SIGNER(owner), ECDSA_EPHEMERAL(text, owner sig), ECDSA_SIGNED_ENTITY(challenge, eph sig)]
json ephemeral_chain(const std::string& challenge, int64_t expires_ms = kNow + 3'600'000) {
  const PrivateKey owner = key_of(0x11), eph = key_of(0x22);
  const std::string text = ephemeral_text(address_of(eph), expires_ms);
  return json::array({link("SIGNER", to_checksum_address(address_of(owner)), ""),
                      link("ECDSA_EPHEMERAL", text, sign_personal(owner, text)),
                      link("ECDSA_SIGNED_ENTITY", challenge, sign_personal(eph, challenge))});
}

AuthResult verify(const json& chain, const std::string& expected = "dcl-challenge",
                  const Eip1271Check* provider = nullptr) {
  return verify_auth_chain(chain.dump(), expected, kNow, provider);
}

TEST(Chain, ValidEphemeralChain) {
  const AuthResult r = verify(ephemeral_chain("dcl-challenge"));
  ASSERT_TRUE(r.ok) << r.code << " " << r.message;
  EXPECT_EQ(r.signer, address_of(key_of(0x11)));
  EXPECT_EQ(r.ephemeral, to_checksum_address(address_of(key_of(0x22))));
  EXPECT_EQ(r.expires_ms, kNow + 3'600'000);
  EXPECT_TRUE(r.code.empty());
}

TEST(Chain, JsonInvalid) {
  EXPECT_EQ(verify_auth_chain("", "x", kNow).code, "json_invalid");
  EXPECT_EQ(verify_auth_chain("[", "x", kNow).code, "json_invalid");
  EXPECT_EQ(verify_auth_chain("\xEF\xBB\xBF[]", "x", kNow).code, "json_invalid");
  EXPECT_EQ(verify_auth_chain("[] []", "x", kNow).code, "json_invalid");
  // nlohmann stops reading at a NUL: a valid chain followed by one must not verify.
  const std::string chain = ephemeral_chain("dcl-challenge").dump();
  ASSERT_TRUE(verify_auth_chain(chain, "dcl-challenge", kNow).ok);
  EXPECT_EQ(verify_auth_chain(chain + std::string("\0\xff junk", 7), "dcl-challenge", kNow).code,
            "json_invalid");
}

TEST(Chain, SchemaInvalid) {
  EXPECT_EQ(verify_auth_chain("{}", "x", kNow).code, "schema_invalid");
  EXPECT_EQ(verify_auth_chain("[]", "x", kNow).code, "schema_invalid");
  EXPECT_EQ(verify_auth_chain("[1]", "x", kNow).code, "schema_invalid");
  json c = ephemeral_chain("dcl-challenge");
  json bad = c;
  bad[1]["type"] = "ECDSA_PERSONAL_EPHEMERAL";
  EXPECT_EQ(verify(bad).code, "schema_invalid");
  bad = c;
  bad[1].erase("signature");
  EXPECT_EQ(verify(bad).code, "schema_invalid");
  bad = c;
  bad[0]["signature"] = "0x00";
  EXPECT_EQ(verify(bad).code, "schema_invalid");
  bad = c;
  bad[2]["payload"] = std::string(100'001, 'a');
  EXPECT_EQ(verify(bad).code, "schema_invalid");
  bad = c;
  bad[2]["signature"] = 5;
  EXPECT_EQ(verify(bad).code, "schema_invalid");
}

// SIGNER, then ephemeral keys each authorizing the next, then the challenge.
json long_chain(size_t links) {
  PrivateKey current = key_of(0x11);
  json chain = json::array({link("SIGNER", address_of(current), "")});
  for (uint8_t i = 0; chain.size() + 1 < links; ++i) {
    const PrivateKey next = key_of(static_cast<uint8_t>(0x40 + i));
    const std::string text = ephemeral_text(address_of(next), kNow + 60'000);
    chain.push_back(link("ECDSA_EPHEMERAL", text, sign_personal(current, text)));
    current = next;
  }
  chain.push_back(
      link("ECDSA_SIGNED_ENTITY", "dcl-challenge", sign_personal(current, "dcl-challenge")));
  return chain;
}

TEST(Chain, AtMostTenLinks) {
  const AuthResult ten = verify(long_chain(10));
  EXPECT_TRUE(ten.ok) << ten.code << " " << ten.message;
  EXPECT_EQ(verify(long_chain(11)).code, "schema_invalid");
}

TEST(Chain, MalformedChain) {
  json c = ephemeral_chain("dcl-challenge");
  json bad = json::array({c[1], c[0], c[2]});
  EXPECT_EQ(verify(bad).code, "malformed_chain");
  bad = c;
  bad.push_back(c[0]);
  EXPECT_EQ(verify(bad).code, "malformed_chain");
  bad = c;
  bad[0]["payload"] = "0x1234";
  EXPECT_EQ(verify(bad).code, "malformed_chain");
}

TEST(Chain, PerLinkCodes) {
  const json c = ephemeral_chain("dcl-challenge");
  json bad = c;
  bad[2]["signature"] = "";
  EXPECT_EQ(verify(bad).code, "bad_signature_encoding");
  bad = c;
  bad[1]["signature"] = nullptr;
  EXPECT_EQ(verify(bad).code, "bad_signature_encoding");
  bad = c;
  bad[2]["signature"] = bad[2]["signature"].get<std::string>().substr(0, 130);
  EXPECT_EQ(verify(bad).code, "bad_signature_length");
  bad = c;
  bad[1]["payload"] = "Decentraland Login\nEphemeral address: 0xabc";
  EXPECT_EQ(verify(bad).code, "ephemeral_payload_invalid");
  bad = c;
  std::string text = bad[1]["payload"];
  text.replace(text.find("Expiration: "), 12, "expiration: ");
  bad[1]["payload"] = text;
  EXPECT_EQ(verify(bad).code, "ephemeral_payload_invalid");
  EXPECT_EQ(verify(ephemeral_chain("dcl-challenge", kNow)).code, "ephemeral_expired");
  EXPECT_TRUE(verify(ephemeral_chain("dcl-challenge", kNow + 1)).ok);
  bad = c;
  bad[2]["payload"] = "dcl-other";
  EXPECT_EQ(verify(bad, "dcl-other").code, "signer_mismatch");
  EXPECT_EQ(verify(c, "dcl-challenge\n").code, "final_authority_mismatch");
  EXPECT_EQ(verify(c, "DCL-CHALLENGE").code, "final_authority_mismatch");
}

TEST(Chain, CarriageReturnsAreStrippedFromEphemeralTextOnly) {
  const PrivateKey owner = key_of(0x11), eph = key_of(0x22);
  const std::string text = ephemeral_text(address_of(eph), kNow + 60'000);
  std::string crlf = text;
  for (size_t p = crlf.find('\n'); p != std::string::npos; p = crlf.find('\n', p + 2)) {
    crlf.insert(p, "\r");
  }
  // The owner signed the LF text; the link carries CRLF: still valid.
  const json chain = json::array({link("SIGNER", address_of(owner), nullptr),
                                  link("ECDSA_EPHEMERAL", crlf, sign_personal(owner, text)),
                                  link("ECDSA_SIGNED_ENTITY", "x\r", sign_personal(eph, "x\r"))});
  EXPECT_TRUE(verify(chain, "x\r").ok) << verify(chain, "x\r").code;
}

TEST(Chain, DirectChainAndSignerOnly) {
  const PrivateKey owner = key_of(0x33);
  const json direct =
      json::array({link("SIGNER", address_of(owner), ""),
                   link("ECDSA_SIGNED_ENTITY", "dcl-x", sign_personal(owner, "dcl-x"))});
  EXPECT_TRUE(verify(direct, "dcl-x").ok);
  const json only = json::array({json{{"type", "SIGNER"}, {"payload", address_of(owner)}}});
  EXPECT_TRUE(verify(only, address_of(owner)).ok);
  EXPECT_EQ(verify(only, "dcl-x").code, "final_authority_mismatch");
}

TEST(Chain, Eip1271Links) {
  const std::string wallet = "0x" + std::string(40, 'c');
  const json chain = json::array(
      {link("SIGNER", wallet, ""), link("ECDSA_EIP_1654_SIGNED_ENTITY", "dcl-x", "0xdeadbeef")});
  EXPECT_EQ(verify(chain, "dcl-x").code, "eip1271_no_provider");

  int calls = 0;
  Hash32 accepted = personal_message_hash("dcl-x");  // only the H2 variant is valid
  const Eip1271Check provider = [&](std::string_view contract, const Hash32& hash,
                                    std::string_view sig) {
    ++calls;
    EXPECT_EQ(contract, wallet);
    EXPECT_EQ(sig, std::string("\xde\xad\xbe\xef"));
    return hash == accepted;
  };
  EXPECT_TRUE(verify(chain, "dcl-x", &provider).ok);
  EXPECT_EQ(calls, 2);  // H1 first, then H2

  accepted = keccak256("nothing");
  EXPECT_EQ(verify(chain, "dcl-x", &provider).code, "eip1271_invalid");

  const Eip1271Check failing = [](std::string_view, const Hash32&, std::string_view) -> bool {
    throw std::runtime_error("connection refused");
  };
  const AuthResult r = verify(chain, "dcl-x", &failing);
  EXPECT_EQ(r.code, "eip1271_rpc_error");
  EXPECT_NE(r.message.find("connection refused"), std::string::npos);

  json odd = chain;
  odd[1]["signature"] = "0xabc";
  EXPECT_EQ(verify(odd, "dcl-x", &provider).code, "bad_signature_encoding");
}

TEST(Eip1271, CallDataLayout) {
  Hash32 h{};
  h[0] = 0xab;
  const std::string data = eip1271_call_data(h, std::string(65, '\x01'));
  // selector + hash + offset + length + 96 padded signature bytes
  ASSERT_EQ(data.size(), 2 + 8 + 64 * 3 + 2 * 96);
  EXPECT_EQ(data.substr(0, 12), "0x1626ba7eab");
  EXPECT_EQ(data.substr(10 + 64, 64), std::string(62, '0') + "40");
  EXPECT_EQ(data.substr(10 + 128, 64), std::string(62, '0') + "41");
  EXPECT_EQ(data.substr(data.size() - 62), std::string(62, '0'));
  EXPECT_TRUE(eip1271_result_ok("0x1626BA7E" + std::string(56, '0')));
  EXPECT_FALSE(eip1271_result_ok("0x"));
  EXPECT_FALSE(eip1271_result_ok("0xffffffff" + std::string(56, '0')));
}

TEST(Batch, MatchesSingleVerification) {
  std::vector<std::pair<std::string, std::string>> items;
  for (int i = 0; i < 37; ++i) {
    const std::string ch = "dcl-" + std::to_string(i);
    // Every third item asks for another challenge: must fail.
    items.emplace_back(ephemeral_chain(ch).dump(), i % 3 == 0 ? ch + "!" : ch);
  }
  for (unsigned threads : {0u, 1u, 3u, 64u}) {
    const auto results = verify_many(items, kNow, threads);
    ASSERT_EQ(results.size(), items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      const AuthResult one = verify_auth_chain(items[i].first, items[i].second, kNow);
      EXPECT_EQ(results[i].ok, one.ok);
      EXPECT_EQ(results[i].code, one.code);
      EXPECT_EQ(results[i].ok, i % 3 != 0);
    }
  }
  EXPECT_TRUE(verify_many({}, kNow).empty());
}

}  // namespace

namespace {

TEST(ChainJson, ReaderEdgeCases) {
  const json c = ephemeral_chain("dcl-challenge");
  // Extra properties, nested containers included, are ignored.
  json extra = c;
  extra[1]["meta"] = json{{"type", "SIGNER"}, {"payload", json::array({1, {{"signature", 2}}})}};
  extra[2]["list"] = json::array({json::object(), json::array()});
  EXPECT_TRUE(verify(extra).ok) << verify(extra).code;

  const std::string text = c.dump();
  // Duplicate keys: the last one wins (JSON.parse).
  std::string dup = text;
  dup.insert(1 + dup.find('{', 1), "\"type\":7,");  // link 0: type 7 then "SIGNER"
  EXPECT_TRUE(verify_auth_chain(dup, "dcl-challenge", kNow).ok);
  std::string dup_last = text;
  dup_last.insert(dup_last.find('}'), ",\"type\":7");  // link 0: "SIGNER" then 7
  EXPECT_EQ(verify_auth_chain(dup_last, "dcl-challenge", kNow).code, "schema_invalid");

  // A nested value for a known key is a schema error, not a crash.
  json nested = c;
  nested[2]["signature"] = json::array({"0x00"});
  EXPECT_EQ(verify(nested).code, "schema_invalid");
  nested = c;
  nested[1] = json::array({c[1]});
  EXPECT_EQ(verify(nested).code, "schema_invalid");

  // Invalid JSON wins over schema problems found earlier in the text.
  const std::string many = "[1,2,3,4,5,6,7,8,9,10,11,12";
  EXPECT_EQ(verify_auth_chain(many, "x", kNow).code, "json_invalid");
  EXPECT_EQ(verify_auth_chain(many + "]", "x", kNow).code, "schema_invalid");
  EXPECT_EQ(verify_auth_chain("{\"a\":[1,{\"b\":2}]}", "x", kNow).code, "schema_invalid");
  EXPECT_EQ(verify_auth_chain("\"[]\"", "x", kNow).code, "schema_invalid");
  EXPECT_EQ(verify_auth_chain(std::string(100000, '['), "x", kNow).code, "json_invalid");
  std::string deep = std::string(5000, '[') + std::string(5000, ']');
  EXPECT_EQ(verify_auth_chain(deep, "x", kNow).code, "schema_invalid");
}

}  // namespace
