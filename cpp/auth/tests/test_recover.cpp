// personal_sign signing and recovery, signature rules S1-S5.

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "dclcomms/auth/auth.hpp"
#include "dclcomms/auth/keys.hpp"
#include "dclcomms/error.hpp"

namespace {

using namespace dclcomms::auth;

PrivateKey key_of(uint8_t byte) {
  PrivateKey k;
  k.fill(byte);
  return k;
}

// eth-account: Account.sign_message(encode_defunct(text="dcl-0.eteoa4r566"), "0x11" * 32)
constexpr const char* kSig =
    "0xd6bb9d5ae5a10f88e43f0066856639cd913a2fb46233ced31982f0409e25bc0e231810a9886f6cd78096d437c841"
    "9f8b4fa4453f0ae2b720f786958571c106801c";
constexpr const char* kAddress = "0x19e7e376e7c213b7e7e7e46cc70a5dd086daff2a";

TEST(Keys, AddressAndChecksum) {
  EXPECT_EQ(address_of(key_of(0x11)), kAddress);
  EXPECT_EQ(to_checksum_address(kAddress), "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A");
  EXPECT_THROW(to_checksum_address("0x1234"), dclcomms::Error);
  EXPECT_FALSE(is_valid_private_key(key_of(0)));
  EXPECT_FALSE(is_valid_private_key(key_of(0xff)));  // >= n
  EXPECT_THROW(address_of(key_of(0)), dclcomms::Error);
}

TEST(Keys, SignMatchesEthAccountByteForByte) {
  EXPECT_EQ(sign_personal(key_of(0x11), "dcl-0.eteoa4r566"), kSig);
}

TEST(Recover, RoundTrip) {
  std::string code;
  const auto addr = recover_address("dcl-0.eteoa4r566", kSig, &code);
  ASSERT_TRUE(addr.has_value()) << code;
  EXPECT_EQ(*addr, kAddress);
}

TEST(Recover, VZeroOneAccepted) {
  std::string sig = kSig;
  sig.replace(sig.size() - 2, 2, "01");  // 0x1c (28) == recovery id 1
  EXPECT_EQ(recover_address("dcl-0.eteoa4r566", sig).value_or(""), kAddress);
}

std::string code_of(const std::string& sig, const std::string& message = "dcl-0.eteoa4r566") {
  std::string code;
  EXPECT_FALSE(recover_address(message, sig, &code).has_value()) << sig;
  return code;
}

TEST(Recover, SignatureRules) {
  const std::string s = kSig;
  EXPECT_EQ(code_of("0X" + s.substr(2)), "bad_signature_encoding");
  EXPECT_EQ(code_of(s.substr(2)), "bad_signature_encoding");
  EXPECT_EQ(code_of("0x"), "bad_signature_encoding");
  EXPECT_EQ(code_of(s + " "), "bad_signature_encoding");
  EXPECT_EQ(code_of(s + "0"), "bad_signature_length");           // odd
  EXPECT_EQ(code_of(s.substr(0, 130)), "bad_signature_length");  // 64 bytes
  EXPECT_EQ(code_of(s + "00"), "bad_signature_length");          // 66 bytes
  for (const char* v : {"02", "1a", "1d", "25", "ff"}) {
    EXPECT_EQ(code_of(s.substr(0, 130) + v), "bad_recovery_id") << v;
  }
  EXPECT_EQ(code_of("0x" + std::string(64, '0') + s.substr(66)), "signature_range");     // r = 0
  EXPECT_EQ(code_of(s.substr(0, 66) + std::string(64, '0') + "1c"), "signature_range");  // s = 0
  const std::string n = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141";
  EXPECT_EQ(code_of(s.substr(0, 66) + n + "1c"), "signature_range");  // s = n
  EXPECT_EQ(code_of("0x" + n + s.substr(66)), "signature_range");     // r = n
}

TEST(Recover, HighSIsAcceptedWithoutNormalisation) {
  // s' = n - s with the recovery id flipped recovers the same key.
  const std::string s = kSig;
  // n - s computed in 64-bit limbs (big-endian hex).
  const std::string n = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141";
  auto parse = [](const std::string& h, uint64_t out[4]) {
    for (int i = 0; i < 4; ++i) out[i] = std::stoull(h.substr(16 * i, 16), nullptr, 16);
  };
  uint64_t nn[4], ss[4], d[4];
  parse(n, nn);
  parse(s.substr(66, 64), ss);
  unsigned __int128 borrow = 0;
  for (int i = 3; i >= 0; --i) {
    const unsigned __int128 lhs = nn[i];
    const unsigned __int128 rhs = static_cast<unsigned __int128>(ss[i]) + borrow;
    d[i] = static_cast<uint64_t>(lhs - rhs);
    borrow = lhs < rhs ? 1 : 0;
  }
  char buf[65];
  std::snprintf(buf, sizeof buf, "%016llx%016llx%016llx%016llx",
                static_cast<unsigned long long>(d[0]), static_cast<unsigned long long>(d[1]),
                static_cast<unsigned long long>(d[2]), static_cast<unsigned long long>(d[3]));
  const std::string high = s.substr(0, 66) + buf + "1b";  // v 28 -> 27
  EXPECT_EQ(recover_address("dcl-0.eteoa4r566", high).value_or(""), kAddress);
}

TEST(Recover, WrongMessageRecoversAnotherAddress) {
  const auto addr = recover_address("dcl-0.eteoa4r567", kSig);
  ASSERT_TRUE(addr.has_value());
  EXPECT_NE(*addr, kAddress);
}

TEST(Challenge, Format) {
  const std::string a = random_challenge(), b = random_challenge();
  ASSERT_EQ(a.size(), 36u);
  EXPECT_EQ(a.substr(0, 4), "dcl-");
  for (char c : a.substr(4)) EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  EXPECT_NE(a, b);
}

}  // namespace
