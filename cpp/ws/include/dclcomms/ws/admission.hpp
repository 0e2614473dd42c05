#pragma once
// Admission of TCP connections, before a byte of them is read (socket-free:
// the server calls it under its own lock; GoogleTests drive it directly).
//
// A connection is admitted while fewer than max_connections are open. When
// they are all open, the oldest connection that has not completed a
// handshake and has been open at least evict_min_age_ms is evicted to make
// room (a flood of idle upgrades from many addresses cannot keep a valid
// client out: it takes the flood's place, and has evict_min_age_ms to finish
// its handshake before a newer connection may take its own). With nothing to
// evict, up to reserve more are admitted "reserve only": the server answers
// them on /health/live, /health/ready, /status and /metrics only, so an
// operator can still see a realm at its limit; past that, refused.
// Independently, one IP address may hold at most max_unauthenticated_per_ip
// connections that have not completed a handshake (a flood from one address
// cannot take every slot).
//
// A plain HTTP connection never completes a handshake, so it counts as
// unauthenticated while open. One that waits between two requests (HTTP/1.1
// keep-alive, idle(key, true)) holds nothing its client would lose: a client
// reopens a closed idle connection. It is therefore evicted first, at any age:
// at max_connections before the oldest connection still in its handshake, and
// at its address's max_unauthenticated_per_ip instead of refusing that
// address's newcomer (the longest idle of the address goes).

#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dclcomms::ws {

class Admission {
 public:
  enum class Verdict { Admit, ReserveOnly, RefuseFull, RefusePerIp };
  struct Decision {
    Verdict verdict = Verdict::RefuseFull;
    // A connection to close now to make room (nullptr: none; at most one per
    // admission). It is forgotten here (its slot is the new connection's);
    // closed() for it later is a no-op.
    const void* evict = nullptr;
  };

  Admission(size_t max_connections, size_t reserve, size_t max_unauthenticated_per_ip,
            int64_t evict_min_age_ms = 0) noexcept
      : max_(max_connections),
        reserve_(reserve),
        per_ip_(max_unauthenticated_per_ip),
        evict_age_(evict_min_age_ms) {}

  // A new connection (key: any address unique while it is open) from ip at
  // now_ms (steady clock). Admit and ReserveOnly count it (open, and
  // unauthenticated for ip) until closed(); a refusal is only counted.
  Decision admit(const void* key, const std::string& ip, int64_t now_ms);
  // An admitted connection completed a handshake: it no longer counts
  // against its address and is never evicted (at most once per connection).
  void authenticated(const void* key);
  // An admitted connection that has not completed a handshake now waits for
  // its next plain HTTP request after an answer (idle: true), or has one under
  // way again (false). Unknown and authenticated keys are ignored.
  void idle(const void* key, bool idle);
  size_t idle() const noexcept { return idle_total_; }
  // An admitted connection ended (unknown keys, e.g. evicted ones, ignored).
  void closed(const void* key);
  // An admitted connection's key changed (its socket moved to another
  // connection object): its bookkeeping follows (unknown keys ignored).
  void rekey(const void* from, const void* to);
  bool reserve_only(const void* key) const;

  size_t open() const noexcept { return open_; }
  size_t reserve_open() const noexcept { return reserve_open_; }
  size_t unauthenticated() const noexcept { return unauth_total_; }
  size_t unauthenticated(const std::string& ip) const;
  size_t max_connections() const noexcept { return max_; }

  // Gauges and counters, in the order of Stats::server (after the server's own).
  std::vector<std::pair<std::string, uint64_t>> stats() const;

 private:
  struct Conn {
    std::string ip;
    bool authenticated = false;
    bool reserve_only = false;
    int64_t since_ms = 0;
    std::list<const void*>::iterator queued;      // in evictable_ while not authenticated
    bool idle = false;                            // between two plain HTTP requests
    std::list<const void*>::iterator idle_at;     // in idle_ (regular ones only)
    std::list<const void*>::iterator idle_at_ip;  // in idle_by_ip_[ip]
  };
  void release_unauth(const std::string& ip);
  void set_idle(Conn& c, const void* key, bool idle);
  // Drops key's bookkeeping (its slot, its address's count).
  void forget(std::unordered_map<const void*, Conn>::iterator it);

  size_t max_, reserve_, per_ip_;
  int64_t evict_age_;
  size_t open_ = 0, reserve_open_ = 0, unauth_total_ = 0;
  std::unordered_map<std::string, size_t> unauth_;  // ip -> connections not authenticated
  std::unordered_map<const void*, Conn> conns_;
  std::list<const void*> evictable_;  // regular, unauthenticated; oldest first
  std::list<const void*> idle_;       // regular, idle; longest idle first
  std::unordered_map<std::string, std::list<const void*>> idle_by_ip_;  // any, idle
  size_t idle_total_ = 0;
  uint64_t admitted_ = 0, admitted_reserve_ = 0, refused_full_ = 0, refused_per_ip_ = 0,
           evicted_ = 0, evicted_idle_ = 0;
};

}  // namespace dclcomms::ws
