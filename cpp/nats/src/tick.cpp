// A clustering tick's island changes in C++: see tick.hpp.

#include "dclcomms/nats/tick.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "dclcomms/auth/jwt.hpp"
#include "dclcomms/auth/livekit.hpp"
#include "dclcomms/codec/fast.hpp"
#include "dclcomms/codec/wire.hpp"
#include "dclcomms/error.hpp"
#include "dclcomms/nats/client.hpp"

namespace dclcomms::nats {

namespace arch = dclcomms::archipelago;
namespace wire = dclcomms::codec::wire;

namespace {

constexpr std::string_view kIslandPrefix = "dclcomms.v1.island.";
constexpr std::string_view kChangedSuffix = ".changed";
constexpr std::string_view kMembersSuffix = ".members";
constexpr std::string_view kIslandsSubject = "engine.islands";

void put_len(std::string& out, uint32_t field, std::string_view bytes) {
  wire::write_bytes_field(out, field, bytes);
}

std::string island_subject(std::string_view island_id, std::string_view suffix) {
  std::string s;
  s.reserve(kIslandPrefix.size() + island_id.size() + suffix.size());
  s.append(kIslandPrefix).append(island_id).append(suffix);
  return s;
}

// One IslandData entry (field 1) of an IslandStatusMessage: center (x, 0, z) as
// float32 (a present sub-message is always written), radius as double.
template <typename Peers>
void append_island_data(std::string& out, std::string_view id, const Peers& peers,
                        uint32_t max_peers, const double center[3], double radius) {
  size_t size = id.size() + 2 + 32;
  for (const auto& p : peers) size += p.size() + 2;
  std::string data;
  data.reserve(size);
  if (!id.empty()) put_len(data, 1, id);
  for (const auto& p : peers) put_len(data, 2, p);  // repeated: "" is written too
  if (max_peers != 0) {
    wire::write_tag(data, 3, wire::kVarint);
    wire::write_varint(data, max_peers);
  }
  std::string pos;
  const float x = static_cast<float>(center[0]);
  const float z = static_cast<float>(center[2]);
  if (!wire::is_default_float(x)) {
    wire::write_tag(pos, 1, wire::kFixed32);
    wire::write_float(pos, x);
  }
  if (!wire::is_default_float(z)) {
    wire::write_tag(pos, 3, wire::kFixed32);
    wire::write_float(pos, z);
  }
  put_len(data, 4, pos);
  if (!wire::is_default_double(radius)) {
    wire::write_tag(data, 5, wire::kFixed64);
    wire::write_double(data, radius);
  }
  put_len(out, 1, data);
}

void append_raw(std::string& out, std::string_view address) {
  char raw[20];
  address_to_raw(address, raw);
  out.append(raw, 20);
}

// Printable ASCII without '"' or '\\': JSON writes it as it is.
bool plain_json_text(std::string_view s) noexcept {
  for (const char c : s) {
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') return false;
  }
  return true;
}

}  // namespace

bool valid_island_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 128) return false;
  for (const char c : id) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string encode_members(const arch::IslandInfo& island) {
  return codec::encode_island_changed_peers(island.peers, island.positions.data());
}

std::string encode_island_changes(std::string_view island_id, std::string_view peers_entries,
                                  std::string_view raw_addresses,
                                  const std::vector<std::string_view>& conn_strs,
                                  const std::vector<std::string_view>& from_island_ids) {
  std::string out;
  size_t size = island_id.size() + peers_entries.size() + raw_addresses.size() + 32;
  for (auto s : conn_strs) size += s.size() + 4;
  for (auto s : from_island_ids) size += s.size() + 2;
  out.reserve(size);
  if (!island_id.empty()) put_len(out, 1, island_id);
  if (!peers_entries.empty()) put_len(out, 2, peers_entries);
  if (!raw_addresses.empty()) put_len(out, 3, raw_addresses);
  for (auto s : conn_strs) put_len(out, 4, s);  // repeated: "" is written too
  for (auto s : from_island_ids) put_len(out, 5, s);
  return out;
}

std::string encode_island_membership(std::string_view island_id, std::string_view raw_left,
                                     std::string_view raw_joined) {
  std::string out;
  out.reserve(island_id.size() + raw_left.size() + raw_joined.size() + 16);
  if (!island_id.empty()) put_len(out, 1, island_id);
  if (!raw_left.empty()) put_len(out, 2, raw_left);
  if (!raw_joined.empty()) put_len(out, 3, raw_joined);
  return out;
}

std::string encode_island_status(const std::vector<arch::IslandInfo>& islands) {
  std::string out;
  for (const auto& i : islands) {
    append_island_data(out, i.id, i.peers, i.max_peers, i.center, i.radius);
  }
  return out;
}

std::vector<std::string> mint(const Issuer& issuer, std::string_view island_id,
                              const std::vector<std::string_view>& peers) {
  std::vector<std::string> out;
  out.reserve(peers.size());
  switch (issuer.kind) {
    case Issuer::Kind::Fixed:
      out.assign(peers.size(), issuer.text);
      break;
    case Issuer::Kind::P2P:
      for (const auto p : peers) {
        std::string s;
        s.reserve(5 + island_id.size() + p.size());
        s.append("p2p:").append(island_id).append(":").append(p);
        out.push_back(std::move(s));
      }
      break;
    case Issuer::Kind::WsRoom: {
      std::string base = issuer.text;
      base.append("/rooms/").append(island_id);
      if (issuer.secret.empty()) {
        out.assign(peers.size(), base);
        break;
      }
      base.append("?access_token=");
      // The claims of dclcomms.auth.ws_room_token, in its order; serialised
      // here when no character needs escaping (what nlohmann's dump writes
      // then), else by nlohmann.
      nlohmann::ordered_json claims = {{"sub", ""},
                                       {"room", std::string(island_id)},
                                       {"iat", issuer.now_s},
                                       {"exp", issuer.now_s + issuer.ttl_s}};
      const std::string tail = "\",\"iat\":" + std::to_string(issuer.now_s) +
                               ",\"exp\":" + std::to_string(issuer.now_s + issuer.ttl_s) + "}";
      const bool plain_room = plain_json_text(island_id);
      auth::Hs256Signer signer(issuer.secret);
      std::string payload;
      for (const auto p : peers) {
        if (plain_room && plain_json_text(p)) {
          payload.assign("{\"sub\":\"").append(p).append("\",\"room\":\"");
          payload.append(island_id).append(tail);
          out.push_back(base + signer.token(payload));
        } else {
          claims["sub"] = std::string(p);
          out.push_back(base + auth::jwt_encode(claims, issuer.secret));
        }
      }
      break;
    }
    case Issuer::Kind::LiveKit: {
      auth::LiveKitTokenOptions o;
      o.room = std::string(island_id);
      o.ttl_s = issuer.ttl_s;
      o.now_s = issuer.now_s;
      for (auto& token : auth::livekit_tokens(issuer.api_key, issuer.secret, o, peers)) {
        out.push_back(issuer.text + token);
      }
      break;
    }
  }
  return out;
}

Tick::Tick(arch::Engine& engine, int64_t now_ms, int64_t timeout_ms,
           const std::vector<std::string>& recheck) {
  engine.expire(now_ms, timeout_ms);
  changes_ = engine.flush();

  std::unordered_map<std::string_view, bool> seen;  // touched, as a set
  auto touch = [&](std::string_view id) {
    if (seen.emplace(id, true).second) touched_.emplace_back(id);
  };
  for (const auto& c : changes_) {
    touch(c.island_id);  // Changed: the new island; Left: the island left
    if (c.kind == arch::ChangeKind::Changed && c.from_island_id) touch(*c.from_island_id);
  }
  for (const auto& id : recheck) touch(id);

  // Every island's status entry and size; a copy of the touched ones only.
  engine.visit_islands([&](const arch::IslandRef& r) {
    append_island_data(status_, r.id, r.peers, r.max_peers, r.center, r.radius);
    ids_.emplace_back(r.id);
    sizes_.push_back(static_cast<uint32_t>(r.peers.size()));
    if (seen.find(r.id) == seen.end()) return;
    islands_.push_back(r.copy());
  });
  index_.reserve(islands_.size());
  for (size_t i = 0; i < islands_.size(); ++i) index_.emplace(islands_[i].id, i);

  counts_.changes = changes_.size();
  moves_.reserve(changes_.size());
  for (const auto& c : changes_) {
    if (c.kind == arch::ChangeKind::Changed) {
      ++counts_.changed;
      arrivals_[c.island_id].push_back(moves_.size());
      moves_.push_back(Move{&c, island(c.island_id), {}, false});
      if (c.from_island_id) left_.emplace_back(*c.from_island_id, c.peer_id);
      joined_.emplace_back(c.island_id, c.peer_id);
    } else {
      ++counts_.left;
      left_.emplace_back(c.island_id, c.peer_id);  // a Left names the island left
    }
  }
}

const arch::IslandInfo* Tick::island(std::string_view id) const {
  auto it = index_.find(id);
  return it == index_.end() ? nullptr : &islands_[it->second];
}

const std::vector<size_t>& Tick::arrivals(std::string_view island_id) const {
  static const std::vector<size_t> kNone;
  auto it = arrivals_.find(island_id);
  return it == arrivals_.end() ? kNone : it->second;
}

std::vector<std::string_view> Tick::targets(std::string_view island_id, bool switched) const {
  const arch::IslandInfo* info = island(island_id);
  if (info == nullptr) return {};
  const std::vector<size_t>& arrived = arrivals(island_id);
  std::vector<std::string_view> out;
  out.reserve(switched ? info->peers.size() : arrived.size());
  for (const size_t m : arrived) out.push_back(moves_[m].change->peer_id);
  if (switched) {
    std::unordered_map<std::string_view, bool> is_arrival;
    for (const auto p : out) is_arrival.emplace(p, true);
    for (const auto& p : info->peers) {
      if (is_arrival.find(p) == is_arrival.end()) out.push_back(p);
    }
  }
  return out;
}

std::vector<std::string> Tick::record(std::string_view island_id,
                                      const std::vector<std::string_view>& targets,
                                      std::vector<std::optional<std::string>>& strs) {
  const std::vector<size_t>& arrived = arrivals(island_id);
  const arch::IslandInfo* info = island(island_id);
  std::vector<std::string> rejected;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!strs[i]) {
      rejected.emplace_back(targets[i]);
    } else if (i < arrived.size()) {
      Move& m = moves_[arrived[i]];
      m.conn = std::move(*strs[i]);
      m.issued = true;
    } else {  // a kept member (switch): targets[i] views its name in the island
      reissue_.push_back(Reissue{targets[i], info, std::move(*strs[i])});
    }
  }
  return rejected;
}

std::vector<std::string> Tick::set_issued(std::string_view island_id, bool switched,
                                          std::vector<std::optional<std::string>> strs) {
  const std::vector<std::string_view> peers = targets(island_id, switched);
  if (strs.size() != peers.size()) {
    throw Error(ErrorKind::Config, "invalid_parameter",
                "set_issued: " + std::to_string(strs.size()) + " strings for " +
                    std::to_string(peers.size()) + " peers");
  }
  return record(island_id, peers, strs);
}

size_t Tick::issue(std::string_view island_id, bool switched, const Issuer& issuer) {
  const std::vector<std::string_view> peers = targets(island_id, switched);
  if (peers.empty()) return 0;
  std::vector<std::string> strs = mint(issuer, island_id, peers);
  std::vector<std::optional<std::string>> issued(strs.size());
  for (size_t i = 0; i < strs.size(); ++i) issued[i] = std::move(strs[i]);
  record(island_id, peers, issued);
  return peers.size();
}

NativeOutput Tick::native_messages() const {
  NativeOutput out;
  // island_changed, grouped per island in first-appearance order.
  struct Group {
    const arch::IslandInfo* island;
    std::string raw;
    std::vector<std::string_view> conn, from;
  };
  std::vector<Group> groups;
  std::unordered_map<const arch::IslandInfo*, size_t> group_of;
  auto add = [&](std::string_view peer, const arch::IslandInfo* isl, std::string_view conn,
                 std::string_view from) {
    if (!valid_address(peer)) {
      ++out.bad_address;
      return;
    }
    if (!valid_island_id(isl->id)) {
      ++out.bad_island_id;
      return;
    }
    auto [it, fresh] = group_of.emplace(isl, groups.size());
    if (fresh) groups.push_back(Group{isl, {}, {}, {}});
    Group& g = groups[it->second];
    append_raw(g.raw, peer);
    g.conn.push_back(conn);
    g.from.push_back(from);
    ++out.island_changed;
  };
  for (const auto& m : moves_) {
    if (!m.issued || m.island == nullptr) continue;
    const auto& from = m.change->from_island_id;
    add(m.change->peer_id, m.island, m.conn, from ? std::string_view(*from) : std::string_view());
  }
  for (const auto& r : reissue_) add(r.peer, r.island, r.conn, r.island->id);
  for (const auto& g : groups) {
    out.messages.emplace_back(
        island_subject(g.island->id, kChangedSuffix),
        encode_island_changes(g.island->id, encode_members(*g.island), g.raw, g.conn, g.from));
  }

  // peer_left then peer_join: one IslandMembership per island (first
  // appearance order; every left of a tick precedes every join).
  struct Membership {
    const arch::IslandInfo* island;
    std::string left, joined;
  };
  std::vector<Membership> ms;
  std::unordered_map<const arch::IslandInfo*, size_t> ms_of;
  auto member = [&](const std::vector<std::pair<std::string_view, std::string_view>>& list,
                    bool joins) {
    for (const auto& [id, peer] : list) {
      const arch::IslandInfo* isl = island(id);
      if (isl == nullptr) continue;  // nobody remains to be told
      if (!valid_island_id(id)) {
        ++out.bad_subject;  // as the scheme refuses engine.island.<id>.peer_*
        continue;
      }
      if (!valid_address(peer)) {
        ++out.bad_address;
        continue;
      }
      auto [it, fresh] = ms_of.emplace(isl, ms.size());
      if (fresh) ms.push_back(Membership{isl, {}, {}});
      append_raw(joins ? ms[it->second].joined : ms[it->second].left, peer);
    }
  };
  member(left_, false);
  member(joined_, true);
  for (const auto& m : ms) {
    out.messages.emplace_back(island_subject(m.island->id, kMembersSuffix),
                              encode_island_membership(m.island->id, m.left, m.joined));
  }

  out.status_bytes = status_.size();
  out.messages.emplace_back(std::string(kIslandsSubject), status_);
  return out;
}

}  // namespace dclcomms::nats
