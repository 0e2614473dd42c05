// Hand-written readers and writers for the hot messages. They share the wire
// primitives of the generic codec and follow the same rules; tests check them
// byte for byte (encoders) and value for value (decoders) against it.

#include "dclcomms/codec/fast.hpp"

#include <cstring>
#include <unordered_map>

#include "dclcomms/codec/wire.hpp"
#include "dclcomms/error.hpp"
#include "internal.hpp"

namespace dclcomms::codec {

namespace {

using wire::NestedWriter;
using wire::WireReader;

constexpr const char* kClientPacket = "decentraland.kernel.comms.v3.ClientPacket";
constexpr const char* kHeartbeat = "decentraland.kernel.comms.v3.Heartbeat";
constexpr const char* kIslandChanged = "decentraland.kernel.comms.v3.IslandChangedMessage";
constexpr const char* kWsPacket = "decentraland.kernel.comms.rfc5.WsPacket";

void check_depth(int depth, std::string_view data, const char* origin) {
  if (depth > wire::kMaxDepth) {
    wire::throw_decode("too_deep", "messages nested deeper than " +
                                       std::to_string(wire::kMaxDepth) + " at offset " +
                                       std::to_string(data.data() - origin));
  }
}

// The fields of one message, read in a loop (the depth checked first):
//   for (Fields f(data, origin, depth); f.next();) { read f.r's value, or f.skip(); }
// read_position, read_island_changed and decode_ws_packet keep their own loops:
// through Fields, GCC inlines less into them (callgrind: 0.06 % to 8 % more
// instructions per call); decode_island_changed_header needs each tag's offset.
struct Fields {
  Fields(std::string_view data, const char* origin, int depth) : r(data, origin), depth(depth) {
    check_depth(depth, data, origin);
  }
  // Reads the next tag into n and wt; false at the end of the message.
  bool next() {
    if (r.at_end()) return false;
    r.read_tag(n, wt);
    return true;
  }
  bool is(uint32_t number, uint32_t wire_type) const { return n == number && wt == wire_type; }
  void skip() { r.skip(n, wt, depth); }

  WireReader r;
  uint32_t n = 0;
  uint32_t wt = 0;
  const int depth;
};

std::string_view read_string(WireReader& r, const char* field) {
  const size_t at = r.offset();
  const std::string_view s = r.read_length_delimited();
  if (!wire::is_valid_utf8(s)) {
    wire::throw_decode("invalid_utf8", std::string("invalid UTF-8 in string field '") + field +
                                           "' at offset " + std::to_string(at));
  }
  return s;
}

// Reads a message whose only known field is string field 1 (ChallengeRequest,
// SignedChallenge, WsIdentification, ...), merging into `out`.
void read_single_string(std::string_view data, const char* origin, int depth, const char* field,
                        std::string& out) {
  for (Fields f(data, origin, depth); f.next();) {
    if (f.is(1, wire::kLen)) {
      out = read_string(f.r, field);
    } else {
      f.skip();
    }
  }
}

void read_position(std::string_view data, const char* origin, int depth, Position& pos) {
  check_depth(depth, data, origin);
  WireReader r(data, origin);
  while (!r.at_end()) {
    uint32_t n = 0;
    uint32_t wt = 0;
    r.read_tag(n, wt);
    if (wt == wire::kFixed32 && n >= 1 && n <= 3) {
      const float f = wire::bits_to_float(r.read_fixed32());
      (n == 1 ? pos.x : n == 2 ? pos.y : pos.z) = f;
    } else {
      r.skip(n, wt, depth);
    }
  }
}

void read_heartbeat(std::string_view data, const char* origin, int depth, Heartbeat& hb) {
  for (Fields f(data, origin, depth); f.next();) {
    if (f.is(1, wire::kLen)) {
      const std::string_view span = f.r.read_length_delimited();
      if (!hb.position) hb.position.emplace();  // merged when repeated
      read_position(span, origin, depth + 1, *hb.position);
    } else if (f.is(2, wire::kLen)) {
      hb.desired_room.emplace(read_string(f.r, "desiredRoom"));
    } else {
      f.skip();
    }
  }
}

void write_position(std::string& out, uint32_t field_number, const Position& p) {
  NestedWriter w(out, field_number);
  if (!wire::is_default_float(p.x)) {
    wire::write_tag(out, 1, wire::kFixed32);
    wire::write_float(out, p.x);
  }
  if (!wire::is_default_float(p.y)) {
    wire::write_tag(out, 2, wire::kFixed32);
    wire::write_float(out, p.y);
  }
  if (!wire::is_default_float(p.z)) {
    wire::write_tag(out, 3, wire::kFixed32);
    wire::write_float(out, p.z);
  }
  w.end();
}

void write_if_set(std::string& out, uint32_t field_number, std::string_view s) {
  if (!s.empty()) wire::write_bytes_field(out, field_number, s);
}

void write_if_set(std::string& out, uint32_t field_number, uint64_t v) {
  if (v != 0) {
    wire::write_tag(out, field_number, wire::kVarint);
    wire::write_varint(out, v);
  }
}

// Nested message `field_number` whose fields 1, 2, ... are `values` in order
// (string_view: string; uint64_t: varint or bool), each written when set.
template <typename... Values>
void write_message(std::string& out, uint32_t field_number, Values... values) {
  NestedWriter w(out, field_number);
  uint32_t n = 0;
  (write_if_set(out, ++n, values), ...);
  w.end();
}

// A ServerPacket / WsPacket frame: its oneof member `member` holding `values`.
template <typename... Values>
std::string frame(uint32_t member, Values... values) {
  std::string out;
  write_message(out, member, values...);
  return out;
}

void write_heartbeat_body(std::string& out, const Heartbeat& hb) {
  if (hb.position) write_position(out, 1, *hb.position);
  if (hb.desired_room) wire::write_bytes_field(out, 2, *hb.desired_room);  // E2
}

// The tag and length of a length-delimited field; its `len` payload bytes follow.
// (put_position and put_peer_entry write theirs inline: through this helper GCC
// compiles the per-peer loops into more instructions.)
char* put_len_prefix(char* p, uint32_t field_number, size_t len) noexcept {
  p = wire::put_tag(p, field_number, wire::kLen);
  return wire::put_varint(p, len);
}

// IslandChanged is the largest hot frame (one entry per island member): its
// exact size is computed first and it is written through a raw pointer.
size_t position_payload_size(const Position& p) noexcept {
  return 5 * static_cast<size_t>(!wire::is_default_float(p.x) + !wire::is_default_float(p.y) +
                                 !wire::is_default_float(p.z));
}

size_t peer_entry_payload_size(const std::string& peer_id, const Position& p) noexcept {
  const size_t key = peer_id.empty() ? 0 : wire::len_field_size(1, peer_id.size());
  return key + wire::len_field_size(2, position_payload_size(p));
}

size_t island_changed_body_size(const IslandChanged& msg) noexcept {
  size_t n = 0;
  if (!msg.island_id.empty()) n += wire::len_field_size(1, msg.island_id.size());
  if (!msg.conn_str.empty()) n += wire::len_field_size(2, msg.conn_str.size());
  if (msg.from_island_id) n += wire::len_field_size(3, msg.from_island_id->size());
  for (const auto& [peer_id, pos] : msg.peers) {
    n += wire::len_field_size(4, peer_entry_payload_size(peer_id, pos));
  }
  return n;
}

char* put_position(char* p, uint32_t field_number, const Position& pos) noexcept {
  p = wire::put_tag(p, field_number, wire::kLen);
  p = wire::put_varint(p, position_payload_size(pos));
  if (!wire::is_default_float(pos.x)) p = wire::put_float_field(p, 1, pos.x);
  if (!wire::is_default_float(pos.y)) p = wire::put_float_field(p, 2, pos.y);
  if (!wire::is_default_float(pos.z)) p = wire::put_float_field(p, 3, pos.z);
  return p;
}

// One peers entry (field 4): key, then the value, always written when present.
char* put_peer_entry(char* p, const std::string& peer_id, const Position& pos) noexcept {
  p = wire::put_tag(p, 4, wire::kLen);
  p = wire::put_varint(p, peer_entry_payload_size(peer_id, pos));
  if (!peer_id.empty()) p = wire::put_len_field(p, 1, peer_id);
  return put_position(p, 2, pos);
}

char* put_island_changed_body(char* p, const IslandChanged& msg) noexcept {
  if (!msg.island_id.empty()) p = wire::put_len_field(p, 1, msg.island_id);
  if (!msg.conn_str.empty()) p = wire::put_len_field(p, 2, msg.conn_str);
  if (msg.from_island_id) p = wire::put_len_field(p, 3, *msg.from_island_id);  // E2
  for (const auto& [peer_id, pos] : msg.peers) p = put_peer_entry(p, peer_id, pos);
  return p;
}

void read_island_changed(std::string_view data, const char* origin, int depth, IslandChanged& msg) {
  check_depth(depth, data, origin);
  // Peer ids as views into `data` (parallel to msg.peers), and a hash index
  // once the map is big enough that linear duplicate checks would be quadratic.
  constexpr size_t kLinearPeers = 16;
  std::vector<std::string_view> ids;
  std::unordered_map<std::string_view, size_t> index;
  WireReader r(data, origin);
  while (!r.at_end()) {
    uint32_t n = 0;
    uint32_t wt = 0;
    r.read_tag(n, wt);
    if (wt != wire::kLen || n < 1 || n > 4) {
      r.skip(n, wt, depth);
    } else if (n == 1) {
      msg.island_id = read_string(r, "islandId");
    } else if (n == 2) {
      msg.conn_str = read_string(r, "connStr");
    } else if (n == 3) {
      msg.from_island_id.emplace(read_string(r, "fromIslandId"));
    } else {
      // E7: missing value = default position; duplicate key replaces the
      // value at the key's first position.
      const std::string_view span = r.read_length_delimited();
      check_depth(depth + 1, span, origin);
      WireReader er(span, origin);
      std::string_view key;
      Position pos;
      while (!er.at_end()) {
        uint32_t en = 0;
        uint32_t ewt = 0;
        er.read_tag(en, ewt);
        if (en == 1 && ewt == wire::kLen) {
          key = read_string(er, "key");
        } else if (en == 2 && ewt == wire::kLen) {
          read_position(er.read_length_delimited(), origin, depth + 2, pos);  // merged
        } else {
          er.skip(en, ewt, depth + 1);
        }
      }
      size_t at = ids.size();
      if (ids.size() < kLinearPeers) {
        for (size_t i = 0; i < ids.size(); ++i) {
          if (ids[i] == key) {
            at = i;
            break;
          }
        }
      } else {
        if (index.empty()) {
          for (size_t i = 0; i < ids.size(); ++i) index.emplace(ids[i], i);
        }
        const auto [it, inserted] = index.emplace(key, ids.size());
        if (!inserted) at = it->second;
      }
      if (at < ids.size()) {
        msg.peers[at].second = pos;
      } else {
        ids.push_back(key);
        msg.peers.emplace_back(std::string(key), pos);
      }
    }
  }
}

template <typename F>
auto with_type(const char* type_name, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    wire::rethrow_with_type_name(e, type_name);
  }
}

}  // namespace

// --- v3 -------------------------------------------------------------------------

ClientPacket decode_client_packet(std::string_view data) {
  return with_type(kClientPacket, [&] {
    ClientPacket out;
    const char* origin = data.data();
    for (Fields f(data, origin, 0); f.next();) {
      if (f.wt != wire::kLen || f.n < 1 || f.n > 3) {
        f.skip();
        continue;
      }
      const std::string_view span = f.r.read_length_delimited();
      const auto kind = static_cast<ClientPacket::Kind>(f.n);  // 1..3 match the enum order
      if (out.kind != kind) {  // E5: a different member replaces the previous one
        out = ClientPacket{};
        out.kind = kind;
      }
      switch (kind) {
        case ClientPacket::Kind::ChallengeRequest:
          read_single_string(span, origin, 1, "address", out.address);
          break;
        case ClientPacket::Kind::SignedChallenge:
          read_single_string(span, origin, 1, "authChainJson", out.auth_chain_json);
          break;
        default:
          read_heartbeat(span, origin, 1, out.heartbeat);
          break;
      }
    }
    return out;
  });
}

Heartbeat decode_heartbeat(std::string_view data) {
  return with_type(kHeartbeat, [&] {
    Heartbeat hb;
    read_heartbeat(data, data.data(), 0, hb);
    return hb;
  });
}

std::string encode_heartbeat(const Heartbeat& hb) {
  std::string out;
  write_heartbeat_body(out, hb);
  return out;
}

void append_heartbeat(std::string& out, const Heartbeat& hb) {
  write_heartbeat_body(out, hb);
}

std::string encode_island_changed_peers(const std::vector<std::string>& peer_ids,
                                        const float* xyz) {
  size_t size = 0;
  for (size_t i = 0; i < peer_ids.size(); ++i) {
    const Position pos{xyz[3 * i], xyz[3 * i + 1], xyz[3 * i + 2]};
    size += wire::len_field_size(4, peer_entry_payload_size(peer_ids[i], pos));
  }
  std::string out(size, '\0');
  char* p = out.data();
  for (size_t i = 0; i < peer_ids.size(); ++i) {
    p = put_peer_entry(p, peer_ids[i], Position{xyz[3 * i], xyz[3 * i + 1], xyz[3 * i + 2]});
  }
  return out;
}

std::string encode_island_changed_message(const IslandChanged& msg) {
  std::string out(island_changed_body_size(msg), '\0');
  put_island_changed_body(out.data(), msg);
  return out;
}

IslandChanged decode_island_changed_message(std::string_view data) {
  return with_type(kIslandChanged, [&] {
    IslandChanged msg;
    read_island_changed(data, data.data(), 0, msg);
    return msg;
  });
}

IslandChangedHeader decode_island_changed_header(std::string_view data) {
  return with_type(kIslandChanged, [&] {
    IslandChangedHeader h;
    h.peers_offset = data.size();
    bool in_peers = false;
    WireReader r(data, data.data());
    while (!r.at_end()) {
      const size_t at = r.offset();
      uint32_t n = 0;
      uint32_t wt = 0;
      r.read_tag(n, wt);
      if (n == 4 && wt == wire::kLen) {
        if (!in_peers) {
          in_peers = true;
          h.peers_offset = at;
        }
        static_cast<void>(r.read_length_delimited());  // contents: decoded from the tail
        continue;
      }
      if (in_peers) h.peers_offset = kNoPeersTail;  // keeps reading: the header must be right
      if (wt == wire::kLen && n == 1) {
        h.island_id = read_string(r, "islandId");
      } else if (wt == wire::kLen && n == 2) {
        h.conn_str = read_string(r, "connStr");
      } else if (wt == wire::kLen && n == 3) {
        h.from_island_id.emplace(read_string(r, "fromIslandId"));
      } else {
        r.skip(n, wt, 0);
      }
    }
    return h;
  });
}

std::string encode_server_challenge_response(std::string_view challenge_to_sign,
                                             bool already_connected) {
  return frame(1, challenge_to_sign, uint64_t{already_connected});
}

std::string encode_server_welcome(std::string_view peer_id) {
  return frame(2, peer_id);
}

std::string encode_server_island_changed(const IslandChanged& msg) {
  const size_t body = island_changed_body_size(msg);
  std::string out(wire::len_field_size(3, body), '\0');
  char* p = put_len_prefix(out.data(), 3, body);
  put_island_changed_body(p, msg);
  return out;
}

std::string encode_server_island_changed(std::string_view island_id, std::string_view conn_str,
                                         const std::optional<std::string>& from_island_id,
                                         std::string_view peers_entries) {
  std::string out =
      encode_server_island_changed_head(island_id, conn_str, from_island_id, peers_entries.size());
  out.append(peers_entries);
  return out;
}

std::string encode_server_island_changed_head(std::string_view island_id, std::string_view conn_str,
                                              const std::optional<std::string>& from_island_id,
                                              size_t peers_entries_size) {
  size_t fields = 0;
  if (!island_id.empty()) fields += wire::len_field_size(1, island_id.size());
  if (!conn_str.empty()) fields += wire::len_field_size(2, conn_str.size());
  if (from_island_id) fields += wire::len_field_size(3, from_island_id->size());
  const size_t body = fields + peers_entries_size;
  std::string out(wire::len_field_size(3, body) - peers_entries_size, '\0');
  char* p = put_len_prefix(out.data(), 3, body);
  if (!island_id.empty()) p = wire::put_len_field(p, 1, island_id);
  if (!conn_str.empty()) p = wire::put_len_field(p, 2, conn_str);
  if (from_island_id) wire::put_len_field(p, 3, *from_island_id);  // E2
  return out;
}

std::string wrap_server_island_changed(std::string_view message) {
  std::string out(wire::len_field_size(3, message.size()) - message.size(), '\0');
  char* p = put_len_prefix(out.data(), 3, message.size());
  out.resize(static_cast<size_t>(p - out.data()));
  out.append(message);
  return out;
}

std::string encode_server_join_island(std::string_view island_id, std::string_view peer_id) {
  return frame(5, island_id, peer_id);
}

std::string encode_server_left_island(std::string_view island_id, std::string_view peer_id) {
  return frame(4, island_id, peer_id);
}

std::string encode_server_kicked() {
  return std::string("\x32\x00", 2);
}

// --- rfc5 -----------------------------------------------------------------------

WsPacket decode_ws_packet(std::string_view data) {
  return with_type(kWsPacket, [&] {
    WsPacket out;
    const char* origin = data.data();
    WireReader r(data, origin);
    while (!r.at_end()) {
      uint32_t n = 0;
      uint32_t wt = 0;
      r.read_tag(n, wt);
      if (wt != wire::kLen || n < 1 || n > 8) {
        r.skip(n, wt, 0);
        continue;
      }
      const std::string_view span = r.read_length_delimited();
      WsPacket::Kind kind = WsPacket::Kind::Other;
      if (n == 7) kind = WsPacket::Kind::PeerIdentification;
      if (n == 5) kind = WsPacket::Kind::SignedChallenge;
      if (n == 3) kind = WsPacket::Kind::PeerUpdate;
      // Each member number is its own oneof case, even among the "Other" ones.
      if (out.kind != kind || kind == WsPacket::Kind::Other) {
        out = WsPacket{};
        out.kind = kind;
      }
      switch (n) {
        case 7:
          read_single_string(span, origin, 1, "address", out.address);
          break;
        case 5:
          read_single_string(span, origin, 1, "authChainJson", out.auth_chain_json);
          break;
        case 3: {
          check_depth(1, span, origin);
          WireReader pr(span, origin);
          while (!pr.at_end()) {
            uint32_t pn = 0;
            uint32_t pwt = 0;
            pr.read_tag(pn, pwt);
            if (pn == 1 && pwt == wire::kVarint) {
              out.from_alias = static_cast<uint32_t>(pr.read_varint());
            } else if (pn == 2 && pwt == wire::kLen) {
              out.body = pr.read_length_delimited();
            } else if (pn == 3 && pwt == wire::kVarint) {
              out.unreliable = pr.read_varint() != 0;
            } else {
              pr.skip(pn, pwt, 1);
            }
          }
          break;
        }
        default: {
          // Server->client members: not read, but validated like the generic
          // decoder would, so both accept exactly the same frames.
          static constexpr const char* kMembers[] = {
              nullptr,
              "decentraland.kernel.comms.rfc5.WsWelcome",
              "decentraland.kernel.comms.rfc5.WsPeerJoin",
              nullptr,
              "decentraland.kernel.comms.rfc5.WsChallengeRequired",
              nullptr,
              "decentraland.kernel.comms.rfc5.WsPeerLeave",
              nullptr,
              "decentraland.kernel.comms.rfc5.WsKicked",
          };
          detail::validate_nested(kMembers[n], span, origin, 1);
          break;
        }
      }
    }
    return out;
  });
}

std::string encode_ws_welcome(
    uint32_t alias, const std::vector<std::pair<uint32_t, std::string>>& peer_identities) {
  std::string out;
  out.reserve(8 + peer_identities.size() * 50);
  NestedWriter w(out, 1);
  write_if_set(out, 1, uint64_t{alias});
  for (const auto& [peer_alias, address] : peer_identities) {
    write_message(out, 2, uint64_t{peer_alias}, std::string_view(address));
  }
  w.end();
  return out;
}

std::string encode_ws_peer_join(uint32_t alias, std::string_view address) {
  return frame(2, uint64_t{alias}, address);
}

std::string encode_ws_peer_update(uint32_t from_alias, std::string_view body, bool unreliable) {
  // The relay's hot path: exact size, then raw writes.
  const size_t inner = (from_alias != 0 ? 1 + wire::varint_size(from_alias) : 0) +
                       (body.empty() ? 0 : wire::len_field_size(2, body.size())) +
                       (unreliable ? 2 : 0);
  std::string out(wire::len_field_size(3, inner), '\0');
  char* p = put_len_prefix(out.data(), 3, inner);
  if (from_alias != 0) p = wire::put_varint(wire::put_tag(p, 1, wire::kVarint), from_alias);
  if (!body.empty()) p = wire::put_len_field(p, 2, body);
  if (unreliable) wire::put_varint(wire::put_tag(p, 3, wire::kVarint), 1);
  return out;
}

std::string encode_ws_challenge(std::string_view challenge_to_sign, bool already_connected) {
  return frame(4, challenge_to_sign, uint64_t{already_connected});
}

std::string encode_ws_peer_leave(uint32_t alias) {
  return frame(6, uint64_t{alias});
}

std::string encode_ws_peer_kicked(std::string_view reason) {
  return frame(8, reason);
}

}  // namespace dclcomms::codec
