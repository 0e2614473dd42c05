// The hot NATS subjects in C++ with libnats: see client.hpp.

#include "dclcomms/nats/client.hpp"

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "dclcomms/codec/fast.hpp"
#include "dclcomms/codec/wire.hpp"
#include "dclcomms/error.hpp"

namespace dclcomms::nats {

namespace arch = dclcomms::archipelago;

namespace {

constexpr std::string_view kNativeHeartbeats = "dclcomms.v1.heartbeats";
constexpr size_t kAddressLen = 42;
// A native batch larger than this many rows travels as several messages
// (32 bytes per row: stays well under the server's default 1 MiB max_payload);
// fewer rows per message when the server's max_payload (its INFO) is smaller.
constexpr size_t kMaxBatchRows = 16384;

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// valid_address runs once per received message: eight characters at a time.
constexpr uint64_t kOnes = 0x0101010101010101ULL;
constexpr uint64_t kHigh = 0x8080808080808080ULL;
constexpr uint64_t kLow7 = 0x7f7f7f7f7f7f7f7fULL;

// The high bit of every byte b of x with m < b < n (each byte of x < 0x80,
// m <= 127, n <= 128): exact per byte ("countbetween", Bit Twiddling Hacks).
constexpr uint64_t bytes_between(uint64_t x, uint64_t m, uint64_t n) noexcept {
  return ((kOnes * (127 + n) - (x & kLow7)) & ~x & ((x & kLow7) + kOnes * (127 - m))) & kHigh;
}

// Eight lowercase hex digits.
bool hex8(const char* p) noexcept {
  uint64_t w = 0;
  std::memcpy(&w, p, 8);
  if ((w & kHigh) != 0) return false;
  return (bytes_between(w, '0' - 1, '9' + 1) | bytes_between(w, 'a' - 1, 'f' + 1)) == kHigh;
}

}  // namespace

bool heartbeat_position_only(std::string_view d, float xyz[3]) noexcept {
  if (d.size() < 2 || d.size() > 17 || d[0] != 0x0a ||
      static_cast<size_t>(static_cast<uint8_t>(d[1])) != d.size() - 2) {
    return false;
  }
  xyz[0] = xyz[1] = xyz[2] = 0.0f;
  unsigned seen = 0;
  for (size_t i = 2; i < d.size(); i += 5) {
    unsigned f = 0;
    switch (static_cast<uint8_t>(d[i])) {
      case 0x0d:
        f = 0;
        break;
      case 0x15:
        f = 1;
        break;
      case 0x1d:
        f = 2;
        break;
      default:
        return false;
    }
    if ((seen & (1u << f)) != 0 || d.size() - i < 5) return false;
    seen |= 1u << f;
    std::memcpy(&xyz[f], d.data() + i + 1, 4);  // little-endian hosts only
  }
  return true;
}

namespace {

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string status_text(natsStatus s) {
  return natsStatus_GetText(s);
}

// Appends a length-delimited field.
void put_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  codec::wire::write_tag(out, field, codec::wire::kLen);
  codec::wire::write_varint(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}

}  // namespace

Scheme parse_scheme(std::string_view name) {
  if (name == "native") return Scheme::Native;
  if (name == "workers") return Scheme::Workers;
  if (name == "v3") return Scheme::V3;
  throw Error(ErrorKind::Config, "invalid_parameter",
              "subject scheme must be native, workers or v3, got '" + std::string(name) + "'");
}

bool valid_address(std::string_view a) noexcept {
  if (a.size() != kAddressLen || a[0] != '0' || a[1] != 'x') return false;
  static_assert(kAddressLen == 2 + 5 * 8, "40 hex digits");
  const char* p = a.data() + 2;
  return hex8(p) && hex8(p + 8) && hex8(p + 16) && hex8(p + 24) && hex8(p + 32);
}

void address_to_raw(std::string_view a, char out[20]) noexcept {
  for (size_t i = 0; i < 20; ++i) {
    out[i] = static_cast<char>((hex_value(a[2 + 2 * i]) << 4) | hex_value(a[3 + 2 * i]));
  }
}

namespace {

// The two lowercase hex digits of every byte value.
struct HexPairs {
  char digits[256][2];
  constexpr HexPairs() : digits() {
    constexpr char kHex[] = "0123456789abcdef";
    for (int b = 0; b < 256; ++b) {
      digits[b][0] = kHex[b >> 4];
      digits[b][1] = kHex[b & 15];
    }
  }
};
constexpr HexPairs kHexPairs;

}  // namespace

void raw_to_hex(const char raw[20], char out[40]) noexcept {
  for (size_t i = 0; i < 20; ++i) {
    std::memcpy(out + 2 * i, kHexPairs.digits[static_cast<uint8_t>(raw[i])], 2);
  }
}

void raw_to_address(const char raw[20], std::string& out) {
  const size_t at = out.size();
  out.resize(at + kAddressLen);
  out[at] = '0';
  out[at + 1] = 'x';
  raw_to_hex(raw, &out[at + 2]);
}

std::string heartbeat_subject(Scheme scheme, std::string_view address) {
  std::string s;
  s.reserve(64);
  if (scheme == Scheme::V3) s.append("client-proto.");
  s.append("peer.");
  s.append(address.data(), address.size());
  s.append(".heartbeat");
  return s;
}

std::string encode_heartbeat_batch(const HeartbeatRows& rows) {
  std::string out;
  const size_t n = rows.size();
  out.reserve(n * 36 + 16);
  if (n) {
    put_bytes(out, 1, rows.raw_addresses);
    put_bytes(
        out, 2,
        std::string_view(reinterpret_cast<const char*>(rows.xyz.data()), rows.xyz.size() * 4));
  }
  std::string entry;
  for (const auto& [index, room] : rows.rooms) {
    entry.clear();
    if (index != 0) {
      codec::wire::write_tag(entry, 1, codec::wire::kVarint);
      codec::wire::write_varint(entry, index);
    }
    if (!room.empty()) put_bytes(entry, 2, room);
    put_bytes(out, 3, entry);
  }
  return out;
}

HeartbeatRows decode_heartbeat_batch(std::string_view data) {
  using codec::wire::WireReader;
  HeartbeatRows rows;
  std::string_view positions;
  std::vector<std::pair<uint32_t, std::string>> rooms;
  WireReader r(data);
  while (!r.at_end()) {
    uint32_t field = 0, type = 0;
    r.read_tag(field, type);
    if (field == 1 && type == codec::wire::kLen) {
      rows.raw_addresses.assign(r.read_length_delimited());
    } else if (field == 2 && type == codec::wire::kLen) {
      positions = r.read_length_delimited();
    } else if (field == 3 && type == codec::wire::kLen) {
      WireReader e(r.read_length_delimited(), r.origin());
      uint64_t index = 0;
      std::string room;
      while (!e.at_end()) {
        uint32_t f = 0, t = 0;
        e.read_tag(f, t);
        if (f == 1 && t == codec::wire::kVarint) {
          index = e.read_varint();
        } else if (f == 2 && t == codec::wire::kLen) {
          room.assign(e.read_length_delimited());
        } else {
          e.skip(f, t, 1);
        }
      }
      rooms.emplace_back(static_cast<uint32_t>(std::min<uint64_t>(index, UINT32_MAX)),
                         std::move(room));
    } else {
      r.skip(field, type, 0);
    }
  }
  const size_t n = rows.raw_addresses.size() / 20;
  if (rows.raw_addresses.size() != 20 * n || positions.size() != 12 * n) {
    throw Error(ErrorKind::Decode, "bad_length",
                "HeartbeatBatch: " + std::to_string(rows.raw_addresses.size()) +
                    " address bytes, " + std::to_string(positions.size()) + " position bytes");
  }
  rows.xyz.resize(3 * n);
  if (n) std::memcpy(rows.xyz.data(), positions.data(), 12 * n);
  for (const auto& [index, room] : rooms) {
    if (index >= n) {
      throw Error(ErrorKind::Decode, "bad_length",
                  "HeartbeatBatch: desired room index " + std::to_string(index) + " of " +
                      std::to_string(n));
    }
  }
  rows.rooms = std::move(rooms);
  return rows;
}

IslandChangesView decode_island_changes(std::string_view data) {
  using codec::wire::WireReader;
  IslandChangesView v;
  WireReader r(data);
  while (!r.at_end()) {
    uint32_t field = 0, type = 0;
    r.read_tag(field, type);
    if (field >= 1 && field <= 5) {
      if (type != codec::wire::kLen) {
        throw Error(ErrorKind::Decode, "bad_wire_type",
                    "IslandChanges: field " + std::to_string(field) + " has wire type " +
                        std::to_string(type));
      }
      const std::string_view bytes = r.read_length_delimited();
      switch (field) {
        case 1:
          v.island_id = bytes;
          break;
        case 2:
          v.peers = bytes;
          break;
        case 3:
          v.addresses = bytes;
          break;
        case 4:
          v.conn_strs.push_back(bytes);
          break;
        default:
          v.from_island_ids.push_back(bytes);
          break;
      }
    } else {
      r.skip(field, type, 0);
    }
  }
  return v;
}

namespace {

void put_varint_field(std::string& out, uint32_t field, uint64_t value) {
  codec::wire::write_tag(out, field, codec::wire::kVarint);
  codec::wire::write_varint(out, value);
}

constexpr uint32_t kPartField = 1000;
// Tag (2) + length (1) + snapshot (1 + 10) + index and count (1 + 5 each), at most.
constexpr size_t kPartHeaderMax = 2 + 1 + 11 + 2 * 6;
constexpr size_t kMaxParts = 65536;

}  // namespace

std::vector<std::string> split_island_status(std::string_view data, size_t max_payload,
                                             uint64_t snapshot) {
  using codec::wire::WireReader;
  if (data.size() <= max_payload) return {std::string(data)};
  if (max_payload <= kPartHeaderMax) {
    throw Error(ErrorKind::Encode, "max_payload",
                "max_payload " + std::to_string(max_payload) + " leaves no room for islands");
  }
  const size_t budget = max_payload - kPartHeaderMax;
  std::vector<std::pair<size_t, size_t>> groups;  // [first, last) entry of each part
  std::vector<std::string_view> entries;
  size_t size = 0;
  WireReader r(data);
  while (!r.at_end()) {
    const size_t start = r.offset();
    uint32_t field = 0, type = 0;
    r.read_tag(field, type);
    if (field != 1 || type != codec::wire::kLen) {
      r.skip(field, type, 0);  // only `data` entries are carried
      continue;
    }
    r.read_length_delimited();
    const std::string_view entry = data.substr(start, r.offset() - start);
    if (entry.size() > budget) {
      throw Error(ErrorKind::Encode, "max_payload",
                  "an island's entry is " + std::to_string(entry.size()) +
                      " bytes; a part holds at most " + std::to_string(budget) + " (max_payload " +
                      std::to_string(max_payload) + ")");
    }
    if (groups.empty() || size + entry.size() > budget) {
      groups.emplace_back(entries.size(), entries.size());
      size = 0;
    }
    entries.push_back(entry);
    groups.back().second = entries.size();
    size += entry.size();
  }
  if (groups.empty()) groups.emplace_back(0, 0);
  if (groups.size() > kMaxParts) {
    throw Error(ErrorKind::Encode, "max_payload",
                std::to_string(groups.size()) + " parts (at most 65536)");
  }
  std::vector<std::string> parts;
  parts.reserve(groups.size());
  std::string header;
  for (size_t i = 0; i < groups.size(); ++i) {
    header.clear();
    put_varint_field(header, 1, snapshot);
    if (i != 0) put_varint_field(header, 2, i);
    put_varint_field(header, 3, groups.size());
    std::string part;
    part.reserve(max_payload);
    put_bytes(part, kPartField, header);
    for (size_t e = groups[i].first; e < groups[i].second; ++e) part.append(entries[e]);
    parts.push_back(std::move(part));
  }
  return parts;
}

Classified classify(Scheme scheme, std::string_view s) noexcept {
  Classified c;
  if (scheme == Scheme::Native && s == kNativeHeartbeats) {
    c.kind = Classified::Kind::HeartbeatBatch;
    return c;
  }
  // The common case first: <prefix>0x<40 hex>.heartbeat of this scheme.
  if (scheme != Scheme::Native) {
    const size_t prefix = scheme == Scheme::V3 ? 18 : 5;  // "client-proto.peer." / "peer."
    if (s.size() == prefix + kAddressLen + 10 &&
        s.compare(0, prefix, scheme == Scheme::V3 ? "client-proto.peer." : "peer.") == 0 &&
        s.compare(prefix + kAddressLen, 10, ".heartbeat") == 0 &&
        valid_address(s.substr(prefix, kAddressLen))) {
      c.kind = Classified::Kind::Heartbeat;
      c.address = s.substr(prefix, kAddressLen);
      return c;
    }
  }
  std::string_view rest = s;
  bool v3_heartbeat = false;
  if (scheme == Scheme::V3 && rest.substr(0, 13) == "client-proto.") {
    rest.remove_prefix(13);
    v3_heartbeat = true;
  }
  if (rest.substr(0, 5) != "peer.") return c;
  rest.remove_prefix(5);
  const size_t dot = rest.find('.');
  if (dot == std::string_view::npos) return c;
  const std::string_view token = rest.substr(0, dot);
  const std::string_view last = rest.substr(dot + 1);
  Classified::Kind kind = Classified::Kind::Ignore;
  if (last == "heartbeat") {
    // workers: peer.<a>.heartbeat; v3: client-proto.peer.<a>.heartbeat
    if ((scheme == Scheme::Workers && !v3_heartbeat) || (scheme == Scheme::V3 && v3_heartbeat)) {
      kind = Classified::Kind::Heartbeat;
    }
  } else if (!v3_heartbeat && last == "connect") {
    kind = Classified::Kind::Connect;
  } else if (!v3_heartbeat && last == "disconnect") {
    kind = Classified::Kind::Disconnect;
  }
  if (kind == Classified::Kind::Ignore) return c;
  if (!valid_address(token)) {
    c.kind = Classified::Kind::BadAddress;
    return c;
  }
  c.kind = kind;
  c.address = token;
  return c;
}

// --- the connector relay ------------------------------------------------------------

namespace {

constexpr std::string_view kNativeIslandPrefix = "dclcomms.v1.island.";
constexpr std::string_view kNativeChanged = ".changed";
constexpr std::string_view kNativeMembers = ".members";

// An island id: 1-128 characters of [A-Za-z0-9_-] (dclcomms.nats.subjects.ISLAND_RE).
bool valid_island(std::string_view id) noexcept {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool starts_with(std::string_view s, std::string_view p) noexcept {
  return s.size() >= p.size() && s.compare(0, p.size(), p) == 0;
}
bool ends_with(std::string_view s, std::string_view p) noexcept {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

[[noreturn]] void bad_message(const std::string& what) {
  throw Error(ErrorKind::Decode, "bad_message", what);
}

// n x 20 raw bytes as 0x addresses.
std::vector<std::string> addresses_of(std::string_view raw, const char* what) {
  if (raw.size() % 20) {
    bad_message(std::string(what) + ": " + std::to_string(raw.size()) + " address bytes");
  }
  std::vector<std::string> out(raw.size() / 20);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].reserve(kAddressLen);
    raw_to_address(&raw[20 * i], out[i]);
  }
  return out;
}

// A proto3 string or bytes field of a small message: (field -> value); a known
// field with another wire type, or a string that is not UTF-8, is malformed.
struct SmallMessage {
  std::string_view f1, f2, f3;
};
SmallMessage read_small(std::string_view data, const char* type, bool f1_string, bool f2_string,
                        bool f3_string) {
  using codec::wire::WireReader;
  SmallMessage m;
  WireReader r(data);
  while (!r.at_end()) {
    uint32_t field = 0, wt = 0;
    r.read_tag(field, wt);
    if (field >= 1 && field <= 3) {
      if (wt != codec::wire::kLen) {
        bad_message(std::string(type) + ": field " + std::to_string(field) + " has wire type " +
                    std::to_string(wt));
      }
      const std::string_view v = r.read_length_delimited();
      const bool is_string = field == 1 ? f1_string : field == 2 ? f2_string : f3_string;
      if (is_string && !codec::wire::is_valid_utf8(v)) {
        bad_message(std::string(type) + ": invalid UTF-8 in field " + std::to_string(field));
      }
      (field == 1 ? m.f1 : field == 2 ? m.f2 : m.f3) = v;
    } else {
      r.skip(field, wt, 0);
    }
  }
  return m;
}

// The member entries of an island_changed, checked once per island and content.
void check_entries(const std::string& island, std::string_view entries, PeersCache& cache) {
  auto it = cache.entries.find(island);
  if (it != cache.entries.end() && it->second == entries) return;
  (void)codec::decode_island_changed_message(entries);  // throws when malformed
  cache.entries[island].assign(entries.data(), entries.size());
}

ws::RelayItem native_changes(std::string_view island, std::string_view data, PeersCache& cache) {
  const IslandChangesView v = decode_island_changes(data);
  std::vector<std::string> to = addresses_of(v.addresses, "IslandChanges");
  const size_t n = to.size();
  if (v.conn_strs.size() != n || v.from_island_ids.size() != n) {
    bad_message("IslandChanges: " + std::to_string(v.addresses.size()) + " address bytes, " +
                std::to_string(v.conn_strs.size()) + " conn_strs");
  }
  for (auto sv : v.conn_strs) {
    if (!codec::wire::is_valid_utf8(sv)) bad_message("IslandChanges: invalid UTF-8 in conn_strs");
  }
  for (auto sv : v.from_island_ids) {
    if (!codec::wire::is_valid_utf8(sv)) {
      bad_message("IslandChanges: invalid UTF-8 in from_island_ids");
    }
  }
  if (!codec::wire::is_valid_utf8(v.island_id)) bad_message("IslandChanges: invalid UTF-8 island");
  ws::IslandChangesItem item;
  item.island_id.assign(v.island_id.data(), v.island_id.size());
  if (n && item.island_id != island) {
    bad_message("island '" + item.island_id + "' on '" + std::string(island) + "'");
  }
  check_entries(item.island_id, v.peers, cache);
  item.peers_entries.assign(v.peers.data(), v.peers.size());
  item.recipients.resize(n);
  for (size_t i = 0; i < n; ++i) {
    auto& r = item.recipients[i];
    r.address = std::move(to[i]);
    r.conn_str.assign(v.conn_strs[i].data(), v.conn_strs[i].size());
    if (!v.from_island_ids[i].empty()) r.from_island_id = std::string(v.from_island_ids[i]);
    r.frame = codec::encode_server_island_changed_head(item.island_id, r.conn_str, r.from_island_id,
                                                       item.peers_entries.size());
  }
  item.frame_heads = true;  // the hub shares one copy of the entries among them
  return item;
}

ws::RelayItem native_members(std::string_view island, std::string_view data) {
  const SmallMessage m = read_small(data, "IslandMembership", true, false, false);
  if (m.f1 != island) {
    bad_message("island '" + std::string(m.f1) + "' on '" + std::string(island) + "'");
  }
  ws::IslandMovesItem item;
  item.island_id.assign(island.data(), island.size());
  item.left = addresses_of(m.f2, "IslandMembership");
  item.joined = addresses_of(m.f3, "IslandMembership");
  return item;
}

ws::RelayItem compat_changed(std::string_view address, std::string_view data, PeersCache& cache) {
  ws::IslandChangesItem item;
  ws::IslandChangesItem::Recipient r;
  r.address.assign(address.data(), address.size());
  codec::IslandChangedHeader h = codec::decode_island_changed_header(data);
  if (h.peers_offset != codec::kNoPeersTail) {
    const std::string_view tail = data.substr(h.peers_offset);
    check_entries(h.island_id, tail, cache);
    item.peers_entries.assign(tail.data(), tail.size());
  } else {  // another field after the entries: decoded whole, entries encoded again
    codec::IslandChanged full = codec::decode_island_changed_message(data);
    codec::IslandChanged entries_only;
    entries_only.peers = std::move(full.peers);
    item.peers_entries = codec::encode_island_changed_message(entries_only);
  }
  item.island_id = std::move(h.island_id);
  r.conn_str = std::move(h.conn_str);
  r.from_island_id = std::move(h.from_island_id);
  r.frame = codec::encode_server_island_changed_head(item.island_id, r.conn_str, r.from_island_id,
                                                     item.peers_entries.size());
  item.recipients.push_back(std::move(r));
  item.frame_heads = true;
  return item;
}

ws::RelayItem compat_move(std::string_view data, bool joined) {
  const SmallMessage m = read_small(data, "JoinIslandMessage", true, true, false);
  ws::IslandMovesItem item;
  item.island_id.assign(m.f1.data(), m.f1.size());
  (joined ? item.joined : item.left).emplace_back(m.f2);
  return item;
}

}  // namespace

std::vector<std::string> relay_patterns(Scheme scheme) {
  switch (scheme) {
    case Scheme::Native:
      return {"dclcomms.v1.island.*.changed", "dclcomms.v1.island.*.members", "engine.islands"};
    case Scheme::Workers:
      return {"engine.peer.*.island_changed", "engine.island.*.peer_join",
              "engine.island.*.peer_left", "engine.islands"};
    case Scheme::V3:
      break;
  }
  return {"client-proto.*.island_changed", "client-proto.island.*.peer_join",
          "client-proto.island.*.peer_left", "archipelago.islands"};
}

RelayDecoded decode_relay(Scheme scheme, std::string_view s, std::string_view data,
                          PeersCache& cache) {
  RelayDecoded d;
  const std::string_view islands = scheme == Scheme::V3 ? "archipelago.islands" : "engine.islands";
  if (s == islands) {
    d.kind = RelayDecoded::Kind::Item;
    d.item = ws::TickEndItem{};
    cache.entries.clear();  // a new tick, new member maps
    return d;
  }
  if (scheme == Scheme::Native) {
    if (!starts_with(s, kNativeIslandPrefix)) return d;
    const bool members = ends_with(s, kNativeMembers);
    if (!members && !ends_with(s, kNativeChanged)) return d;
    const size_t suffix = members ? kNativeMembers.size() : kNativeChanged.size();
    if (s.size() < kNativeIslandPrefix.size() + suffix) return d;
    const std::string_view island =
        s.substr(kNativeIslandPrefix.size(), s.size() - kNativeIslandPrefix.size() - suffix);
    if (!valid_island(island)) {
      d.kind = RelayDecoded::Kind::BadSubject;
      return d;
    }
    d.item = members ? native_members(island, data) : native_changes(island, data, cache);
    d.kind = RelayDecoded::Kind::Item;
    return d;
  }
  // workers / v3: one message per recipient or per moving peer.
  const std::string_view peer_prefix = scheme == Scheme::V3 ? "client-proto." : "engine.peer.";
  const std::string_view island_prefix =
      scheme == Scheme::V3 ? "client-proto.island." : "engine.island.";
  if (starts_with(s, island_prefix)) {
    std::string_view rest = s.substr(island_prefix.size());
    const size_t dot = rest.find('.');
    if (dot == std::string_view::npos) return d;
    const std::string_view token = rest.substr(0, dot), kind = rest.substr(dot + 1);
    if (kind != "peer_join" && kind != "peer_left") return d;
    if (!valid_island(token)) {
      d.kind = RelayDecoded::Kind::BadIsland;
      return d;
    }
    d.item = compat_move(data, kind == "peer_join");
    d.kind = RelayDecoded::Kind::Item;
    return d;
  }
  if (starts_with(s, peer_prefix) && ends_with(s, ".island_changed")) {
    const std::string_view token =
        s.substr(peer_prefix.size(), s.size() - peer_prefix.size() - 15);  // ".island_changed"
    if (token.find('.') != std::string_view::npos) return d;
    if (!valid_address(token)) {
      d.kind = RelayDecoded::Kind::BadAddress;
      return d;
    }
    d.item = compat_changed(token, data, cache);
    d.kind = RelayDecoded::Kind::Item;
  }
  return d;
}

// --- the client ------------------------------------------------------------------

namespace {

// One queued publication: a heartbeat batch (encoded by the publisher thread,
// per scheme) or a message already on its wire subject.
struct OutItem {
  HeartbeatRows rows;  // empty for a raw message
  std::string subject;
  std::string data;
  size_t bytes = 0;
};

// Received, not applied yet: heartbeat rows (42-character ids, fixed stride)
// with the session resets interleaved at their row.
struct Inbox {
  std::string ids;
  std::vector<float> xyz;
  std::vector<arch::PreferenceOp> ops;                 // empty while every row keeps its preference
  std::vector<std::string> rooms;                      // with ops
  std::vector<std::pair<size_t, std::string>> resets;  // (row, address)
  size_t rows() const noexcept { return ids.size() / kAddressLen; }
  bool empty() const noexcept { return ids.empty() && resets.empty(); }
  void clear() {
    ids.clear();
    xyz.clear();
    ops.clear();
    rooms.clear();
    resets.clear();
  }
};

struct Counters {
  std::atomic<uint64_t> published{0}, published_bytes{0}, received{0};
  std::atomic<uint64_t> dropped_outbox_full{0}, dropped_nats_buffer{0}, dropped_closed{0};
  std::atomic<uint64_t> dropped_max_payload{0};
  std::atomic<uint64_t> dropped_decode{0}, dropped_inbox_full{0};
  std::atomic<uint64_t> bad_address_publish{0}, bad_address_receive{0}, reconnects{0};
  std::atomic<uint64_t> heartbeats{0}, no_position{0}, resets{0}, backoff_dropped{0};
  std::atomic<uint64_t> invalid_position{0}, out_of_bounds{0}, engine_errors{0};
  std::atomic<uint64_t> relayed{0}, bad_island_receive{0}, bad_subject_receive{0};
  std::atomic<int64_t> relay_last_ns{0}, relay_tick_first_ns{0};
};

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct Client::Impl {
  Scheme scheme;
  ClientOptions options;
  natsOptions* opts = nullptr;
  natsConnection* nc = nullptr;
  Counters c;

  // Outbox (publisher thread).
  std::mutex out_mu;
  std::condition_variable out_cv;       // publisher waits for work
  std::condition_variable out_done_cv;  // flush() waits for progress
  std::deque<OutItem> outbox;
  size_t outbox_bytes = 0;
  uint64_t queued_seq = 0;  // items ever queued
  uint64_t done_seq = 0;    // items handed to libnats (or dropped)
  bool out_stop = false;
  std::thread publisher;

  // Feed (applier thread).
  std::mutex feed_mu;  // guards subs/engine/applier lifecycle
  std::vector<natsSubscription*> subs;
  arch::Engine* engine = nullptr;
  float world_bound = std::numeric_limits<float>::infinity();
  std::thread applier;
  std::atomic<bool> accepting{false};
  std::mutex in_mu;
  std::condition_variable in_cv;       // applier waits for work
  std::condition_variable in_done_cv;  // settle() waits for progress
  Inbox inbox;
  uint64_t in_seq = 0;       // messages accepted into the inbox
  uint64_t applied_seq = 0;  // of which applied
  bool in_stop = false;
  std::mutex backoff_mu;
  std::unordered_map<std::string, int64_t> backoff;
  std::atomic<bool> has_backoff{false};

  // Relay (connector side): its subscriptions and sink, on libnats' delivery thread.
  std::mutex relay_mu;  // guards relay_subs/sink lifecycle and the cache
  std::vector<natsSubscription*> relay_subs;
  RelaySink relay_sink;
  std::atomic<bool> relaying{false};
  PeersCache cache;
  bool tick_open = false;  // an island message arrived since the last tick end

  bool closed = false;
  std::mutex close_mu;
  std::atomic<uint64_t> status_snapshot{0};  // the last engine.islands snapshot id

  // --- publishing ---------------------------------------------------------------

  // Rows per native HeartbeatBatch message: 32 bytes a row (more with desired
  // rooms: send_native() halves a message that still does not fit).
  size_t batch_rows() const noexcept {
    const int64_t max_payload = nc != nullptr ? natsConnection_GetMaxPayload(nc) : 0;
    if (max_payload <= 0) return kMaxBatchRows;
    const auto fit = static_cast<size_t>(std::max<int64_t>(max_payload - 64, 32) / 32);
    return std::min(kMaxBatchRows, fit);
  }

  // How many NATS messages an item is (what a drop of it counts).
  uint64_t messages(const OutItem& item) const noexcept {
    const size_t n = item.rows.size();
    if (n == 0) return 1;
    if (scheme != Scheme::Native) return n;
    const size_t per = batch_rows();
    return (n + per - 1) / per;
  }

  // Queues every item or none (one lock: nothing else in between).
  bool enqueue_all(std::vector<OutItem> items) {
    size_t bytes = 0;
    for (const auto& item : items) bytes += item.bytes;
    std::unique_lock<std::mutex> lock(out_mu);
    if (out_stop) {
      c.dropped_closed += items.size();
      return false;
    }
    if (outbox_bytes + bytes > options.max_outbox_bytes) {
      c.dropped_outbox_full += items.size();
      return false;
    }
    const bool was_empty = outbox.empty();
    outbox_bytes += bytes;
    for (auto& item : items) outbox.push_back(std::move(item));
    queued_seq += items.size();
    if (was_empty && !outbox.empty()) out_cv.notify_one();
    return true;
  }

  bool enqueue(OutItem item) {
    std::unique_lock<std::mutex> lock(out_mu);
    if (out_stop) {
      c.dropped_closed += messages(item);
      return false;
    }
    if (outbox_bytes + item.bytes > options.max_outbox_bytes) {
      c.dropped_outbox_full += messages(item);
      return false;
    }
    outbox_bytes += item.bytes;
    outbox.push_back(std::move(item));
    ++queued_seq;
    if (outbox.size() == 1) out_cv.notify_one();
    return true;
  }

  void send(const char* subject, const std::string& data) {
    const natsStatus s =
        natsConnection_Publish(nc, subject, data.data(), static_cast<int>(data.size()));
    if (s == NATS_OK) {
      ++c.published;
      c.published_bytes += data.size();
    } else if (s == NATS_INSUFFICIENT_BUFFER) {
      ++c.dropped_nats_buffer;
    } else if (s == NATS_MAX_PAYLOAD) {
      ++c.dropped_max_payload;
    } else {
      ++c.dropped_closed;
    }
  }

  // Rows [start, end) of `rows` as one HeartbeatBatch, or as two halves (each
  // again) while the message is larger than the server's max_payload.
  void send_native(const HeartbeatRows& rows, size_t start, size_t end) {
    std::string data;
    if (start == 0 && end == rows.size()) {
      data = encode_heartbeat_batch(rows);
    } else {
      HeartbeatRows part;
      part.raw_addresses = rows.raw_addresses.substr(20 * start, 20 * (end - start));
      part.xyz.assign(rows.xyz.begin() + static_cast<std::ptrdiff_t>(3 * start),
                      rows.xyz.begin() + static_cast<std::ptrdiff_t>(3 * end));
      for (const auto& [i, room] : rows.rooms) {
        if (i >= start && i < end) part.rooms.emplace_back(i - start, room);
      }
      data = encode_heartbeat_batch(part);
    }
    const int64_t max_payload = natsConnection_GetMaxPayload(nc);
    if (max_payload > 0 && static_cast<int64_t>(data.size()) > max_payload && end - start > 1) {
      const size_t mid = start + (end - start) / 2;
      send_native(rows, start, mid);
      send_native(rows, mid, end);
      return;
    }
    send(kNativeHeartbeats.data(), data);
  }

  void send_heartbeats(const HeartbeatRows& rows) {
    const size_t n = rows.size();
    if (scheme == Scheme::Native) {
      const size_t per = batch_rows();
      for (size_t start = 0; start < n; start += per)
        send_native(rows, start, std::min(n, start + per));
      return;
    }
    // One message per heartbeat: subject prefix + address + ".heartbeat", one buffer
    // whose 40 hex digits are rewritten for each.
    std::string subject = scheme == Scheme::V3 ? "client-proto.peer." : "peer.";
    const size_t prefix = subject.size();
    subject.append("0x").append(kAddressLen - 2, '0').append(".heartbeat");
    char* const hex = &subject[prefix + 2];
    size_t next_room = 0;
    codec::Heartbeat hb;
    std::string payload;  // one buffer for every message (libnats copies it)
    for (size_t i = 0; i < n; ++i) {
      raw_to_hex(&rows.raw_addresses[20 * i], hex);
      hb.position = codec::Position{rows.xyz[3 * i], rows.xyz[3 * i + 1], rows.xyz[3 * i + 2]};
      hb.desired_room.reset();
      while (next_room < rows.rooms.size() && rows.rooms[next_room].first < i) ++next_room;
      if (next_room < rows.rooms.size() && rows.rooms[next_room].first == i) {
        hb.desired_room = rows.rooms[next_room].second;
      }
      payload.clear();
      codec::append_heartbeat(payload, hb);
      send(subject.c_str(), payload);
    }
  }

  void publisher_loop() {
    std::deque<OutItem> batch;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(out_mu);
        out_cv.wait(lock, [this] { return out_stop || !outbox.empty(); });
        if (outbox.empty() && out_stop) return;
        batch.swap(outbox);
        outbox_bytes = 0;
      }
      for (auto& item : batch) {
        if (item.rows.size()) {
          send_heartbeats(item.rows);
        } else {
          send(item.subject.c_str(), item.data);
        }
      }
      {
        std::lock_guard<std::mutex> lock(out_mu);
        done_seq += batch.size();
      }
      out_done_cv.notify_all();
      batch.clear();
    }
  }

  // --- receiving ------------------------------------------------------------------

  static void on_msg(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<Impl*>(closure);
    if (self->accepting.load(std::memory_order_relaxed)) {
      self->receive(
          natsMsg_GetSubject(msg),
          std::string_view(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg))));
    }
    natsMsg_Destroy(msg);
  }

  // 0: a position to apply; 1: a non-finite coordinate; 2: beyond the world bound.
  int verdict(const float* xyz) const noexcept {
    const float b = world_bound;
    for (int i = 0; i < 3; ++i) {
      if (!std::isfinite(xyz[i])) return 1;
      if (std::fabs(xyz[i]) > b) return 2;
    }
    return 0;
  }

  void count_rejected(int v, uint64_t n = 1) {
    (v == 1 ? c.invalid_position : c.out_of_bounds) += n;
  }

  static void append_row(Inbox& in, std::string_view address, const float* xyz,
                         arch::PreferenceOp op, std::string_view room) {
    const size_t row = in.rows();
    in.ids.append(address.data(), address.size());
    in.xyz.insert(in.xyz.end(), xyz, xyz + 3);
    if (op != arch::PreferenceOp::Keep && in.ops.empty()) {
      in.ops.assign(row, arch::PreferenceOp::Keep);
      in.rooms.resize(row);
    }
    if (!in.ops.empty()) {
      in.ops.push_back(op);
      in.rooms.emplace_back(room);
    }
  }

  void receive(const char* subject, std::string_view data) {
    ++c.received;
    const Classified k = classify(scheme, subject);
    switch (k.kind) {
      case Classified::Kind::Ignore:
        return;
      case Classified::Kind::BadAddress:
        ++c.bad_address_receive;
        return;
      case Classified::Kind::Connect:
      case Classified::Kind::Disconnect: {
        std::lock_guard<std::mutex> lock(in_mu);
        inbox.resets.emplace_back(inbox.rows(), std::string(k.address));
        ++in_seq;
        if (inbox.resets.size() == 1 && inbox.ids.empty()) in_cv.notify_one();
        return;
      }
      case Classified::Kind::Heartbeat: {
        float xyz[3];
        arch::PreferenceOp op = arch::PreferenceOp::Keep;
        std::string_view room;
        codec::Heartbeat hb;  // only when the message is not position-only
        if (!heartbeat_position_only(data, xyz)) {
          try {
            hb = codec::decode_heartbeat(data);
          } catch (const Error&) {
            ++c.dropped_decode;
            return;
          }
          if (!hb.position) {
            ++c.no_position;
            return;
          }
          xyz[0] = hb.position->x;
          xyz[1] = hb.position->y;
          xyz[2] = hb.position->z;
          if (hb.desired_room) {
            op = hb.desired_room->empty() ? arch::PreferenceOp::Clear : arch::PreferenceOp::Set;
            room = *hb.desired_room;
          }
        }
        if (const int v = verdict(xyz)) {
          count_rejected(v);
          return;
        }
        std::lock_guard<std::mutex> lock(in_mu);
        if (inbox.rows() >= options.max_inbox_rows) {
          ++c.dropped_inbox_full;
          return;
        }
        const bool was_empty = inbox.empty();
        append_row(inbox, k.address, xyz, op, room);
        ++in_seq;
        if (was_empty) in_cv.notify_one();
        return;
      }
      case Classified::Kind::HeartbeatBatch: {
        HeartbeatRows rows;
        try {
          rows = decode_heartbeat_batch(data);
        } catch (const Error&) {
          ++c.dropped_decode;
          return;
        }
        const size_t n = rows.size();
        // Rows with a desired room, by row (the batch lists them by index).
        std::vector<int64_t> room_of;
        if (!rows.rooms.empty()) {
          room_of.assign(n, -1);
          for (size_t j = 0; j < rows.rooms.size(); ++j) {
            room_of[rows.rooms[j].first] = static_cast<int64_t>(j);
          }
        }
        std::string address;
        address.reserve(kAddressLen);
        std::lock_guard<std::mutex> lock(in_mu);
        const bool was_empty = inbox.empty();
        if (inbox.rows() + n > options.max_inbox_rows) {
          c.dropped_inbox_full += n;
          return;
        }
        inbox.ids.reserve(inbox.ids.size() + n * kAddressLen);
        inbox.xyz.reserve(inbox.xyz.size() + 3 * n);
        for (size_t i = 0; i < n; ++i) {
          const float* xyz = &rows.xyz[3 * i];
          if (const int v = verdict(xyz)) {
            count_rejected(v);
            continue;
          }
          address.clear();
          raw_to_address(&rows.raw_addresses[20 * i], address);
          arch::PreferenceOp op = arch::PreferenceOp::Keep;
          std::string_view room;
          if (!room_of.empty() && room_of[i] >= 0) {
            room = rows.rooms[static_cast<size_t>(room_of[i])].second;
            op = room.empty() ? arch::PreferenceOp::Clear : arch::PreferenceOp::Set;
          }
          append_row(inbox, address, xyz, op, room);
        }
        ++in_seq;
        if (was_empty && !inbox.empty()) in_cv.notify_one();
        return;
      }
    }
  }

  // Applies rows [from, to) of `in` (backed-off peers filtered out).
  void apply_rows(const Inbox& in, size_t from, size_t to, int64_t now,
                  std::vector<std::string_view>& views, std::vector<float>& xyz,
                  std::vector<arch::PreferenceOp>& ops, std::vector<std::string>& rooms) {
    if (from >= to) return;
    views.clear();
    xyz.clear();
    ops.clear();
    rooms.clear();
    const bool filter = has_backoff.load(std::memory_order_relaxed);
    std::unique_lock<std::mutex> blk(backoff_mu, std::defer_lock);
    if (filter) blk.lock();
    uint64_t blocked = 0;
    for (size_t i = from; i < to; ++i) {
      const std::string_view id(&in.ids[kAddressLen * i], kAddressLen);
      if (filter) {
        auto it = backoff.find(std::string(id));
        if (it != backoff.end()) {
          if (it->second > now) {
            ++blocked;
            continue;
          }
          backoff.erase(it);
        }
      }
      views.push_back(id);
      xyz.insert(xyz.end(), &in.xyz[3 * i], &in.xyz[3 * i] + 3);
      if (!in.ops.empty()) {
        ops.push_back(in.ops[i]);
        rooms.push_back(in.rooms[i]);
      }
    }
    if (filter) {
      if (backoff.empty()) has_backoff = false;
      blk.unlock();
    }
    c.backoff_dropped += blocked;
    if (views.empty()) return;
    try {
      engine->update_many(views.data(), views.size(), xyz.data(),
                          ops.empty() ? nullptr : ops.data(), ops.empty() ? nullptr : rooms.data(),
                          now);
      c.heartbeats += views.size();
    } catch (const std::exception&) {
      ++c.engine_errors;
    }
  }

  void applier_loop() {
    Inbox work;
    std::vector<std::string_view> views;
    std::vector<float> xyz;
    std::vector<arch::PreferenceOp> ops;
    std::vector<std::string> rooms;
    for (;;) {
      uint64_t seq = 0;
      {
        std::unique_lock<std::mutex> lock(in_mu);
        in_cv.wait(lock, [this] { return in_stop || !inbox.empty(); });
        if (inbox.empty() && in_stop) return;
        std::swap(work, inbox);
        seq = in_seq;
      }
      const int64_t now = unix_ms();
      size_t row = 0;
      for (const auto& [at, address] : work.resets) {
        apply_rows(work, row, at, now, views, xyz, ops, rooms);
        row = at;
        try {
          engine->disconnect(address);
        } catch (const std::exception&) {
          ++c.engine_errors;
        }
        ++c.resets;
      }
      apply_rows(work, row, work.rows(), now, views, xyz, ops, rooms);
      work.clear();
      {
        std::lock_guard<std::mutex> lock(in_mu);
        applied_seq = seq;
      }
      in_done_cv.notify_all();
    }
  }

  // --- connection callbacks ---------------------------------------------------------

  // Subscribes each pattern with handler (this Impl as its closure) into `into`.
  void subscribe(const std::vector<std::string>& patterns, natsMsgHandler handler,
                 std::vector<natsSubscription*>& into) {
    for (const auto& p : patterns) {
      natsSubscription* sub = nullptr;
      const natsStatus s = natsConnection_Subscribe(&sub, nc, p.c_str(), handler, this);
      if (s != NATS_OK) {
        throw Error(ErrorKind::PubSub, "nats_unavailable",
                    "cannot subscribe " + p + ": " + status_text(s));
      }
      natsSubscription_SetPendingLimits(sub, 1 << 20, 512 * 1024 * 1024);
      into.push_back(sub);
    }
  }

  // Drain: what the server already sent is delivered, then no more callbacks.
  static void drain(const std::vector<natsSubscription*>& subs) {
    for (auto* sub : subs) {
      if (natsSubscription_Drain(sub) == NATS_OK) {
        natsSubscription_WaitForDrainCompletion(sub, 2000);
      }
      natsSubscription_Unsubscribe(sub);
    }
  }

  static void on_relay_msg(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<Impl*>(closure);
    if (self->relaying.load(std::memory_order_relaxed)) {
      self->relay_one(
          natsMsg_GetSubject(msg),
          std::string_view(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg))));
    }
    natsMsg_Destroy(msg);
  }

  void relay_one(std::string_view subject, std::string_view data) {
    const int64_t now = steady_ns();
    ++c.received;
    std::lock_guard<std::mutex> lock(relay_mu);
    RelayDecoded d;
    try {
      d = decode_relay(scheme, subject, data, cache);
    } catch (const std::exception&) {
      ++c.dropped_decode;
      return;
    }
    switch (d.kind) {
      case RelayDecoded::Kind::Ignore:
        return;
      case RelayDecoded::Kind::BadAddress:
        ++c.bad_address_receive;
        return;
      case RelayDecoded::Kind::BadIsland:
        ++c.bad_island_receive;
        return;
      case RelayDecoded::Kind::BadSubject:
        ++c.bad_subject_receive;
        return;
      case RelayDecoded::Kind::Item:
        break;
    }
    const bool tick_end = std::holds_alternative<ws::TickEndItem>(d.item);
    if (!tick_end && !tick_open) c.relay_tick_first_ns = now;
    tick_open = !tick_end;
    if (relay_sink) {
      std::vector<ws::RelayItem> items;
      items.push_back(std::move(d.item));
      relay_sink(std::move(items));
    }
    ++c.relayed;
    c.relay_last_ns = steady_ns();
  }

  static void on_reconnected(natsConnection*, void* closure) {
    ++static_cast<Impl*>(closure)->c.reconnects;
  }
};

Client::Client(ClientOptions options, Scheme scheme)
    : scheme_(scheme), impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.scheme = scheme;
  m.options = std::move(options);
  if (m.options.servers.empty()) {
    throw Error(ErrorKind::PubSub, "nats_unavailable", "no NATS server URL given");
  }
  auto check = [&m](natsStatus s, const char* what) {
    if (s != NATS_OK) {
      if (m.opts != nullptr) natsOptions_Destroy(m.opts);
      m.opts = nullptr;
      throw Error(ErrorKind::Config, "invalid_parameter",
                  std::string("NATS option ") + what + ": " + status_text(s));
    }
  };
  // Message delivery: one shared thread for every subscription of every client
  // in the process, so a session reset and the heartbeats around it (two
  // subscriptions) are applied in the order the server sent them.
  static const natsStatus pool = nats_SetMessageDeliveryPoolSize(1);
  check(pool, "delivery pool");
  check(natsOptions_Create(&m.opts), "create");
  std::vector<const char*> urls;
  for (const auto& s : m.options.servers) urls.push_back(s.c_str());
  check(natsOptions_SetServers(m.opts, urls.data(), static_cast<int>(urls.size())), "servers");
  check(natsOptions_SetName(m.opts, m.options.name.c_str()), "name");
  // Bounded while connecting (one pass over the list); forever once connected.
  check(natsOptions_SetMaxReconnect(m.opts, -1), "max reconnect");
  check(natsOptions_SetReconnectWait(m.opts, m.options.reconnect_wait_ms), "reconnect wait");
  check(natsOptions_SetTimeout(m.opts, m.options.connect_timeout_ms), "timeout");
  check(natsOptions_SetReconnectBufSize(m.opts, m.options.reconnect_buf_bytes), "buffer");
  check(natsOptions_SetMaxPendingMsgs(m.opts, 1 << 20), "pending");
  check(natsOptions_SetIOBufSize(m.opts, 256 * 1024), "io buffer");
  check(natsOptions_UseGlobalMessageDelivery(m.opts, true), "delivery");
  check(natsOptions_SetReconnectedCB(m.opts, &Impl::on_reconnected, &m), "reconnected");
  const natsStatus s = natsConnection_Connect(&m.nc, m.opts);
  if (s != NATS_OK) {
    natsOptions_Destroy(m.opts);
    m.opts = nullptr;
    std::string list;
    for (const auto& u : m.options.servers) list += (list.empty() ? "" : ", ") + u;
    throw Error(ErrorKind::PubSub, "nats_unavailable",
                "cannot connect to NATS [" + list + "]: " + status_text(s));
  }
  m.publisher = std::thread([&m] { m.publisher_loop(); });
}

Client::~Client() {
  close();
}

size_t Client::publish_heartbeats(const std::string_view* addresses, size_t n, const float* xyz,
                                  const arch::PreferenceOp* ops, const std::string* preferred) {
  OutItem item;
  item.rows.raw_addresses.reserve(20 * n);
  item.rows.xyz.reserve(3 * n);
  char raw[20];
  for (size_t i = 0; i < n; ++i) {
    if (!valid_address(addresses[i])) {
      ++impl_->c.bad_address_publish;
      continue;
    }
    const auto row = static_cast<uint32_t>(item.rows.size());
    address_to_raw(addresses[i], raw);
    item.rows.raw_addresses.append(raw, 20);
    item.rows.xyz.insert(item.rows.xyz.end(), xyz + 3 * i, xyz + 3 * i + 3);
    if (ops != nullptr && ops[i] != arch::PreferenceOp::Keep) {
      item.rows.rooms.emplace_back(
          row, ops[i] == arch::PreferenceOp::Set ? preferred[i] : std::string());
    }
  }
  const size_t rows = item.rows.size();
  if (rows == 0) return 0;
  item.bytes = 32 * rows + 64;
  return impl_->enqueue(std::move(item)) ? rows : 0;
}

bool Client::publish(std::string subject, std::string data) {
  OutItem item;
  item.bytes = subject.size() + data.size() + 16;
  item.subject = std::move(subject);
  item.data = std::move(data);
  return impl_->enqueue(std::move(item));
}

size_t Client::publish_island_status(std::string subject, std::string data) {
  Impl& m = *impl_;
  const int64_t max_payload = m.nc != nullptr ? natsConnection_GetMaxPayload(m.nc) : 0;
  if (max_payload <= 0 || static_cast<int64_t>(data.size()) <= max_payload) {
    return publish(std::move(subject), std::move(data)) ? 1 : 0;
  }
  const auto now_us = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  uint64_t snapshot = m.status_snapshot.load();
  uint64_t next = 0;
  do {
    next = std::max(snapshot + 1, now_us);
  } while (!m.status_snapshot.compare_exchange_weak(snapshot, next));
  std::vector<std::string> parts;
  try {
    parts = split_island_status(data, static_cast<size_t>(max_payload), next);
  } catch (const Error&) {
    ++m.c.dropped_max_payload;
    return 0;
  }
  std::vector<OutItem> items(parts.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    items[i].subject = subject;
    items[i].bytes = subject.size() + parts[i].size() + 16;
    items[i].data = std::move(parts[i]);
  }
  const size_t n = items.size();
  return m.enqueue_all(std::move(items)) ? n : 0;
}

bool Client::flush(int64_t timeout_ms) {
  Impl& m = *impl_;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  {
    std::unique_lock<std::mutex> lock(m.out_mu);
    const uint64_t target = m.queued_seq;
    if (!m.out_done_cv.wait_until(lock, deadline, [&m, target] { return m.done_seq >= target; })) {
      return false;
    }
  }
  if (m.nc == nullptr) return false;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
  return natsConnection_FlushTimeout(m.nc, std::max<int64_t>(left, 1)) == NATS_OK;
}

void Client::feed_engine(arch::Engine* engine, double world_bound_m) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.feed_mu);
  if (m.engine != nullptr) {
    throw Error(ErrorKind::Config, "invalid_parameter", "this NATS client already feeds an engine");
  }
  if (engine == nullptr || m.nc == nullptr) {
    throw Error(ErrorKind::PubSub, "bus_closed", "the NATS client is closed");
  }
  std::vector<std::string> patterns{"peer.*.*"};  // connect, disconnect (workers: heartbeats)
  if (m.scheme == Scheme::Native) patterns.emplace_back(kNativeHeartbeats);
  if (m.scheme == Scheme::V3) patterns.emplace_back("client-proto.peer.*.heartbeat");
  m.engine = engine;
  m.world_bound = world_bound_m > 0 ? static_cast<float>(world_bound_m)
                                    : std::numeric_limits<float>::infinity();
  {
    std::lock_guard<std::mutex> in(m.in_mu);
    m.in_stop = false;
  }
  m.accepting = true;
  m.applier = std::thread([&m] { m.applier_loop(); });
  m.subscribe(patterns, &Impl::on_msg, m.subs);
}

void Client::stop_feed() {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.feed_mu);
  if (m.engine == nullptr) return;
  m.drain(m.subs);
  m.accepting = false;
  {
    std::lock_guard<std::mutex> in(m.in_mu);
    m.in_stop = true;
  }
  m.in_cv.notify_all();
  if (m.applier.joinable()) m.applier.join();
  for (auto* sub : m.subs) natsSubscription_Destroy(sub);
  m.subs.clear();
  m.engine = nullptr;
}

void Client::relay_islands(RelaySink sink) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.feed_mu);  // subscriptions are made under feed_mu
  {
    std::lock_guard<std::mutex> r(m.relay_mu);
    if (m.relay_sink) {
      throw Error(ErrorKind::Config, "invalid_parameter", "this NATS client already relays");
    }
    if (!sink || m.nc == nullptr) {
      throw Error(ErrorKind::PubSub, "bus_closed", "the NATS client is closed");
    }
    m.relay_sink = std::move(sink);
    m.cache.entries.clear();
    m.tick_open = false;
  }
  m.relaying = true;
  m.subscribe(relay_patterns(m.scheme), &Impl::on_relay_msg, m.relay_subs);
}

void Client::stop_relay() {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.feed_mu);
  if (m.relay_subs.empty() && !m.relaying) return;
  m.drain(m.relay_subs);
  m.relaying = false;
  for (auto* sub : m.relay_subs) natsSubscription_Destroy(sub);
  m.relay_subs.clear();
  std::lock_guard<std::mutex> r(m.relay_mu);  // a callback still running has returned
  m.relay_sink = nullptr;
}

void Client::settle() {
  Impl& m = *impl_;
  std::unique_lock<std::mutex> lock(m.in_mu);
  const uint64_t target = m.in_seq;
  m.in_done_cv.wait(lock, [&m, target] { return m.applied_seq >= target || m.in_stop; });
}

void Client::set_backoff(std::vector<std::pair<std::string, int64_t>> until_ms) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.backoff_mu);
  m.backoff.clear();
  for (auto& [a, t] : until_ms) m.backoff[std::move(a)] = t;
  m.has_backoff = !m.backoff.empty();
}

ClientStats Client::stats() const {
  Impl& m = *impl_;
  const Counters& c = m.c;
  ClientStats s;
  s.published = c.published;
  s.published_bytes = c.published_bytes;
  s.received = c.received;
  s.dropped_outbox_full = c.dropped_outbox_full;
  s.dropped_nats_buffer = c.dropped_nats_buffer;
  s.dropped_closed = c.dropped_closed;
  s.dropped_max_payload = c.dropped_max_payload;
  s.dropped_decode = c.dropped_decode;
  s.dropped_inbox_full = c.dropped_inbox_full;
  s.bad_address_publish = c.bad_address_publish;
  s.bad_address_receive = c.bad_address_receive;
  s.reconnects = c.reconnects;
  s.heartbeats = c.heartbeats;
  s.no_position = c.no_position;
  s.resets = c.resets;
  s.backoff_dropped = c.backoff_dropped;
  s.invalid_position = c.invalid_position;
  s.out_of_bounds = c.out_of_bounds;
  s.engine_errors = c.engine_errors;
  s.relayed = c.relayed;
  s.bad_island_receive = c.bad_island_receive;
  s.bad_subject_receive = c.bad_subject_receive;
  s.relay_last_ns = c.relay_last_ns;
  s.relay_tick_first_ns = c.relay_tick_first_ns;
  {
    std::lock_guard<std::mutex> lock(m.feed_mu);
    std::vector<natsSubscription*> all(m.subs);
    all.insert(all.end(), m.relay_subs.begin(), m.relay_subs.end());
    for (auto* sub : all) {
      int64_t dropped = 0;
      if (natsSubscription_GetDropped(sub, &dropped) == NATS_OK && dropped > 0) {
        s.dropped_slow_consumer += static_cast<uint64_t>(dropped);
      }
    }
  }
  s.connected = connected();
  {
    std::lock_guard<std::mutex> lock(m.out_mu);
    s.outbox_bytes = m.outbox_bytes;
  }
  return s;
}

bool Client::connected() const {
  return impl_->nc != nullptr && natsConnection_Status(impl_->nc) == NATS_CONN_STATUS_CONNECTED;
}

void Client::close() {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.close_mu);
  if (m.closed) return;
  m.closed = true;
  stop_feed();
  stop_relay();
  if (connected()) flush(2000);
  {
    std::lock_guard<std::mutex> out(m.out_mu);
    m.out_stop = true;
    for (const auto& item : m.outbox) m.c.dropped_closed += m.messages(item);
    m.outbox.clear();
    m.outbox_bytes = 0;
  }
  m.out_cv.notify_all();
  if (m.publisher.joinable()) m.publisher.join();
  if (m.nc != nullptr) {
    natsConnection_Close(m.nc);
    natsConnection_Destroy(m.nc);
    m.nc = nullptr;
  }
  if (m.opts != nullptr) {
    natsOptions_Destroy(m.opts);
    m.opts = nullptr;
  }
}

}  // namespace dclcomms::nats
