// Converge-mode clustering (archipelago.md §2.6). See docs/archipelago.md for
// the algorithm and why it reaches a fixed point within one flush.

#include "dclcomms/archipelago/engine.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <ctime>
#include <deque>
#include <limits>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "dclcomms/error.hpp"

namespace dclcomms::archipelago {

namespace {

constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();

enum PeerState : uint8_t { kFree = 0, kPending = 1, kActive = 2 };
enum PeerFlag : uint8_t { kTouched = 1, kForceEmit = 2 };

[[noreturn]] void config_error(const std::string& code, const std::string& message) {
  throw Error(ErrorKind::Config, code, message);
}

// The grid: cells of side `join_distance` over X/Z. Two points within join
// distance are in the same or adjacent cells, so a 3x3 neighbourhood is
// complete. Each cell lists the islands with members in it (and how many), so
// neighbour discovery works on islands, not peers.
struct CellEntry {
  uint32_t island;
  uint32_t count;
};

int32_t cell_coord(float v, double inv_cell) {
  double c = std::floor(static_cast<double>(v) * inv_cell);
  // Positions are finite; clamping keeps absurd coordinates in border cells,
  // which stays correct (exact distance tests follow every grid lookup).
  c = std::min(c, static_cast<double>(std::numeric_limits<int32_t>::max() - 1));
  c = std::max(c, static_cast<double>(std::numeric_limits<int32_t>::min() + 1));
  return static_cast<int32_t>(c);
}

uint64_t cell_key(int32_t cx, int32_t cz) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(cx)) << 32) | static_cast<uint32_t>(cz);
}

// Open-addressing map cell key -> cell (linear probing, power-of-two size).
// Cells are never removed: their number is bounded by the area peers have
// visited (one per join_distance square), and an empty cell costs ~40 bytes.
class CellMap {
 public:
  using Cell = std::vector<CellEntry>;

  Cell* find(uint64_t key) {
    if (slots_.empty()) return nullptr;
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].idx == 0) return nullptr;
      if (slots_[i].key == key) return &cells_[slots_[i].idx - 1];
    }
  }
  Cell& get(uint64_t key) {
    if ((cells_.size() + 1) * 2 > slots_.size()) grow();
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].idx == 0) {
        cells_.emplace_back();
        slots_[i] = {key, static_cast<uint32_t>(cells_.size())};
        return cells_.back();
      }
      if (slots_[i].key == key) return cells_[slots_[i].idx - 1];
    }
  }

 private:
  struct Slot {
    uint64_t key;
    uint32_t idx;  // 1-based index into cells_, 0 = empty
  };
  static size_t hash(uint64_t k) {
    k ^= k >> 33;  // murmur3 finaliser
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{0, 0});
    mask_ = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.idx == 0) continue;
      size_t i = hash(s.key) & mask_;
      while (slots_[i].idx != 0) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  std::vector<Cell> cells_;  // deque-like stability is not needed: callers
                             // never hold a Cell across another get()
  size_t mask_ = 0;
};

// Open-addressing map peer id -> dense peer index over the engine's id
// storage (linear probing, backward-shift deletion, 8 bytes per slot, load
// <= 1/2). Each slot keeps 32 bits of the hash, so probes rarely touch the id
// strings; std::unordered_map costs two more cache misses per heartbeat.
class PeerIndex {
 public:
  explicit PeerIndex(const std::deque<std::string>& ids) : ids_(ids) {}

  uint32_t find(std::string_view id) const {
    if (slots_.empty()) return kNone;
    const uint32_t tag = hash(id);
    for (size_t i = tag & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.peer == kNone) return kNone;
      if (s.tag == tag && ids_[s.peer] == id) return s.peer;
    }
  }
  // `id` must be absent and equal to the stored id of `peer`.
  void insert(std::string_view id, uint32_t peer) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    const uint32_t tag = hash(id);
    size_t i = tag & mask_;
    while (slots_[i].peer != kNone) i = (i + 1) & mask_;
    slots_[i] = {peer, tag};
    ++size_;
  }
  void erase(std::string_view id) {
    if (slots_.empty()) return;
    const uint32_t tag = hash(id);
    size_t i = tag & mask_;
    for (;; i = (i + 1) & mask_) {
      if (slots_[i].peer == kNone) return;
      if (slots_[i].tag == tag && ids_[slots_[i].peer] == id) break;
    }
    // Backward shift: pull later entries of the probe run into the hole.
    for (size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
      if (slots_[j].peer == kNone) break;
      const size_t home = slots_[j].tag & mask_;
      // Movable iff home is not cyclically within (i, j].
      if (((j - home) & mask_) >= ((j - i) & mask_)) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = {kNone, 0};
    --size_;
  }

 private:
  struct Slot {
    uint32_t peer;
    uint32_t tag;
  };
  static uint32_t hash(std::string_view s) {
    return static_cast<uint32_t>(std::hash<std::string_view>{}(s));
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{kNone, 0});
    mask_ = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.peer == kNone) continue;
      size_t i = s.tag & mask_;
      while (slots_[i].peer != kNone) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }
  const std::deque<std::string>& ids_;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

bool valid_prefix(const std::string& p) {
  if (p.empty()) return false;
  for (unsigned char ch : p) {
    if (ch == '.' || ch == '*' || ch == '>' || std::isspace(ch) || ch < 0x20 || ch == 0x7f) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string island_id(std::string_view prefix, uint64_t counter) {
  static constexpr char kDigits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  char buf[16];
  int n = 0;
  do {
    buf[n++] = kDigits[counter % 36];
    counter /= 36;
  } while (counter != 0);
  std::string out(prefix);
  while (n > 0) out.push_back(buf[--n]);
  return out;
}

void validate(const Config& c) {
  auto bad = [](const std::string& msg) { config_error("invalid_parameter", msg); };
  if (!std::isfinite(c.join_distance) || c.join_distance <= 0) {
    bad("join_distance must be a positive finite number");
  }
  if (!std::isfinite(c.leave_distance) || c.leave_distance <= 0) {
    bad("leave_distance must be a positive finite number");
  }
  if (c.leave_distance < c.join_distance) bad("leave_distance must be >= join_distance");
  if (c.max_island_size < 1) bad("max_island_size must be >= 1");
  for (char ch : c.id_epoch) {
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z'))) {
      bad("id_epoch must be empty or made of [0-9a-z]");
    }
  }
  if (!valid_prefix(c.id_prefix)) {
    bad("id_prefix must be non-empty without '.', '*', '>', whitespace or control characters");
  }
}

struct Engine::Impl {
  struct Island {
    uint64_t seq = 0;  // creation counter; the id is prefix + base36(seq)
    std::vector<uint32_t> members;
    uint32_t max_peers = 0;
    bool alive = false;
    bool split_queued = false;
    bool merge_queued = false;
    // In the grid. Islands with size >= max_capacity can neither take nor
    // give peers (every merge needs |X| + |T| <= cap), so they are hidden:
    // in crowded worlds most islands are full and scans skip them for free.
    bool visible = false;
    // tparent[] of the members forms a spanning tree whose edges were within
    // leave distance when it was built: if they all still are, the island is
    // still connected and the split check costs O(size), not a full search.
    bool tree_valid = false;
  };
  struct Departure {
    std::string peer_id;
    uint64_t start_seq;
    bool superseded;
  };
  struct QueueItem {
    uint32_t slot;
    uint64_t seq;
  };

  Config cfg;
  std::shared_ptr<CapacityPolicy> policy;
  double join2, leave2, inv_cell;
  uint32_t max_capacity;  // largest capacity of any island ever created
  bool capacity_grew = false;

  mutable std::mutex mu;

  // Peers, struct-of-arrays by dense index. ids live in a deque (no
  // relocation while it grows).
  std::deque<std::string> ids;
  PeerIndex index{ids};
  std::vector<float> xz, py;  // xz interleaved: one cache line per distance test
  std::vector<uint32_t> pisland;
  std::vector<int64_t> last_ms;
  std::unordered_map<uint32_t, std::string> pref;  // sparse: few peers set one
  std::vector<uint8_t> state, flags;
  std::vector<uint64_t> start_seq;
  std::vector<uint32_t> tparent;  // spanning-tree parent in its island (kNone: root)
  std::vector<uint32_t> free_idx, deferred_free;
  std::vector<uint32_t> pending;  // arrival order; stale entries skipped
  std::vector<uint32_t> touched;
  std::vector<Departure> departures;
  std::unordered_map<std::string, size_t> departure_of;
  std::unordered_map<uint32_t, size_t> reconnect_of;  // pending peer -> departure
  size_t live_peers = 0;

  // Islands, by slot.
  std::vector<Island> islands;
  // Hot copy of each slot's size/capacity/seq: neighbour scans read these
  // for many islands, and the Island records are too big to scan cheaply.
  struct Hot {
    uint32_t size;
    uint32_t cap;
    uint64_t seq;
  };
  std::vector<Hot> hot;
  std::vector<uint32_t> free_slots;
  std::unordered_map<uint64_t, uint32_t> slot_of_seq;
  uint64_t next_seq = 1;
  std::vector<QueueItem> split_queue;
  std::deque<QueueItem> merge_queue;

  CellMap grid;

  // Scratch, reused across flushes.
  std::vector<uint32_t> stamp;
  uint32_t stamp_now = 0;
  std::vector<uint64_t> scratch_keys;
  std::vector<uint32_t> scratch_cands;
  FlushStats stats;

  explicit Impl(Config c, std::shared_ptr<CapacityPolicy> p)
      : cfg(std::move(c)), policy(std::move(p)) {
    validate(cfg);
    join2 = cfg.join_distance * cfg.join_distance;
    leave2 = cfg.leave_distance * cfg.leave_distance;
    inv_cell = 1.0 / cfg.join_distance;
    id_base = cfg.id_epoch.empty() ? cfg.id_prefix : cfg.id_prefix + cfg.id_epoch + "-";
    max_capacity = cfg.max_island_size;
  }

  // --- geometry ------------------------------------------------------------

  double dist2(uint32_t a, uint32_t b) const {
    double dx = static_cast<double>(xz[2 * a]) - static_cast<double>(xz[2 * b]);
    double dz = static_cast<double>(xz[2 * a + 1]) - static_cast<double>(xz[2 * b + 1]);
    return dx * dx + dz * dz;
  }
  uint64_t key_of(uint32_t p) const {
    return cell_key(cell_coord(xz[2 * p], inv_cell), cell_coord(xz[2 * p + 1], inv_cell));
  }

  // --- grid ----------------------------------------------------------------

  void cell_inc(uint64_t key, uint32_t slot) {
    auto& v = grid.get(key);
    for (auto& e : v) {
      if (e.island == slot) {
        ++e.count;
        return;
      }
    }
    v.push_back({slot, 1});
  }
  void cell_dec(uint64_t key, uint32_t slot) {
    CellMap::Cell* cell = grid.find(key);
    if (cell == nullptr) return;
    auto& v = *cell;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i].island == slot) {
        if (--v[i].count == 0) {
          v[i] = v.back();
          v.pop_back();
        }
        return;
      }
    }
  }

  // --- islands -------------------------------------------------------------

  std::string id_base;  // prefix [+ epoch + "-"]
  std::string id_of_seq(uint64_t seq) const { return island_id(id_base, seq); }

  // The island slot an id names, or kNone.
  uint32_t slot_of_id(std::string_view id) const {
    const std::string& p = id_base;
    if (id.size() <= p.size() || id.substr(0, p.size()) != p) return kNone;
    std::string_view digits = id.substr(p.size());
    if (digits.size() > 12 || digits[0] == '0') return kNone;  // canonical form only
    uint64_t v = 0;
    for (char ch : digits) {
      int d;
      if (ch >= '0' && ch <= '9') {
        d = ch - '0';
      } else if (ch >= 'a' && ch <= 'z') {
        d = ch - 'a' + 10;
      } else {
        return kNone;
      }
      v = v * 36 + static_cast<uint64_t>(d);
    }
    auto it = slot_of_seq.find(v);
    return it == slot_of_seq.end() ? kNone : it->second;
  }

  uint32_t new_island() {
    uint32_t slot;
    if (!free_slots.empty()) {
      slot = free_slots.back();
      free_slots.pop_back();
    } else {
      slot = static_cast<uint32_t>(islands.size());
      islands.emplace_back();
      hot.push_back({0, 0, 0});
      stamp.push_back(0);
    }
    Island& is = islands[slot];
    is.seq = next_seq++;
    is.members.clear();
    is.alive = true;
    is.split_queued = false;
    is.merge_queued = false;
    is.visible = true;  // empty: nothing to add yet
    is.tree_valid = false;
    is.max_peers = cfg.max_island_size;
    if (policy) {
      is.max_peers = std::max<uint32_t>(
          1, policy->capacity_for_new_island(id_of_seq(is.seq), cfg.max_island_size));
    }
    if (is.max_peers > max_capacity) {
      max_capacity = is.max_peers;
      capacity_grew = true;  // hidden islands may fit now: see refresh_all
    }
    slot_of_seq.emplace(is.seq, slot);
    hot[slot] = {0, is.max_peers, is.seq};
    return slot;
  }

  void delete_island(uint32_t slot) {
    Island& is = islands[slot];
    slot_of_seq.erase(is.seq);
    is.alive = false;
    is.members.clear();
    is.members.shrink_to_fit();
    hot[slot].size = 0;
    free_slots.push_back(slot);
  }

  void queue_split(uint32_t slot) {
    Island& is = islands[slot];
    if (!is.split_queued) {
      is.split_queued = true;
      split_queue.push_back({slot, is.seq});
    }
  }
  void queue_merge(uint32_t slot) {
    Island& is = islands[slot];
    if (!is.merge_queued) {
      is.merge_queued = true;
      merge_queue.push_back({slot, is.seq});
    }
  }

  // "a ranks above b": bigger, then older.
  bool ranks_above(uint32_t a, uint32_t b) const {
    const Hot& A = hot[a];
    const Hot& B = hot[b];
    if (A.size != B.size) return A.size > B.size;
    return A.seq < B.seq;
  }
  // Call after an island's member list changed (and is complete again).
  void resized(uint32_t slot) {
    hot[slot].size = static_cast<uint32_t>(islands[slot].members.size());
    const bool want = hot[slot].size < max_capacity;
    Island& is = islands[slot];
    if (want == is.visible) return;
    for (uint32_t p : is.members) {
      if (want) {
        cell_inc(key_of(p), slot);
      } else {
        cell_dec(key_of(p), slot);
      }
    }
    is.visible = want;
  }
  void refresh_all() {
    if (!capacity_grew) return;
    capacity_grew = false;
    for (uint32_t s = 0; s < islands.size(); ++s) {
      if (islands[s].alive) resized(s);
    }
  }

  // Records the island a peer had at flush start, the first time it changes.
  void touch(uint32_t p) {
    if (flags[p] & kTouched) return;
    flags[p] |= kTouched;
    if (pisland[p] != kNone) start_seq[p] = islands[pisland[p]].seq;
    touched.push_back(p);
  }

  // --- peers ---------------------------------------------------------------

  uint32_t alloc_peer(std::string_view id) {
    uint32_t p;
    if (!free_idx.empty()) {
      p = free_idx.back();
      free_idx.pop_back();
      ids[p].assign(id.data(), id.size());
    } else {
      p = static_cast<uint32_t>(ids.size());
      ids.emplace_back(id);
      xz.push_back(0);
      xz.push_back(0);
      py.push_back(0);
      pisland.push_back(kNone);
      last_ms.push_back(0);
      state.push_back(kFree);
      flags.push_back(0);
      start_seq.push_back(0);
      tparent.push_back(kNone);
    }
    index.insert(ids[p], p);
    pisland[p] = kNone;
    state[p] = kPending;
    flags[p] = 0;
    start_seq[p] = 0;
    ++live_peers;
    pending.push_back(p);
    // A peer that left earlier in this flush cycle and is back: it reports one
    // Changed (never a Left) relative to where it was at flush start.
    auto dep = departure_of.find(ids[p]);
    if (dep != departure_of.end() && !departures[dep->second].superseded) {
      departures[dep->second].superseded = true;
      start_seq[p] = departures[dep->second].start_seq;
      flags[p] |= kForceEmit;
      reconnect_of[p] = dep->second;
    }
    return p;
  }

  void apply_update(std::string_view id, const float* xyz, PreferenceOp op,
                    std::string_view preferred, int64_t now_ms) {
    uint32_t p = index.find(id);
    if (p == kNone) p = alloc_peer(id);
    if (state[p] == kActive) {
      bool moved = xz[2 * p] != xyz[0] || xz[2 * p + 1] != xyz[2];
      if (moved) {
        uint64_t old_key = key_of(p);
        xz[2 * p] = xyz[0];
        xz[2 * p + 1] = xyz[2];
        uint64_t new_key = key_of(p);
        uint32_t slot = pisland[p];
        if (old_key != new_key && islands[slot].visible) {
          cell_dec(old_key, slot);
          cell_inc(new_key, slot);
        }
        queue_split(slot);
        queue_merge(slot);
      }
    } else {
      xz[2 * p] = xyz[0];
      xz[2 * p + 1] = xyz[2];
    }
    py[p] = xyz[1];
    last_ms[p] = now_ms;
    if (op == PreferenceOp::Set && !preferred.empty()) {
      pref[p].assign(preferred.data(), preferred.size());
    } else if (op != PreferenceOp::Keep) {
      pref.erase(p);
    }
  }

  static void check_update(std::string_view id, const float* xyz, size_t row, bool batch) {
    std::string where = batch ? " (row " + std::to_string(row) + ")" : "";
    if (id.empty()) config_error("invalid_peer_id", "peer id must be non-empty" + where);
    if (!std::isfinite(xyz[0]) || !std::isfinite(xyz[1]) || !std::isfinite(xyz[2])) {
      config_error("invalid_position", "position must be finite float32 values" + where);
    }
  }

  bool apply_disconnect(std::string_view id) {
    const uint32_t p = index.find(id);
    if (p == kNone) return false;
    index.erase(id);
    if (state[p] == kActive) {
      uint32_t slot = pisland[p];
      Island& is = islands[slot];
      if (is.visible) cell_dec(key_of(p), slot);
      is.members.erase(std::find(is.members.begin(), is.members.end(), p));
      is.tree_valid = false;  // p may have been an inner node of the tree
      resized(slot);
      uint64_t seq = is.seq;
      if (is.members.empty()) {
        delete_island(slot);
      } else {
        queue_split(slot);
        queue_merge(slot);
      }
      departure_of[ids[p]] = departures.size();
      departures.push_back({ids[p], seq, false});
    } else {
      auto rec = reconnect_of.find(p);
      if (rec != reconnect_of.end()) {
        // Back and gone again before a flush: the original Left stands.
        departures[rec->second].superseded = false;
        reconnect_of.erase(rec);
      }
    }
    state[p] = kFree;
    pisland[p] = kNone;
    pref.erase(p);
    --live_peers;
    // Indices are recycled only after the flush, so stale entries in the
    // pending/touched lists can never alias a different peer.
    deferred_free.push_back(p);
    return true;
  }

  // --- flush phases --------------------------------------------------------

  void split_island(uint32_t slot) {
    ++stats.split_checks;
    std::vector<uint32_t>& m = islands[slot].members;
    const size_t k = m.size();
    if (k <= 1) return;
    if (islands[slot].tree_valid) {
      bool intact = true;
      for (uint32_t p : m) {
        if (tparent[p] == kNone) continue;
        ++stats.pair_tests;
        if (dist2(p, tparent[p]) > leave2) {
          intact = false;
          break;
        }
      }
      if (intact) return;
    }
    // Components under leave distance by BFS; each popped member scans only
    // the still-unassigned ones, so a compact island costs O(k). The BFS
    // parents become the new spanning trees.
    std::vector<uint32_t> comp(k, kNone);
    std::vector<uint32_t> remaining(k);
    for (size_t i = 0; i < k; ++i) remaining[i] = static_cast<uint32_t>(i);
    std::vector<uint32_t> queue;
    queue.reserve(k);
    uint32_t ncomp = 0;
    size_t rem_begin = 0;
    while (rem_begin < remaining.size()) {
      uint32_t c = ncomp++;
      uint32_t start = remaining[rem_begin++];
      comp[start] = c;
      tparent[m[start]] = kNone;
      queue.clear();
      queue.push_back(start);
      for (size_t qi = 0; qi < queue.size() && rem_begin < remaining.size(); ++qi) {
        uint32_t u = m[queue[qi]];
        size_t w = rem_begin;
        for (size_t r = rem_begin; r < remaining.size(); ++r) {
          uint32_t v = remaining[r];
          ++stats.pair_tests;
          if (dist2(u, m[v]) <= leave2) {
            comp[v] = c;
            tparent[m[v]] = u;
            queue.push_back(v);
          } else {
            remaining[w++] = v;
          }
        }
        remaining.resize(w);
      }
    }
    islands[slot].tree_valid = true;
    if (ncomp == 1) return;
    std::vector<uint32_t> sizes(ncomp, 0);
    for (uint32_t c : comp) ++sizes[c];
    uint32_t keep = 0;
    for (uint32_t c = 1; c < ncomp; ++c) {
      if (sizes[c] > sizes[keep]) keep = c;
    }
    std::vector<uint32_t> slots(ncomp, kNone);
    slots[keep] = slot;
    for (uint32_t c = 0; c < ncomp; ++c) {
      if (c != keep) {
        slots[c] = new_island();  // may reallocate `islands`: re-fetch below
        ++stats.splits;
      }
    }
    std::vector<uint32_t> old = std::move(islands[slot].members);
    islands[slot].members.clear();
    for (size_t i = 0; i < k; ++i) {
      uint32_t p = old[i];
      uint32_t dst = slots[comp[i]];
      if (dst != slot) {
        touch(p);
        uint64_t key = key_of(p);
        if (islands[slot].visible) cell_dec(key, slot);
        if (islands[dst].visible) cell_inc(key, dst);
        pisland[p] = dst;
      }
      islands[dst].members.push_back(p);
    }
    for (uint32_t c = 0; c < ncomp; ++c) resized(slots[c]);
    for (uint32_t c = 0; c < ncomp; ++c) {
      islands[slots[c]].tree_valid = true;  // BFS parents stay inside components
      queue_merge(slots[c]);
    }
  }

  // A member of `slot` within join distance of peer p, or kNone.
  uint32_t island_near_point(uint32_t slot, uint32_t p) {
    for (uint32_t q : islands[slot].members) {
      ++stats.pair_tests;
      if (dist2(p, q) <= join2) return q;
    }
    return kNone;
  }

  uint32_t next_stamp() {
    if (++stamp_now == 0) {
      std::fill(stamp.begin(), stamp.end(), 0);
      stamp_now = 1;
    }
    return stamp_now;
  }

  void admit(uint32_t p) {
    ++stats.admitted;
    const int32_t cx = cell_coord(xz[2 * p], inv_cell);
    const int32_t cz = cell_coord(xz[2 * p + 1], inv_cell);
    const uint32_t s = next_stamp();
    std::vector<uint32_t>& cands = scratch_cands;
    cands.clear();
    for (int32_t dx = -1; dx <= 1; ++dx) {
      for (int32_t dz = -1; dz <= 1; ++dz) {
        const CellMap::Cell* cell = grid.find(cell_key(cx + dx, cz + dz));
        if (cell == nullptr) continue;
        for (const CellEntry& e : *cell) {
          if (stamp[e.island] == s) continue;
          stamp[e.island] = s;
          if (hot[e.island].size < hot[e.island].cap) cands.push_back(e.island);
        }
      }
    }
    uint32_t target = kNone;
    uint32_t anchor = kNone;  // a member within join distance of p
    auto pit = pref.find(p);
    if (pit != pref.end()) {
      uint32_t want = slot_of_id(pit->second);
      if (want != kNone && stamp[want] == s &&
          std::find(cands.begin(), cands.end(), want) != cands.end()) {
        anchor = island_near_point(want, p);
        if (anchor != kNone) target = want;
      }
    }
    if (target == kNone) {
      std::sort(cands.begin(), cands.end(),
                [this](uint32_t a, uint32_t b) { return ranks_above(a, b); });
      for (uint32_t c : cands) {
        anchor = island_near_point(c, p);
        if (anchor != kNone) {
          target = c;
          break;
        }
      }
    }
    if (target == kNone) {
      target = new_island();
      islands[target].tree_valid = true;  // p alone: the root
    }
    // join <= leave, so the edge to the anchor keeps the spanning tree valid.
    tparent[p] = anchor;
    touch(p);
    pisland[p] = target;
    islands[target].members.push_back(p);
    if (islands[target].visible) cell_inc(key_of(p), target);
    resized(target);
    state[p] = kActive;
    queue_merge(target);
  }

  // Do islands a and b have a member pair within join distance?
  bool islands_touch(uint32_t a, uint32_t b) {
    const auto& A = islands[a].members;
    const auto& B = islands[b].members;
    const auto& outer = A.size() <= B.size() ? B : A;
    const auto& inner = A.size() <= B.size() ? A : B;
    double minx = std::numeric_limits<double>::infinity(), minz = minx;
    double maxx = -minx, maxz = -minx;
    for (uint32_t q : inner) {
      minx = std::min(minx, static_cast<double>(xz[2 * q]));
      maxx = std::max(maxx, static_cast<double>(xz[2 * q]));
      minz = std::min(minz, static_cast<double>(xz[2 * q + 1]));
      maxz = std::max(maxz, static_cast<double>(xz[2 * q + 1]));
    }
    const double d = cfg.join_distance;
    for (uint32_t o : outer) {
      double x = xz[2 * o], z = xz[2 * o + 1];
      if (x < minx - d || x > maxx + d || z < minz - d || z > maxz + d) continue;
      for (uint32_t q : inner) {
        ++stats.pair_tests;
        if (dist2(o, q) <= join2) return true;
      }
    }
    return false;
  }

  // Preferred island of an island's members: first to reach the highest count.
  uint32_t voted_island(uint32_t slot) {
    if (pref.empty()) return kNone;
    std::vector<std::pair<std::string_view, uint32_t>> votes;
    std::string_view leader;
    uint32_t best = 0;
    for (uint32_t p : islands[slot].members) {
      auto pit = pref.find(p);
      if (pit == pref.end()) continue;
      const std::string& mine = pit->second;
      auto it =
          std::find_if(votes.begin(), votes.end(), [&](const auto& v) { return v.first == mine; });
      uint32_t n;
      if (it == votes.end()) {
        votes.emplace_back(mine, 1);
        n = 1;
      } else {
        n = ++it->second;
      }
      if (n > best) {
        best = n;
        leader = mine;
      }
    }
    return best == 0 ? kNone : slot_of_id(leader);
  }

  void merge_into(uint32_t from, uint32_t to) {
    ++stats.merges;
    std::vector<uint32_t> moving = std::move(islands[from].members);
    auto& dst = islands[to].members;
    dst.reserve(dst.size() + moving.size());
    for (uint32_t p : moving) {
      touch(p);
      uint64_t key = key_of(p);
      if (islands[from].visible) cell_dec(key, from);
      if (islands[to].visible) cell_inc(key, to);
      pisland[p] = to;
      dst.push_back(p);
    }
    resized(to);
    islands[to].tree_valid = false;  // two trees, no edge recorded between them
    delete_island(from);
    queue_merge(to);
  }

  void merge_step(uint32_t x) {
    const size_t xs = islands[x].members.size();
    if (xs + 1 > max_capacity) return;  // nothing can fit with a full island
    ++stats.merge_checks;
    // Cells within one step of any member.
    std::vector<uint64_t>& keys = scratch_keys;
    keys.clear();
    for (uint32_t p : islands[x].members) keys.push_back(key_of(p));
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    const size_t base = keys.size();
    for (size_t i = 0; i < base; ++i) {
      int32_t cx = static_cast<int32_t>(static_cast<uint32_t>(keys[i] >> 32));
      int32_t cz = static_cast<int32_t>(static_cast<uint32_t>(keys[i]));
      for (int32_t dx = -1; dx <= 1; ++dx) {
        for (int32_t dz = -1; dz <= 1; ++dz) {
          if (dx != 0 || dz != 0) keys.push_back(cell_key(cx + dx, cz + dz));
        }
      }
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    const uint32_t s = next_stamp();
    stamp[x] = s;
    std::vector<uint32_t> higher, lower;
    for (uint64_t key : keys) {
      const CellMap::Cell* cell = grid.find(key);
      if (cell == nullptr) continue;
      for (const CellEntry& e : *cell) {
        if (stamp[e.island] == s) continue;
        stamp[e.island] = s;
        const Hot& t = hot[e.island];
        const size_t sum = xs + t.size;
        if (ranks_above(e.island, x)) {
          if (sum <= t.cap) higher.push_back(e.island);
        } else if (sum <= hot[x].cap) {
          lower.push_back(e.island);
        }
      }
    }
    if (!higher.empty()) {
      uint32_t want = voted_island(x);
      if (want != kNone && std::find(higher.begin(), higher.end(), want) != higher.end() &&
          islands_touch(x, want)) {
        merge_into(x, want);
        return;
      }
      std::sort(higher.begin(), higher.end(),
                [this](uint32_t a, uint32_t b) { return ranks_above(a, b); });
      for (uint32_t t : higher) {
        if (t != want && islands_touch(x, t)) {
          merge_into(x, t);
          return;
        }
      }
    }
    // X stays: lower islands that touch it and fit must now look for their
    // best target (X or better).
    std::sort(lower.begin(), lower.end(),
              [this](uint32_t a, uint32_t b) { return ranks_above(a, b); });
    for (uint32_t t : lower) {
      if (islands_touch(x, t)) queue_merge(t);
    }
  }

  std::vector<IslandChange> flush() {
    const auto t0 = std::chrono::steady_clock::now();
    timespec c0{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    stats = FlushStats{};
    // 1-2. Disconnects, expiry and positions were applied on arrival.
    // 3. Split islands whose members moved or left.
    std::vector<QueueItem> splits;
    splits.swap(split_queue);
    for (const QueueItem& q : splits) {
      if (q.slot < islands.size() && islands[q.slot].alive && islands[q.slot].seq == q.seq) {
        islands[q.slot].split_queued = false;
        split_island(q.slot);
      }
    }
    // 4. Admit new peers in arrival order.
    std::vector<uint32_t> waiting;
    for (uint32_t p : pending) {
      if (state[p] != kPending) continue;
      if (policy && !policy->ready_to_admit(ids[p])) {
        waiting.push_back(p);
        auto rec = reconnect_of.find(p);
        if (rec != reconnect_of.end()) {
          // Back, but not placed this flush: its old session's Left stands.
          departures[rec->second].superseded = false;
          reconnect_of.erase(rec);
          flags[p] = 0;
          start_seq[p] = 0;
        }
        continue;
      }
      admit(p);
    }
    pending.swap(waiting);
    refresh_all();
    // 5. Merge passes until no island that changed can merge.
    while (!merge_queue.empty()) {
      QueueItem q = merge_queue.front();
      merge_queue.pop_front();
      Island& is = islands[q.slot];
      if (!is.alive || is.seq != q.seq || !is.merge_queued) continue;
      is.merge_queued = false;
      merge_step(q.slot);
    }
    // 6. Coalesce: one entry per peer, flush start vs end.
    std::vector<IslandChange> out;
    for (const Departure& d : departures) {
      if (!d.superseded) {
        out.push_back({d.peer_id, ChangeKind::Left, id_of_seq(d.start_seq), std::nullopt});
      }
    }
    for (uint32_t p : touched) {
      if (state[p] != kActive) continue;
      const uint64_t end = islands[pisland[p]].seq;
      if (end != start_seq[p] || (flags[p] & kForceEmit)) {
        std::optional<std::string> from;
        if (start_seq[p] != 0) from = id_of_seq(start_seq[p]);
        out.push_back({ids[p], ChangeKind::Changed, id_of_seq(end), std::move(from)});
      }
      flags[p] = 0;
      start_seq[p] = 0;
    }
    // Pending peers that reconnected were all admitted, hence touched above.
    touched.clear();
    departures.clear();
    departure_of.clear();
    reconnect_of.clear();
    for (uint32_t p : deferred_free) {
      ids[p].clear();
      ids[p].shrink_to_fit();
      flags[p] = 0;
      start_seq[p] = 0;
      free_idx.push_back(p);
    }
    deferred_free.clear();
    timespec c1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    stats.cpu_us =
        static_cast<uint64_t>((c1.tv_sec - c0.tv_sec) * 1000000 + (c1.tv_nsec - c0.tv_nsec) / 1000);
    stats.elapsed_us = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
            .count());
    return out;
  }

  std::vector<uint32_t> islands_in_order() const {
    std::vector<uint32_t> order;
    order.reserve(slot_of_seq.size());
    for (uint32_t s = 0; s < islands.size(); ++s) {
      if (islands[s].alive) order.push_back(s);
    }
    std::sort(order.begin(), order.end(),
              [this](uint32_t a, uint32_t b) { return islands[a].seq < islands[b].seq; });
    return order;
  }

  void geometry(uint32_t slot, double* center, double* radius) const {
    const auto& m = islands[slot].members;
    double sx = 0, sz = 0;
    for (uint32_t p : m) {
      sx += xz[2 * p];
      sz += xz[2 * p + 1];
    }
    const double n = static_cast<double>(m.size());
    center[0] = sx / n;
    center[1] = 0;
    center[2] = sz / n;
    double r2 = 0;
    for (uint32_t p : m) {
      double dx = xz[2 * p] - center[0], dz = xz[2 * p + 1] - center[2];
      r2 = std::max(r2, dx * dx + dz * dz);
    }
    *radius = std::sqrt(r2);
  }
};

Engine::Engine(Config config, std::shared_ptr<CapacityPolicy> policy)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(policy))) {}
Engine::~Engine() = default;

const Config& Engine::config() const noexcept {
  return impl_->cfg;
}

void Engine::update(std::string_view peer_id, float x, float y, float z, PreferenceOp op,
                    std::string_view preferred, int64_t now_ms) {
  const float xyz[3] = {x, y, z};
  Impl::check_update(peer_id, xyz, 0, false);
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->apply_update(peer_id, xyz, op, preferred, now_ms);
}

void Engine::update_many(const std::string_view* peer_ids, std::size_t n, const float* xyz,
                         const PreferenceOp* ops, const std::string* preferred, int64_t now_ms) {
  for (size_t i = 0; i < n; ++i) Impl::check_update(peer_ids[i], xyz + 3 * i, i, true);
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (size_t i = 0; i < n; ++i) {
    PreferenceOp op = ops ? ops[i] : PreferenceOp::Keep;
    std::string_view pv = preferred ? std::string_view(preferred[i]) : std::string_view();
    impl_->apply_update(peer_ids[i], xyz + 3 * i, op, pv, now_ms);
  }
}

bool Engine::disconnect(std::string_view peer_id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->apply_disconnect(peer_id);
}

std::size_t Engine::disconnect_many(const std::vector<std::string>& peer_ids) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::size_t n = 0;
  for (const auto& id : peer_ids) n += impl_->apply_disconnect(id) ? 1 : 0;
  return n;
}

std::size_t Engine::expire(int64_t now_ms, int64_t timeout_ms) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Impl& im = *impl_;
  std::vector<std::string> gone;
  for (uint32_t p = 0; p < im.ids.size(); ++p) {
    if (im.state[p] != kFree && im.last_ms[p] < now_ms - timeout_ms) gone.push_back(im.ids[p]);
  }
  for (const auto& id : gone) im.apply_disconnect(id);
  return gone.size();
}

std::vector<IslandChange> Engine::flush() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->flush();
}

void Engine::visit_islands(const std::function<void(const IslandRef&)>& fn) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  const Impl& im = *impl_;
  std::vector<std::string_view> peers;  // reused from island to island
  std::vector<float> positions;
  for (uint32_t s : im.islands_in_order()) {
    const std::string id = im.id_of_seq(im.islands[s].seq);
    const auto& members = im.islands[s].members;
    peers.clear();
    positions.clear();
    for (uint32_t p : members) {
      peers.push_back(im.ids[p]);
      positions.insert(positions.end(), {im.xz[2 * p], im.py[p], im.xz[2 * p + 1]});
    }
    IslandRef ref{id, peers, positions, {0, 0, 0}, 0, im.islands[s].max_peers};
    im.geometry(s, ref.center, &ref.radius);
    fn(ref);
  }
}

std::vector<IslandInfo> Engine::islands() const {
  std::vector<IslandInfo> out;
  visit_islands([&out](const IslandRef& r) { out.push_back(r.copy()); });
  return out;
}

std::optional<std::string> Engine::island_of(std::string_view peer_id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  const uint32_t p = impl_->index.find(peer_id);
  if (p == kNone || impl_->pisland[p] == kNone) return std::nullopt;
  return impl_->id_of_seq(impl_->islands[impl_->pisland[p]].seq);
}

std::size_t Engine::peer_count() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->live_peers;
}

std::size_t Engine::island_count() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->slot_of_seq.size();
}

Snapshot Engine::snapshot() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  const Impl& im = *impl_;
  Snapshot s;
  std::vector<uint32_t> order = im.islands_in_order();
  std::vector<int32_t> row_of_slot(im.islands.size(), -1);
  for (size_t r = 0; r < order.size(); ++r) {
    uint32_t slot = order[r];
    row_of_slot[slot] = static_cast<int32_t>(r);
    s.island_ids.push_back(im.id_of_seq(im.islands[slot].seq));
    double c[3], rad;
    im.geometry(slot, c, &rad);
    s.centers.insert(s.centers.end(), c, c + 3);
    s.radii.push_back(rad);
    s.sizes.push_back(static_cast<uint32_t>(im.islands[slot].members.size()));
    s.max_peers.push_back(im.islands[slot].max_peers);
  }
  s.peer_ids.reserve(im.live_peers);
  s.positions.reserve(im.live_peers * 3);
  s.island_index.reserve(im.live_peers);
  for (uint32_t p = 0; p < im.ids.size(); ++p) {
    if (im.state[p] == kFree) continue;
    s.peer_ids.push_back(im.ids[p]);
    s.positions.push_back(im.xz[2 * p]);
    s.positions.push_back(im.py[p]);
    s.positions.push_back(im.xz[2 * p + 1]);
    s.island_index.push_back(im.pisland[p] == kNone ? -1 : row_of_slot[im.pisland[p]]);
  }
  return s;
}

FlushStats Engine::last_flush_stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

}  // namespace dclcomms::archipelago
