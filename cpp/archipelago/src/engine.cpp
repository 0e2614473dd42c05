// Converge-mode clustering (archipelago.md §2.6). See docs/archipelago.md for
// the algorithm and why it reaches a fixed point within one flush.

#include "dclcomms/archipelago/engine.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
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

  mutable std::mutex mu;

  // Peers, struct-of-arrays by dense index. ids live in a deque so the
  // string_view keys of `index` stay valid while it grows.
  std::deque<std::string> ids;
  std::unordered_map<std::string_view, uint32_t> index;
  std::vector<float> px, py, pz;
  std::vector<uint32_t> pisland;
  std::vector<int64_t> last_ms;
  std::vector<std::string> pref;
  std::vector<uint8_t> state, flags;
  std::vector<uint64_t> start_seq;
  std::vector<uint32_t> free_idx, deferred_free;
  std::vector<uint32_t> pending;  // arrival order; stale entries skipped
  std::vector<uint32_t> touched;
  std::vector<Departure> departures;
  std::unordered_map<std::string, size_t> departure_of;
  std::unordered_map<uint32_t, size_t> reconnect_of;  // pending peer -> departure
  size_t live_peers = 0;

  // Islands, by slot.
  std::vector<Island> islands;
  std::vector<uint32_t> free_slots;
  std::unordered_map<uint64_t, uint32_t> slot_of_seq;
  uint64_t next_seq = 1;
  std::vector<QueueItem> split_queue;
  std::deque<QueueItem> merge_queue;

  std::unordered_map<uint64_t, std::vector<CellEntry>> grid;

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
    max_capacity = cfg.max_island_size;
  }

  // --- geometry ------------------------------------------------------------

  double dist2(uint32_t a, uint32_t b) const {
    double dx = static_cast<double>(px[a]) - static_cast<double>(px[b]);
    double dz = static_cast<double>(pz[a]) - static_cast<double>(pz[b]);
    return dx * dx + dz * dz;
  }
  uint64_t key_of(uint32_t p) const {
    return cell_key(cell_coord(px[p], inv_cell), cell_coord(pz[p], inv_cell));
  }

  // --- grid ----------------------------------------------------------------

  void cell_inc(uint64_t key, uint32_t slot) {
    auto& v = grid[key];
    for (auto& e : v) {
      if (e.island == slot) {
        ++e.count;
        return;
      }
    }
    v.push_back({slot, 1});
  }
  void cell_dec(uint64_t key, uint32_t slot) {
    auto it = grid.find(key);
    if (it == grid.end()) return;
    auto& v = it->second;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i].island == slot) {
        if (--v[i].count == 0) {
          v[i] = v.back();
          v.pop_back();
          if (v.empty()) grid.erase(it);
        }
        return;
      }
    }
  }

  // --- islands -------------------------------------------------------------

  std::string id_of_seq(uint64_t seq) const { return island_id(cfg.id_prefix, seq); }

  // The island slot an id names, or kNone.
  uint32_t slot_of_id(std::string_view id) const {
    const std::string& p = cfg.id_prefix;
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
      stamp.push_back(0);
    }
    Island& is = islands[slot];
    is.seq = next_seq++;
    is.members.clear();
    is.alive = true;
    is.split_queued = false;
    is.merge_queued = false;
    is.max_peers = cfg.max_island_size;
    if (policy) {
      is.max_peers = std::max<uint32_t>(
          1, policy->capacity_for_new_island(id_of_seq(is.seq), cfg.max_island_size));
    }
    max_capacity = std::max(max_capacity, is.max_peers);
    slot_of_seq.emplace(is.seq, slot);
    return slot;
  }

  void delete_island(uint32_t slot) {
    Island& is = islands[slot];
    slot_of_seq.erase(is.seq);
    is.alive = false;
    is.members.clear();
    is.members.shrink_to_fit();
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
    const Island& A = islands[a];
    const Island& B = islands[b];
    if (A.members.size() != B.members.size()) return A.members.size() > B.members.size();
    return A.seq < B.seq;
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
      px.push_back(0);
      py.push_back(0);
      pz.push_back(0);
      pisland.push_back(kNone);
      last_ms.push_back(0);
      pref.emplace_back();
      state.push_back(kFree);
      flags.push_back(0);
      start_seq.push_back(0);
    }
    index.emplace(std::string_view(ids[p]), p);
    pisland[p] = kNone;
    pref[p].clear();
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
    auto it = index.find(id);
    uint32_t p = it == index.end() ? alloc_peer(id) : it->second;
    if (state[p] == kActive) {
      bool moved = px[p] != xyz[0] || pz[p] != xyz[2];
      if (moved) {
        uint64_t old_key = key_of(p);
        px[p] = xyz[0];
        pz[p] = xyz[2];
        uint64_t new_key = key_of(p);
        uint32_t slot = pisland[p];
        if (old_key != new_key) {
          cell_dec(old_key, slot);
          cell_inc(new_key, slot);
        }
        queue_split(slot);
        queue_merge(slot);
      }
    } else {
      px[p] = xyz[0];
      pz[p] = xyz[2];
    }
    py[p] = xyz[1];
    last_ms[p] = now_ms;
    if (op == PreferenceOp::Set) {
      pref[p].assign(preferred.data(), preferred.size());
    } else if (op == PreferenceOp::Clear) {
      pref[p].clear();
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
    auto it = index.find(id);
    if (it == index.end()) return false;
    uint32_t p = it->second;
    index.erase(it);
    if (state[p] == kActive) {
      uint32_t slot = pisland[p];
      Island& is = islands[slot];
      is.members.erase(std::find(is.members.begin(), is.members.end(), p));
      cell_dec(key_of(p), slot);
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
    pref[p].clear();
    pref[p].shrink_to_fit();
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
    // Components under leave distance by BFS; each popped member scans only
    // the still-unassigned ones, so a compact island costs O(k).
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
            queue.push_back(v);
          } else {
            remaining[w++] = v;
          }
        }
        remaining.resize(w);
      }
    }
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
        cell_dec(key, slot);
        cell_inc(key, dst);
        pisland[p] = dst;
      }
      islands[dst].members.push_back(p);
    }
    for (uint32_t c = 0; c < ncomp; ++c) queue_merge(slots[c]);
  }

  // Any member of `slot` within join distance of peer p?
  bool island_near_point(uint32_t slot, uint32_t p) {
    for (uint32_t q : islands[slot].members) {
      ++stats.pair_tests;
      if (dist2(p, q) <= join2) return true;
    }
    return false;
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
    const int32_t cx = cell_coord(px[p], inv_cell);
    const int32_t cz = cell_coord(pz[p], inv_cell);
    const uint32_t s = next_stamp();
    std::vector<uint32_t>& cands = scratch_cands;
    cands.clear();
    for (int32_t dx = -1; dx <= 1; ++dx) {
      for (int32_t dz = -1; dz <= 1; ++dz) {
        auto it = grid.find(cell_key(cx + dx, cz + dz));
        if (it == grid.end()) continue;
        for (const CellEntry& e : it->second) {
          if (stamp[e.island] == s) continue;
          stamp[e.island] = s;
          const Island& is = islands[e.island];
          if (is.members.size() + 1 <= is.max_peers) cands.push_back(e.island);
        }
      }
    }
    uint32_t target = kNone;
    if (!pref[p].empty()) {
      uint32_t want = slot_of_id(pref[p]);
      if (want != kNone && stamp[want] == s &&
          std::find(cands.begin(), cands.end(), want) != cands.end() &&
          island_near_point(want, p)) {
        target = want;
      }
    }
    if (target == kNone) {
      std::sort(cands.begin(), cands.end(),
                [this](uint32_t a, uint32_t b) { return ranks_above(a, b); });
      for (uint32_t c : cands) {
        if (island_near_point(c, p)) {
          target = c;
          break;
        }
      }
    }
    if (target == kNone) target = new_island();
    touch(p);
    pisland[p] = target;
    islands[target].members.push_back(p);
    cell_inc(key_of(p), target);
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
      minx = std::min(minx, static_cast<double>(px[q]));
      maxx = std::max(maxx, static_cast<double>(px[q]));
      minz = std::min(minz, static_cast<double>(pz[q]));
      maxz = std::max(maxz, static_cast<double>(pz[q]));
    }
    const double d = cfg.join_distance;
    for (uint32_t o : outer) {
      double x = px[o], z = pz[o];
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
    std::vector<std::pair<std::string_view, uint32_t>> votes;
    std::string_view leader;
    uint32_t best = 0;
    for (uint32_t p : islands[slot].members) {
      if (pref[p].empty()) continue;
      auto it = std::find_if(votes.begin(), votes.end(),
                             [&](const auto& v) { return v.first == pref[p]; });
      uint32_t n;
      if (it == votes.end()) {
        votes.emplace_back(pref[p], 1);
        n = 1;
      } else {
        n = ++it->second;
      }
      if (n > best) {
        best = n;
        leader = pref[p];
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
      cell_dec(key, from);
      cell_inc(key, to);
      pisland[p] = to;
      dst.push_back(p);
    }
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
      auto it = grid.find(key);
      if (it == grid.end()) continue;
      for (const CellEntry& e : it->second) {
        if (stamp[e.island] == s) continue;
        stamp[e.island] = s;
        const Island& t = islands[e.island];
        const size_t sum = xs + t.members.size();
        if (ranks_above(e.island, x)) {
          if (sum <= t.max_peers) higher.push_back(e.island);
        } else if (sum <= islands[x].max_peers) {
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
    for (uint32_t p : pending) {
      if (state[p] == kPending) admit(p);
    }
    pending.clear();
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
      sx += px[p];
      sz += pz[p];
    }
    const double n = static_cast<double>(m.size());
    center[0] = sx / n;
    center[1] = 0;
    center[2] = sz / n;
    double r2 = 0;
    for (uint32_t p : m) {
      double dx = px[p] - center[0], dz = pz[p] - center[2];
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

void Engine::update_many(const std::string* peer_ids, std::size_t n, const float* xyz,
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

std::vector<IslandInfo> Engine::islands() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  const Impl& im = *impl_;
  std::vector<IslandInfo> out;
  for (uint32_t s : im.islands_in_order()) {
    IslandInfo info;
    info.id = im.id_of_seq(im.islands[s].seq);
    for (uint32_t p : im.islands[s].members) info.peers.push_back(im.ids[p]);
    im.geometry(s, info.center, &info.radius);
    info.max_peers = im.islands[s].max_peers;
    out.push_back(std::move(info));
  }
  return out;
}

std::optional<std::string> Engine::island_of(std::string_view peer_id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->index.find(peer_id);
  if (it == impl_->index.end() || impl_->pisland[it->second] == kNone) return std::nullopt;
  return impl_->id_of_seq(impl_->islands[impl_->pisland[it->second]].seq);
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
    s.positions.push_back(im.px[p]);
    s.positions.push_back(im.py[p]);
    s.positions.push_back(im.pz[p]);
    s.island_index.push_back(im.pisland[p] == kNone ? -1 : row_of_slot[im.pisland[p]]);
  }
  return s;
}

FlushStats Engine::last_flush_stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

}  // namespace dclcomms::archipelago
