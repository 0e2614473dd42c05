#pragma once
// Typed fast paths for the hot messages, used by the WebSocket servers and the
// NATS bridge without going through the generic (dict) codec.
//
// Contract: encoders produce exactly the bytes of the generic encoder (and of
// the reference ts-proto encoder) for the same message: declaration order,
// implicit defaults (including -0.0) omitted, maps in the given order.
// Decoders follow wire.md section 2 (unknown fields skipped, last oneof member
// wins, any field order) and throw dclcomms::Error{ErrorKind::Decode, code} on
// bytes that are not a valid message. All functions are thread-safe (no
// shared state).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dclcomms::codec {

struct Position {
  float x = 0;
  float y = 0;
  float z = 0;
};

// --- decentraland.kernel.comms.v3 ---------------------------------------------

struct Heartbeat {
  std::optional<Position> position;         // absent = "no position"
  std::optional<std::string> desired_room;  // absent = keep; "" = clear
};

struct ClientPacket {
  enum class Kind { None, ChallengeRequest, SignedChallenge, Heartbeat };
  Kind kind = Kind::None;       // None: no oneof member present
  std::string address;          // ChallengeRequest
  std::string auth_chain_json;  // SignedChallenge
  codec::Heartbeat heartbeat;   // Heartbeat
};

ClientPacket decode_client_packet(std::string_view data);
Heartbeat decode_heartbeat(std::string_view data);  // bare Heartbeat (NATS)
std::string encode_heartbeat(const Heartbeat& hb);  // bare Heartbeat (NATS)
// The same bytes appended to `out` (a publisher reusing one buffer per message).
void append_heartbeat(std::string& out, const Heartbeat& hb);

struct IslandChanged {
  std::string island_id;
  std::string conn_str;
  std::optional<std::string> from_island_id;
  std::vector<std::pair<std::string, Position>> peers;  // member order, recipient included
};

// Bare messages (NATS payloads).
std::string encode_island_changed_message(const IslandChanged& msg);
// Only the peers entries (what encode_island_changed_message writes after the
// header fields) of n members: peer_ids[i] at xyz[3i..3i+2]. Equal to
// encode_island_changed_message of a message without header fields.
std::string encode_island_changed_peers(const std::vector<std::string>& peer_ids, const float* xyz);
IslandChanged decode_island_changed_message(std::string_view data);

// An IslandChangedMessage split into its header fields and the tail holding
// its peers entries. Encoders write the peers map last, so every message sent
// to the members of one island in a tick carries the same tail byte for byte
// (only island_id / conn_str / from_island_id differ per recipient): a
// receiver decodes that tail once and shares the result.
//
// The header fields are decoded as decode_island_changed_message does;
// everything else is only walked (tags and lengths checked, contents not).
// `peers_offset` is where the first peers entry starts when every field from
// there to the end is a peers entry (data.size() when there is none); then
// decode_island_changed_message(data.substr(peers_offset)).peers are the
// message's peers, and that call validates them. It is kNoPeersTail when some
// other field follows a peers entry: decode the whole message instead.
inline constexpr size_t kNoPeersTail = static_cast<size_t>(-1);

struct IslandChangedHeader {
  std::string island_id;
  std::string conn_str;
  std::optional<std::string> from_island_id;
  size_t peers_offset = 0;
};

IslandChangedHeader decode_island_changed_header(std::string_view data);

// ServerPacket frames (ws-connector -> client).
std::string encode_server_challenge_response(std::string_view challenge_to_sign,
                                             bool already_connected);
std::string encode_server_welcome(std::string_view peer_id);
std::string encode_server_island_changed(const IslandChanged& msg);
// The same frame from the header fields and the peers entries already encoded
// (the bytes encode_island_changed_message writes after the header fields,
// e.g. the tail that decode_island_changed_header locates): the header is
// encoded here, the entries copied as they are (not inspected). Equal to
// encode_server_island_changed(msg) when the entries are those of msg.peers.
std::string encode_server_island_changed(std::string_view island_id, std::string_view conn_str,
                                         const std::optional<std::string>& from_island_id,
                                         std::string_view peers_entries);
// The bytes of that frame before the peers entries (whose size is given): the
// frame is this head followed by the entries, so recipients of one island can
// share the entries (a frame written as two parts) instead of each a copy.
std::string encode_server_island_changed_head(std::string_view island_id, std::string_view conn_str,
                                              const std::optional<std::string>& from_island_id,
                                              size_t peers_entries_size);
// ServerPacket{island_changed} around an already-encoded IslandChangedMessage
// (the bytes are not inspected: callers pass what they encoded or decoded).
std::string wrap_server_island_changed(std::string_view island_changed_message);
std::string encode_server_join_island(std::string_view island_id, std::string_view peer_id);
std::string encode_server_left_island(std::string_view island_id, std::string_view peer_id);
std::string encode_server_kicked();  // always {kicked{KR_NEW_SESSION}} = 32 00

// --- decentraland.kernel.comms.rfc5 -------------------------------------------

struct WsPacket {
  enum class Kind { None, PeerIdentification, SignedChallenge, PeerUpdate, Other };
  Kind kind = Kind::None;       // Other: a server->client member sent by a client
  std::string address;          // PeerIdentification
  std::string auth_chain_json;  // SignedChallenge
  // PeerUpdate: body is a view into the decoded buffer (valid while it lives).
  uint32_t from_alias = 0;
  std::string_view body;
  bool unreliable = false;
};

WsPacket decode_ws_packet(std::string_view data);

std::string encode_ws_welcome(uint32_t alias,
                              const std::vector<std::pair<uint32_t, std::string>>& peer_identities);
std::string encode_ws_peer_join(uint32_t alias, std::string_view address);
std::string encode_ws_peer_update(uint32_t from_alias, std::string_view body, bool unreliable);
std::string encode_ws_challenge(std::string_view challenge_to_sign, bool already_connected);
std::string encode_ws_peer_leave(uint32_t alias);
std::string encode_ws_peer_kicked(std::string_view reason);

}  // namespace dclcomms::codec
