#pragma once
// The client side of the connector, bus and RFC-5 room handshakes for tests
// and fuzz targets: wallets with seeded keys signing real auth chains, client
// packets, and server frames decoded with the generic codec. No GoogleTest.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dclcomms/auth/keys.hpp"
#include "dclcomms/codec/fast.hpp"
#include "dclcomms/codec/value.hpp"
#include "fake_endpoint.hpp"

namespace dclcomms::ws::testing {

// A wallet with a key derived from seed, and the ephemeral key it authorizes.
class Wallet {
 public:
  explicit Wallet(uint64_t seed);
  const std::string& address() const { return address_; }  // lowercase 0x
  // [SIGNER, ECDSA_EPHEMERAL (valid until expires_unix_ms), ECDSA_SIGNED_ENTITY
  // (payload signed by the ephemeral key)] as JSON text (authchain.md).
  std::string auth_chain(std::string_view payload, int64_t expires_unix_ms) const;

 private:
  auth::PrivateKey key_{}, ephemeral_{};
  std::string address_;
};

// ClientPacket frames (decentraland.kernel.comms.v3): connector and bus.
std::string challenge_request(std::string_view address);
std::string signed_challenge(std::string_view auth_chain_json);
std::string heartbeat(std::optional<codec::Position> position,
                      std::optional<std::string> desired_room = std::nullopt);

// WsPacket frames (decentraland.kernel.comms.rfc5): rooms.
std::string peer_identification(std::string_view address);
std::string signed_challenge_for_server(std::string_view auth_chain_json);
std::string peer_update(uint32_t from_alias, std::string_view body, bool unreliable);

// Server frames in the protobuf JSON mapping with defaults included, e.g.
// {"challengeResponse": {"challengeToSign": "dcl-...", "alreadyConnected": false}}.
codec::Value server_packet(std::string_view payload);  // v3.ServerPacket
codec::Value ws_packet(std::string_view payload);      // rfc5.WsPacket
// The oneof member set in a decoded packet ("" when none).
std::string member(const codec::Value& packet);
// The value under key of an object; throws std::out_of_range when absent.
const codec::Value& at(const codec::Value& object, std::string_view key);
// at(at(packet, member), key) for a path "member.key[.key...]".
const codec::Value& path(const codec::Value& packet, std::string_view dotted);

// The challenge of the last frame sent to c (challenge_response on the
// connector and bus, challenge_message in rooms); throws when it is not one.
std::string last_challenge(const Conn& c);
// Connects to path ("/ws", "/archipelago/ws" or "/bus") and completes the
// handshake of wallet (auth chain valid for an hour on ep's clock); returns
// the connection once welcomed, else throws std::runtime_error.
Conn join_connector(FakeEndpoint& ep, const Wallet& wallet, const std::string& path = "/ws");
// The same for /rooms/<room>[?query].
Conn join_room(FakeEndpoint& ep, const Wallet& wallet, const std::string& room,
               const std::string& query = "");

}  // namespace dclcomms::ws::testing
