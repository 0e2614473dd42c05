// Keccak-256 known answers and the personal_sign worked inputs of
// authchain.md section 3.

#include <gtest/gtest.h>

#include <string>

#include "dclcomms/auth/auth.hpp"
#include "dclcomms/auth/keys.hpp"

namespace {

using dclcomms::auth::Hash32;

std::string hex(const Hash32& h) {
  return dclcomms::auth::to_hex(h.data(), h.size());
}

TEST(Keccak256, Empty) {
  EXPECT_EQ(hex(dclcomms::auth::keccak256("")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
}

TEST(Keccak256, Abc) {
  EXPECT_EQ(hex(dclcomms::auth::keccak256("abc")),
            "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45");
}

TEST(Keccak256, RateBoundary) {
  // 135 bytes: padding fits in one block; 136: a full block plus a padding
  // block; 200 bytes (0..199): crosses the 136-byte rate.
  EXPECT_EQ(hex(dclcomms::auth::keccak256(std::string(135, 'a'))),
            "34367dc248bbd832f4e3e69dfaac2f92638bd0bbd18f2912ba4ef454919cf446");
  EXPECT_EQ(hex(dclcomms::auth::keccak256(std::string(136, 'a'))),
            "a6c4d403279fe3e0af03729caada8374b5ca54d8065329a3ebcaeb4b60aa386e");
  std::string bytes(200, '\0');
  for (int i = 0; i < 200; ++i) bytes[i] = static_cast<char>(i);
  EXPECT_EQ(hex(dclcomms::auth::keccak256(bytes)),
            "bfb0aa97863e797943cf7c33bb7e880bb4543f3d2703c0923c6901c2af57b890");
}

TEST(PersonalHash, WorkedInputsOfTheSpec) {
  EXPECT_EQ(hex(dclcomms::auth::personal_message_hash("dcl-0.eteoa4r566")),
            "925220026de91f128d793bc7775771ed927cfbfe4a2ea43ec46d93385c59911d");
  EXPECT_EQ(hex(dclcomms::auth::personal_message_hash(
                "Decentraland Login\nEphemeral address: 0xbAfd431c12B104d0ef5a6C281c2681fbdEdbbB51"
                "\nExpiration: 2025-06-02T12:00:00.000Z")),
            "172c3382d1f782af1feadc206eb0e25844fb022d336e1fd1bb9fabd9d51eff08");
  // "dcl-café🙂": 13 UTF-8 bytes (the length is in bytes, not UTF-16 units).
  EXPECT_EQ(hex(dclcomms::auth::personal_message_hash("dcl-caf\xc3\xa9\xf0\x9f\x99\x82")),
            "4a8f75025dcce2fb3a63ff70719a556ff94608e601b214fb26e27062cc2bd10f");
}

}  // namespace
