#pragma once
// The Archipelago clustering engine (spec archipelago.md §2, `converge` mode §2.6).
//
// Peers (opaque string ids) report positions; flush() groups them into islands:
//   * distance is measured on the X/Z plane only: a pair is within d iff
//     dx*dx + dz*dz <= d*d, evaluated in double from the stored float32 values;
//   * islands merge when a member pair is within join_distance and the sum of
//     their sizes fits the receiving island's capacity (max_peers, fixed at
//     creation); the smaller island joins the bigger one (ties: the older);
//   * islands split into connected components under leave_distance; the
//     largest component keeps the id (ties: the one holding the earliest member);
//   * new peers join the island they would merge with directly (preferred
//     island first, else biggest-then-oldest), else open a new island;
//   * ids are id_prefix + base-36 counter (1, 2, ... 9, a, ... z, 10, ...),
//     or id_prefix + id_epoch + "-" + counter when an epoch is configured.
//
// Units: metres for positions and distances, milliseconds for clocks (the
// caller's clock: the engine never reads the time itself).
//
// Thread-safety: every public member function is safe to call concurrently
// from any thread. One internal mutex serialises them; flush() holds it for
// its whole run, so an update() racing a flush() lands either before it (and is
// clustered by it) or after it (and is clustered by the next flush). Lock
// order: the engine mutex is the only lock taken; CapacityPolicy callbacks run
// with it held and must not call back into the engine.
//
// Ownership: the engine owns all peer and island state; every returned value
// is a copy.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dclcomms::archipelago {

struct Config {
  double join_distance = 64.0;   // metres, > 0, finite
  double leave_distance = 80.0;  // metres, >= join_distance, finite
  uint32_t max_island_size = 100;
  std::string id_prefix = "I";  // non-empty, no '.', '*', '>' or whitespace
  // Optional boot epoch inserted after the prefix (spec §2.6 rule 5), e.g. a
  // base-36 start time, so ids (LiveKit room names) differ across restarts.
  // Empty or [0-9a-z]+; ids read prefix + epoch + "-" + base36(counter).
  std::string id_epoch;
};

// Throws dclcomms::Error{Config, "invalid_parameter"} describing the first
// invalid field.
void validate(const Config& config);

// Hooks for a realm/transport layer (spec §6.2). Called synchronously inside
// flush(), with the engine lock held; must not call into the engine.
class CapacityPolicy {
 public:
  virtual ~CapacityPolicy() = default;
  // Capacity (max peers, >= 1) of the island being created with this id.
  virtual uint32_t capacity_for_new_island(std::string_view island_id,
                                           uint32_t default_capacity) = 0;
  // Asked once per flush for each new peer before it is placed. false keeps
  // the peer pending (e.g. its ban verdict is not cached yet, spec §6.2); it
  // is asked again at the next flush. A peer that disconnected and came back
  // in the same cycle and is kept pending is reported as Left.
  virtual bool ready_to_admit(std::string_view /*peer_id*/) { return true; }
};

enum class ChangeKind : uint8_t { Changed, Left };

// One entry per peer whose island differs between the start and the end of a
// flush (or that left). `from_island_id` is the island at flush start, absent
// when the peer had none (first assignment).
struct IslandChange {
  std::string peer_id;
  ChangeKind kind;
  std::string island_id;  // Changed: the new island; Left: the island left
  std::optional<std::string> from_island_id;
};

// What an update does to the peer's stored preferred island.
enum class PreferenceOp : uint8_t { Keep, Set, Clear };

struct IslandInfo {
  std::string id;
  std::vector<std::string> peers;  // member order
  std::vector<float> positions;    // peers.size()*3, row-major (x, y, z), member order
  double center[3];                // (mean x, 0, mean z)
  double radius;                   // max X/Z distance from center
  uint32_t max_peers;
};

// One island as visit_islands() shows it: views into the engine, valid only
// during the callback (no copy of any id).
struct IslandRef {
  std::string_view id;
  const std::vector<std::string_view>& peers;  // member order
  const std::vector<float>& positions;         // peers.size()*3, row-major (x, y, z)
  double center[3];                            // (mean x, 0, mean z)
  double radius;                               // max X/Z distance from center
  uint32_t max_peers;

  // An owning copy, valid after the callback.
  IslandInfo copy() const {
    IslandInfo info;
    info.id = std::string(id);
    info.peers.assign(peers.begin(), peers.end());
    info.positions = positions;
    std::copy(center, center + 3, info.center);
    info.radius = radius;
    info.max_peers = max_peers;
    return info;
  }
};

// Struct-of-arrays view of the whole engine, for notebooks.
struct Snapshot {
  std::vector<std::string> peer_ids;    // every known peer (pending included)
  std::vector<float> positions;         // n*3, row-major (x, y, z)
  std::vector<int32_t> island_index;    // row of the island table, -1 if pending
  std::vector<std::string> island_ids;  // island table, creation order
  std::vector<double> centers;          // k*3
  std::vector<double> radii;            // k
  std::vector<uint32_t> sizes;          // k
  std::vector<uint32_t> max_peers;      // k
};

// Work counters of the last flush (for benchmarks and metrics).
struct FlushStats {
  uint64_t split_checks = 0;  // islands checked for a split
  uint64_t splits = 0;        // islands created by splits
  uint64_t admitted = 0;      // new peers placed
  uint64_t merge_checks = 0;  // islands examined by the merge passes
  uint64_t merges = 0;        // islands absorbed
  uint64_t pair_tests = 0;    // exact point-pair distance tests
  uint64_t elapsed_us = 0;    // wall time of the flush (lock held)
  uint64_t cpu_us = 0;        // CPU time of the flushing thread
};

class Engine {
 public:
  // Throws like validate(). `policy` may be null (capacity = max_island_size).
  explicit Engine(Config config, std::shared_ptr<CapacityPolicy> policy = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const Config& config() const noexcept;

  // Stores a position heartbeat. Unknown peers become pending (placed by the
  // next flush). Throws Error{Config, "invalid_position"} for non-finite
  // coordinates and Error{Config, "invalid_peer_id"} for an empty id, leaving
  // the engine unchanged.
  void update(std::string_view peer_id, float x, float y, float z,
              PreferenceOp op = PreferenceOp::Keep, std::string_view preferred = {},
              int64_t now_ms = 0);

  // Batch form: n ids, xyz = n*3 floats row-major; ops/preferred may be null
  // (keep every preference), else n entries each. Validates the whole batch
  // first: on error nothing is applied.
  void update_many(const std::string_view* peer_ids, std::size_t n, const float* xyz,
                   const PreferenceOp* ops, const std::string* preferred, int64_t now_ms);

  // Pending peer: forgotten silently. Placed peer: removed from its island
  // now (emptied islands are deleted) and reported as Left by the next flush.
  // Returns false if the peer was unknown.
  bool disconnect(std::string_view peer_id);
  std::size_t disconnect_many(const std::vector<std::string>& peer_ids);

  // Disconnects every peer whose last update is older than now_ms - timeout_ms
  // (strictly), in peer-index order. Returns how many.
  std::size_t expire(int64_t now_ms, int64_t timeout_ms);

  // Runs one clustering round; see the file comment and docs/archipelago.md.
  // Order: Left entries in disconnect order, then Changed entries in the
  // order each peer first changed island during the flush.
  std::vector<IslandChange> flush();

  std::vector<IslandInfo> islands() const;
  // Calls fn for every island, in creation order, with the engine lock held
  // (fn must not call into the engine): what islands() returns, without
  // copying it (a tick reads every island to publish their status, and copies
  // only the ones it changed).
  void visit_islands(const std::function<void(const IslandRef&)>& fn) const;
  std::optional<std::string> island_of(std::string_view peer_id) const;
  std::size_t peer_count() const;
  std::size_t island_count() const;
  Snapshot snapshot() const;
  FlushStats last_flush_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// prefix + base-36 (digits 0-9a-z) of counter.
std::string island_id(std::string_view prefix, uint64_t counter);

}  // namespace dclcomms::archipelago
