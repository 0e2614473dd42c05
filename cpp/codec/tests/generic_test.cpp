// The generic codec: encoding rules E1-E9, the JSON mapping, and every
// encode/decode error code.

#include <gtest/gtest.h>

#include <cmath>

#include "dclcomms/codec/codec.hpp"
#include "dclcomms/error.hpp"
#include "test_helpers.hpp"

namespace dclcomms::codec {
namespace {

using testing::hex;
using testing::unhex;

constexpr const char* kClient = "decentraland.kernel.comms.v3.ClientPacket";
constexpr const char* kServer = "decentraland.kernel.comms.v3.ServerPacket";
constexpr const char* kHeartbeat = "decentraland.kernel.comms.v3.Heartbeat";
constexpr const char* kIsland = "decentraland.kernel.comms.v3.IslandChangedMessage";
constexpr const char* kPacket = "decentraland.kernel.comms.rfc4.Packet";
constexpr const char* kMovement = "decentraland.kernel.comms.rfc4.Movement";
constexpr const char* kStatus = "decentraland.kernel.comms.v3.ServiceStatus";

Value obj(Object o) {
  return Value(std::move(o));
}

std::string encode_error_code(const char* type, const Value& v) {
  try {
    encode(type, v);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Encode) << e.what();
    EXPECT_NE(std::string(e.what()).find(type), std::string::npos) << e.what();
    return e.code();
  }
  return "no error";
}

std::string decode_error_code(const char* type, const std::string& bytes) {
  try {
    decode(type, bytes);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Decode) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind(std::string(type) + ": ", 0), 0u) << e.what();
    return e.code();
  }
  return "no error";
}

TEST(Generic, E1DefaultsAreNotWrittenIncludingNegativeZero) {
  EXPECT_EQ(hex(encode(kHeartbeat, obj({{"position", obj({{"x", -0.0}, {"y", 0}, {"z", 0.0}})}}))),
            "0a00");
  EXPECT_EQ(hex(encode(kServer, obj({{"welcome", obj({{"peerId", ""}})}}))), "1200");
}

TEST(Generic, E2OptionalWrittenEvenWhenDefault) {
  EXPECT_EQ(hex(encode(kHeartbeat, obj({{"desiredRoom", ""}}))), "1200");
  EXPECT_EQ(decode(kHeartbeat, unhex("1200")), obj({{"desiredRoom", ""}}));
  EXPECT_EQ(decode(kHeartbeat, "", DecodeOptions{true}), obj({}));
}

TEST(Generic, E3E4EmptySubMessagesAreWritten) {
  EXPECT_EQ(hex(encode(kServer, obj({{"kicked", obj({})}}))), "3200");
  EXPECT_EQ(hex(encode(kServer, obj({{"kicked", obj({{"reason", "KR_NEW_SESSION"}})}}))), "3200");
  EXPECT_EQ(hex(encode(kClient, obj({{"heartbeat", obj({{"position", obj({})}})}}))), "1a020a00");
  EXPECT_EQ(decode(kServer, unhex("3200"), DecodeOptions{true}),
            obj({{"kicked", obj({{"reason", "KR_NEW_SESSION"}})}}));
}

TEST(Generic, E5LastOneofMemberWinsAndUnknownFieldsAreSkipped) {
  // challenge_request{address "a"} then heartbeat{} then an unknown fixed64.
  const std::string bytes = unhex(
      "0a030a0161"
      "1a00"
      "f901"
      "0102030405060708");
  EXPECT_EQ(decode(kClient, bytes), obj({{"heartbeat", obj({})}}));
}

TEST(Generic, SingularSubMessageSeenTwiceIsMerged) {
  // heartbeat{position{x=1}} then heartbeat{position{y=2}}.
  const std::string bytes = unhex(
      "1a070a050d0000803f"
      "1a070a0515"
      "00000040");
  EXPECT_EQ(decode(kClient, bytes),
            obj({{"heartbeat", obj({{"position", obj({{"x", 1.0}, {"y", 2.0}})}})}}));
}

TEST(Generic, E7MapDuplicateKeyLastWinsAtFirstPositionMissingValueIsDefault) {
  // peers: "a" -> {x=1}, "b" -> (no value), "a" -> {y=2}
  const std::string bytes = unhex(
      "220a0a016112050d0000803f"
      "22030a0162"
      "220a0a0161120515"
      "00000040");
  const Value got = decode(kIsland, bytes);
  ASSERT_EQ(got.as_object().size(), 1u) << got.to_json();
  const Object& peers = got.find("peers")->as_object();
  ASSERT_EQ(peers.size(), 2u);
  EXPECT_EQ(peers[0].first, "a");
  EXPECT_EQ(peers[0].second, obj({{"y", 2.0}}));
  EXPECT_EQ(peers[1].first, "b");
  EXPECT_EQ(peers[1].second, obj({}));
}

TEST(Generic, E8DeclarationOrder) {
  // ProfileRequest: address (4) before profile_version (3); Packet: member
  // before protocol_version (11).
  EXPECT_EQ(hex(encode(kPacket,
                       obj({{"protocolVersion", 11},
                            {"profileRequest", obj({{"profileVersion", 3}, {"address", "a"}})}}))),
            "1a05220161180358"
            "0b");
  EXPECT_EQ(hex(encode(kMovement, obj({{"isStunned", true},
                                       {"glideState", "GLIDING"},
                                       {"jumpCount", 2},
                                       {"isJumping", true}}))),
            "5801c001027801b80102");
}

TEST(Generic, JsonMappingOfScalars) {
  EXPECT_EQ(
      hex(encode(kStatus, obj({{"currentTime", "1748779200000"}, {"userCount", 3}}))),
      hex(encode(kStatus, obj({{"current_time", int64_t{1748779200000}}, {"user_count", 3}}))));
  const Value got =
      decode(kStatus, encode(kStatus, obj({{"currentTime", "18446744073709551615"}})));
  EXPECT_EQ(got, obj({{"currentTime", "18446744073709551615"}}));
  // float32 values read back as their shortest decimal.
  const Value hb = decode(kHeartbeat, encode(kHeartbeat, obj({{"position", obj({{"x", 0.1}})}})));
  EXPECT_EQ(hb.find("position")->find("x")->as_double(), 0.1);
  const Value nan = decode(
      kHeartbeat, encode(kHeartbeat, obj({{"position", obj({{"x", "NaN"}, {"y", "-Infinity"}})}})));
  EXPECT_EQ(nan, obj({{"position", obj({{"x", "NaN"}, {"y", "-Infinity"}})}}));
}

TEST(Generic, BytesAcceptBase64VariantsAndRaw) {
  const char* scene = "decentraland.kernel.comms.rfc4.Scene";
  const std::string expected = hex(encode(scene, obj({{"data", Value(Bytes{"\xfb\xff"})}})));
  EXPECT_EQ(expected, "1202fbff");
  EXPECT_EQ(hex(encode(scene, obj({{"data", "+/8="}}))), expected);
  EXPECT_EQ(hex(encode(scene, obj({{"data", "-_8"}}))), expected);
  EXPECT_EQ(decode(scene, unhex(expected)), obj({{"data", "+/8="}}));
}

// 64-bit integers given as decimal strings (JSON's form), signed and unsigned.
TEST(Generic, DecimalStringIntegers) {
  const char* compressed = "decentraland.kernel.comms.rfc4.MovementCompressed";
  EXPECT_EQ(hex(encode(compressed, obj({{"movementData", "-2"}}))),
            hex(encode(compressed, obj({{"movementData", -2}}))));
  EXPECT_EQ(hex(encode(kStatus, obj({{"currentTime", "18446744073709551615"}}))),
            hex(encode(kStatus, obj({{"currentTime", Value(~uint64_t{0})}}))));
  EXPECT_EQ(encode_error_code(compressed, obj({{"movementData", "9223372036854775808"}})),
            "out_of_range");
  EXPECT_EQ(encode_error_code(compressed, obj({{"movementData", "1e3"}})), "bad_type");
  EXPECT_EQ(encode_error_code(compressed, obj({{"movementData", ""}})), "bad_type");
  EXPECT_EQ(encode_error_code(kStatus, obj({{"currentTime", "-1"}})), "out_of_range");
  EXPECT_EQ(encode_error_code(kStatus, obj({{"currentTime", " 1"}})), "bad_type");
}

TEST(Generic, EncodeErrorCodes) {
  EXPECT_EQ(encode_error_code(kHeartbeat, obj({{"nope", 1}})), "unknown_field");
  EXPECT_EQ(encode_error_code(kHeartbeat, obj({{"desiredRoom", 1}})), "bad_type");
  EXPECT_EQ(encode_error_code(kHeartbeat, Value(List{})), "bad_type");
  EXPECT_EQ(encode_error_code(kHeartbeat, obj({{"desiredRoom", "\xff"}})), "bad_type");
  EXPECT_EQ(encode_error_code(kStatus, obj({{"userCount", int64_t{1} << 32}})), "out_of_range");
  EXPECT_EQ(encode_error_code(kStatus, obj({{"userCount", -1}})), "out_of_range");
  EXPECT_EQ(encode_error_code(kStatus, obj({{"currentTime", "18446744073709551616"}})),
            "out_of_range");
  EXPECT_EQ(encode_error_code(kStatus, obj({{"currentTime", "12x"}})), "bad_type");
  EXPECT_EQ(encode_error_code(kStatus, obj({{"userCount", 1.5}})), "bad_type");
  EXPECT_EQ(encode_error_code(kHeartbeat, obj({{"position", obj({{"x", 1e300}})}})),
            "out_of_range");
  EXPECT_EQ(encode_error_code("decentraland.kernel.comms.rfc4.Scene", obj({{"data", "a=b"}})),
            "bad_base64");
  EXPECT_EQ(encode_error_code(kMovement, obj({{"glideState", "FLYING"}})), "bad_enum");
  EXPECT_EQ(encode_error_code(kClient, obj({{"heartbeat", obj({})}, {"signedChallenge", obj({})}})),
            "oneof_conflict");
  EXPECT_EQ(encode_error_code(kHeartbeat, obj({{"desiredRoom", "a"}, {"desired_room", "b"}})),
            "duplicate_field");
}

TEST(Generic, ErrorMessagesNameTheField) {
  try {
    encode(kClient, obj({{"heartbeat", obj({{"position", obj({{"x", "left"}})}})}}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "decentraland.kernel.comms.v3.ClientPacket: heartbeat.position.x: 'left' is "
                 "not a number");
  }
}

TEST(Generic, UnknownType) {
  try {
    decode("decentraland.Nope", "");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::UnknownType);
    EXPECT_EQ(e.code(), "unknown_type");
  }
  EXPECT_THROW(encode("decentraland.kernel.comms.v3.IslandChangedMessage.PeersEntry", obj({})),
               Error);
}

TEST(Generic, DecodeErrorCodes) {
  EXPECT_EQ(decode_error_code(kClient, unhex("1a")), "truncated");
  EXPECT_EQ(decode_error_code(kClient, unhex("1a05")), "bad_length");
  EXPECT_EQ(decode_error_code(kClient, unhex("08ffffffffffffffffff7f")), "bad_varint");
  EXPECT_EQ(decode_error_code(kClient, unhex("0e")), "bad_wire_type");
  EXPECT_EQ(decode_error_code(kClient, unhex("0f")), "bad_wire_type");
  EXPECT_EQ(decode_error_code(kClient, unhex("00")), "bad_wire_type");  // field 0
  EXPECT_EQ(decode_error_code(kClient, unhex("0b14")), "bad_group");    // group 1 closed by 2
  EXPECT_EQ(decode_error_code(kClient, unhex("0c")), "bad_group");      // stray end group
  EXPECT_EQ(decode_error_code(kClient, unhex("0b")), "truncated");
  EXPECT_EQ(decode_error_code(kClient, unhex("0a030a01ff")), "invalid_utf8");
  EXPECT_EQ(decode_error_code(kHeartbeat, unhex("0a030d0000")), "truncated");
  std::string deep;
  for (int i = 0; i < 101; ++i) deep += "\x4b";  // start group 9
  EXPECT_EQ(decode_error_code(kClient, deep), "too_deep");
  std::string ok_groups;
  for (int i = 0; i < 99; ++i) ok_groups += "\x4b";
  for (int i = 0; i < 99; ++i) ok_groups += "\x4c";
  EXPECT_EQ(decode(kClient, ok_groups), obj({}));
}

TEST(Generic, ErrorMessageHasTypeAndOffset) {
  try {
    decode(kClient, unhex("1a0580"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "decentraland.kernel.comms.v3.ClientPacket: length 5 at offset 1 exceeds the 1 "
                 "remaining bytes");
  }
  try {
    decode(kClient, unhex("0880"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "decentraland.kernel.comms.v3.ClientPacket: truncated varint at offset 1");
  }
}

TEST(Generic, MismatchedWireTypeIsSkippedLikeAnUnknownField) {
  const char* data = "decentraland.kernel.comms.v3.IslandData";
  EXPECT_EQ(decode(data, unhex("1d01000000"
                               "1802")),
            obj({{"maxPeers", 2}}));
}

TEST(Generic, IncludingDefaultsPrintsImplicitFieldsOnly) {
  const Value got = decode("decentraland.kernel.comms.v3.IslandData", "", DecodeOptions{true});
  EXPECT_EQ(got, obj({{"id", ""}, {"peers", Value(List{})}, {"maxPeers", 0}, {"radius", 0.0}}));
  const Value status = decode(kStatus, "", DecodeOptions{true});
  EXPECT_EQ(status, obj({{"currentTime", "0"}, {"userCount", 0}}));
}

TEST(Generic, MessageTypesListsEveryType) {
  const auto types = message_types();
  EXPECT_NE(std::find(types.begin(), types.end(), kClient), types.end());
  EXPECT_NE(std::find(types.begin(), types.end(), "decentraland.common.Position"), types.end());
  EXPECT_EQ(std::find(types.begin(), types.end(),
                      "decentraland.kernel.comms.v3.IslandChangedMessage.PeersEntry"),
            types.end());
  EXPECT_TRUE(std::is_sorted(types.begin(), types.end()));
}

TEST(Generic, RandomMessagesRoundTrip) {
  const uint64_t seed = testing::test_seed();
  std::mt19937_64 rng(seed);
  for (const auto* d : testing::all_message_types()) {
    for (int i = 0; i < 200; ++i) {
      const Value v = testing::random_message(d, rng);
      const std::string bytes = encode(d->full_name(), v);
      ASSERT_EQ(decode(d->full_name(), bytes), v)
          << "seed " << seed << " " << d->full_name() << " " << v.to_json();
      ASSERT_EQ(encode(d->full_name(), decode(d->full_name(), bytes)), bytes) << "seed " << seed;
    }
  }
}

}  // namespace
}  // namespace dclcomms::codec
