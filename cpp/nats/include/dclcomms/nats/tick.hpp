#pragma once
// One clustering tick's island changes, grouped and published in C++ (the
// native subject scheme): the core's tick (python/dclcomms/archipelago/core.py)
// keeps its policy in Python, asked once per touched island, and hands
// everything per peer to this file.
//
// A Tick runs the engine's expire + flush and reads its islands, then groups
// the changes as the core does (archipelago.md 2.1, 2.4):
//   * touched: every island whose membership changed, in change order (a
//     Changed entry touches its new island then the one it came from; a Left
//     entry the island it left), each once;
//   * arrivals: per island, the peers that moved into it, in change order;
//   * left / joined: (island, peer) in change order.
// The caller then issues connection strings per touched island (mint() for
// the built-in transports, targets() + set_issued() for any other) and
// builds the tick's messages with native_messages(): every island_changed
// (in change order, then the kept members of islands whose transport
// switched), then every peer_left, then every peer_join, then engine.islands;
// in the native scheme that is one IslandChanges per island (first
// appearance order), one IslandMembership per island, one IslandStatusMessage.
// Those are the bytes dclcomms.nats.pubsub.NatsPubSub writes for the same
// tick (tests/test_nats_tick.py compares them).
//
// Not thread-safe: one thread drives a Tick (the engine has its own lock).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dclcomms/archipelago/engine.hpp"

namespace dclcomms::nats {

// --- native-scheme encoders (proto/dclcomms/nats/v1/batches.proto) ---------------

// The `peers` entries (field 4) of an IslandChangedMessage for an island's
// members, in member order (positions as stored: float32).
std::string encode_members(const archipelago::IslandInfo& island);
// dclcomms.nats.v1.IslandChanges.
std::string encode_island_changes(std::string_view island_id, std::string_view peers_entries,
                                  std::string_view raw_addresses,
                                  const std::vector<std::string_view>& conn_strs,
                                  const std::vector<std::string_view>& from_island_ids);
// dclcomms.nats.v1.IslandMembership.
std::string encode_island_membership(std::string_view island_id, std::string_view raw_left,
                                     std::string_view raw_joined);
// decentraland.kernel.comms.v3.IslandStatusMessage of every island (center
// (x, 0, z) as float32, radius as double).
std::string encode_island_status(const std::vector<archipelago::IslandInfo>& islands);

// [A-Za-z0-9_-]{1,128}: an island id that may appear in a subject.
bool valid_island_id(std::string_view id) noexcept;

// --- connection strings of the built-in transports --------------------------------

// What a built-in transport (dclcomms.policy) mints per peer; the same strings.
struct Issuer {
  enum class Kind : uint8_t {
    Fixed,   // text for every peer
    P2P,     // "p2p:<island>:<peer>"
    WsRoom,  // text = "ws-room:<base>"; + "/rooms/<island>" [+ "?access_token=" + JWT]
    LiveKit  // text = "livekit:<host>?access_token=" + LiveKit token
  };
  Kind kind = Kind::Fixed;
  std::string text;
  std::string api_key;  // LiveKit
  std::string secret;   // WsRoom (empty: no token), LiveKit
  int64_t ttl_s = 300;
  int64_t now_s = 0;
};

// One connection string per peer, in order. Throws dclcomms::Error (Token) when a
// token cannot be built.
std::vector<std::string> mint(const Issuer& issuer, std::string_view island_id,
                              const std::vector<std::string_view>& peers);

// --- the tick -----------------------------------------------------------------------

struct TickCounts {
  size_t changes = 0;  // entries of the flush
  size_t left = 0;     // of which Left
  size_t changed = 0;  // of which Changed
};

// A wire message: (subject, payload).
using WireMessage = std::pair<std::string, std::string>;

struct NativeOutput {
  std::vector<WireMessage> messages;  // in publish order; engine.islands last
  size_t island_changed = 0;          // recipients of an island_changed
  size_t bad_island_id = 0;           // island_changed of islands no subject may carry
  size_t bad_subject = 0;             // peer_left / peer_join of those islands (not sent)
  size_t bad_address = 0;             // recipients / members that are no 0x address
  size_t status_bytes = 0;            // size of the engine.islands payload
};

class Tick {
 public:
  // Expires peers silent for timeout_ms, flushes and reads the islands: every
  // island's status and size, a copy of the touched ones. `recheck`: islands the
  // policy asks about although their membership did not change (touched after
  // the changes' islands).
  Tick(archipelago::Engine& engine, int64_t now_ms, int64_t timeout_ms,
       const std::vector<std::string>& recheck = {});

  const TickCounts& counts() const noexcept { return counts_; }
  // Touched islands, in order (including ones that no longer exist).
  const std::vector<std::string>& touched() const noexcept { return touched_; }
  // Every island after the flush, in the engine's order: ids and sizes.
  const std::vector<std::string>& island_ids() const noexcept { return ids_; }
  const std::vector<uint32_t>& sizes() const noexcept { return sizes_; }
  // The IslandStatusMessage of every island (the payload of engine.islands).
  const std::string& status() const noexcept { return status_; }
  // A touched island with this id (as it was after the flush), or null.
  const archipelago::IslandInfo* island(std::string_view id) const;

  // Who gets a connection string for `island_id`: its arrivals, and when its
  // transport switched every other member too (arrivals first). Empty for an
  // island that no longer exists. Views into this Tick.
  std::vector<std::string_view> targets(std::string_view island_id, bool switched) const;
  // Records the strings issued for targets(island_id, switched): strs[i] for
  // targets[i], nullopt = rejected. Kept members that got one are re-issued
  // (from_island_id = the same island). Returns the rejected peers.
  std::vector<std::string> set_issued(std::string_view island_id, bool switched,
                                      std::vector<std::optional<std::string>> strs);

  // targets() + mint() + set_issued() for a built-in transport (nothing is
  // rejected); returns how many strings were issued. Throws as mint() does
  // (then nothing is recorded).
  size_t issue(std::string_view island_id, bool switched, const Issuer& issuer);

  // The tick's messages in the native scheme (see the file comment).
  NativeOutput native_messages() const;

 private:
  // Bookkeeping per change and per island, never a map per peer: views into
  // changes_ and islands_, which are not modified after the constructor.
  struct Move {
    const archipelago::IslandChange* change;
    const archipelago::IslandInfo* island;  // null: gone by the end of the flush
    std::string conn;                       // issued connection string
    bool issued = false;
  };
  struct Reissue {  // a kept member of an island whose transport switched
    std::string_view peer;
    const archipelago::IslandInfo* island;
    std::string conn;
  };
  const std::vector<size_t>& arrivals(std::string_view island_id) const;
  // Records strs[i] (moved from) for targets[i]; nullopt = rejected (returned).
  std::vector<std::string> record(std::string_view island_id,
                                  const std::vector<std::string_view>& targets,
                                  std::vector<std::optional<std::string>>& strs);

  TickCounts counts_;
  std::vector<archipelago::IslandChange> changes_;
  std::vector<archipelago::IslandInfo> islands_;        // the touched ones
  std::unordered_map<std::string_view, size_t> index_;  // island id -> row of islands_
  std::vector<std::string> ids_;                        // every island
  std::vector<uint32_t> sizes_;
  std::string status_;
  std::vector<std::string> touched_;
  std::vector<Move> moves_;
  std::unordered_map<std::string_view, std::vector<size_t>> arrivals_;  // island -> moves_
  std::vector<std::pair<std::string_view, std::string_view>> left_;     // (island, peer)
  std::vector<std::pair<std::string_view, std::string_view>> joined_;   // (island, peer)
  std::vector<Reissue> reissue_;
};

}  // namespace dclcomms::nats
