#include "clients.hpp"

#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

#include "dclcomms/auth/auth.hpp"
#include "dclcomms/auth/datetime.hpp"
#include "dclcomms/codec/codec.hpp"

namespace dclcomms::ws::testing {

namespace {

using codec::Object;
using codec::Value;

// A valid secp256k1 key from a seed: keccak256 of the seed text (a hash is
// below the group order with overwhelming probability; re-hash otherwise).
auth::PrivateKey key_from(std::string text) {
  for (;;) {
    auth::Hash32 h = auth::keccak256(text);
    auth::PrivateKey k;
    std::copy(h.begin(), h.end(), k.begin());
    if (auth::is_valid_private_key(k)) return k;
    text += "'";
  }
}

nlohmann::json link(const std::string& type, std::string_view payload,
                    const std::string& signature) {
  return {{"type", type}, {"payload", std::string(payload)}, {"signature", signature}};
}

std::string client_packet(const char* member, Value message) {
  return codec::encode("decentraland.kernel.comms.v3.ClientPacket",
                       Value(Object{{member, std::move(message)}}));
}

std::string room_packet(const char* member, Value message) {
  return codec::encode("decentraland.kernel.comms.rfc5.WsPacket",
                       Value(Object{{member, std::move(message)}}));
}

}  // namespace

Wallet::Wallet(uint64_t seed)
    : key_(key_from("dclcomms wallet " + std::to_string(seed))),
      ephemeral_(key_from("dclcomms ephemeral " + std::to_string(seed))),
      address_(auth::address_of(key_)) {}

std::string Wallet::auth_chain(std::string_view payload, int64_t expires_unix_ms) const {
  const std::string text = "Decentraland Login\nEphemeral address: " +
                           auth::to_checksum_address(auth::address_of(ephemeral_)) +
                           "\nExpiration: " + auth::format_iso8601_ms(expires_unix_ms);
  return nlohmann::json::array(
             {link("SIGNER", auth::to_checksum_address(address_), ""),
              link("ECDSA_EPHEMERAL", text, auth::sign_personal(key_, text)),
              link("ECDSA_SIGNED_ENTITY", payload, auth::sign_personal(ephemeral_, payload))})
      .dump();
}

std::string challenge_request(std::string_view address) {
  return client_packet("challenge_request", Object{{"address", address}});
}

std::string signed_challenge(std::string_view auth_chain_json) {
  return client_packet("signed_challenge", Object{{"auth_chain_json", auth_chain_json}});
}

std::string heartbeat(std::optional<codec::Position> position,
                      std::optional<std::string> desired_room) {
  Object hb;
  if (position) {
    hb.emplace_back("position", Object{{"x", static_cast<double>(position->x)},
                                       {"y", static_cast<double>(position->y)},
                                       {"z", static_cast<double>(position->z)}});
  }
  if (desired_room) hb.emplace_back("desired_room", *desired_room);
  return client_packet("heartbeat", std::move(hb));
}

std::string peer_identification(std::string_view address) {
  return room_packet("peer_identification", Object{{"address", address}});
}

std::string signed_challenge_for_server(std::string_view auth_chain_json) {
  return room_packet("signed_challenge_for_server", Object{{"auth_chain_json", auth_chain_json}});
}

std::string peer_update(uint32_t from_alias, std::string_view body, bool unreliable) {
  return room_packet("peer_update_message", Object{{"from_alias", from_alias},
                                                   {"body", codec::Bytes{std::string(body)}},
                                                   {"unreliable", unreliable}});
}

Value server_packet(std::string_view payload) {
  return codec::decode("decentraland.kernel.comms.v3.ServerPacket", payload, {true});
}

Value ws_packet(std::string_view payload) {
  return codec::decode("decentraland.kernel.comms.rfc5.WsPacket", payload, {true});
}

std::string member(const Value& packet) {
  const auto& obj = packet.as_object();
  return obj.empty() ? "" : obj.front().first;
}

const Value& at(const Value& object, std::string_view key) {
  for (const auto& [k, v] : object.as_object()) {
    if (k == key) return v;
  }
  throw std::out_of_range("no key " + std::string(key));
}

const Value& path(const Value& packet, std::string_view dotted) {
  const Value* v = &packet;
  while (!dotted.empty()) {
    auto dot = dotted.find('.');
    v = &at(*v, dotted.substr(0, dot));
    dotted = dot == std::string_view::npos ? std::string_view{} : dotted.substr(dot + 1);
  }
  return *v;
}

std::string last_challenge(const Conn& c) {
  if (c->sent.empty()) throw std::runtime_error("no frame sent");
  const std::string& payload = c->sent.back().payload;
  if (c->kind == Hub::Kind::Room) {
    return path(ws_packet(payload), "challengeMessage.challengeToSign").as_string();
  }
  return path(server_packet(payload), "challengeResponse.challengeToSign").as_string();
}

namespace {

constexpr int64_t kHour = 3'600'000;

Conn finish(FakeEndpoint& ep, const Conn& c, const char* welcome) {
  ep.finish_verifications();
  if (!c->open() || c->sent.empty()) {
    throw std::runtime_error("not welcomed: closed " + std::to_string(c->close_code.value_or(0)) +
                             " " + c->close_reason);
  }
  const std::string& payload = c->sent.back().payload;
  auto packet = c->kind == Hub::Kind::Room ? ws_packet(payload) : server_packet(payload);
  if (member(packet) != welcome) throw std::runtime_error("not welcomed: " + member(packet));
  return c;
}

}  // namespace

Conn join_connector(FakeEndpoint& ep, const Wallet& wallet, const std::string& path) {
  Conn c = ep.connect(path);
  if (!c) throw std::runtime_error(path + " is not served");
  ep.receive(c, challenge_request(wallet.address()));
  ep.receive(c, signed_challenge(wallet.auth_chain(last_challenge(c), ep.unix_ms() + kHour)));
  return finish(ep, c, "welcome");
}

Conn join_room(FakeEndpoint& ep, const Wallet& wallet, const std::string& room,
               const std::string& query) {
  Conn c = ep.connect("/rooms/" + room + (query.empty() ? "" : "?" + query));
  if (!c) throw std::runtime_error("rooms are not served");
  ep.receive(c, peer_identification(wallet.address()));
  ep.receive(
      c, signed_challenge_for_server(wallet.auth_chain(last_challenge(c), ep.unix_ms() + kHour)));
  return finish(ep, c, "welcomeMessage");
}

}  // namespace dclcomms::ws::testing
