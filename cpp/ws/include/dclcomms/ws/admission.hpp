#pragma once
// Admission of TCP connections, before a byte of them is read (socket-free:
// the server calls it under its own lock; GoogleTests drive it directly).
//
// A connection is admitted while fewer than max_connections are open. Past
// that, up to reserve more are admitted "reserve only": the server answers
// them on /health/live, /health/ready, /status and /metrics only, so an
// operator can still see a realm at its limit. Independently, one IP address
// may hold at most max_unauthenticated_per_ip connections that have not
// completed a handshake (a flood from one address cannot take every slot).

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dclcomms::ws {

class Admission {
 public:
  enum class Verdict { Admit, ReserveOnly, RefuseFull, RefusePerIp };

  Admission(size_t max_connections, size_t reserve, size_t max_unauthenticated_per_ip) noexcept
      : max_(max_connections), reserve_(reserve), per_ip_(max_unauthenticated_per_ip) {}

  // A new connection from ip. Admit and ReserveOnly count it (open, and
  // unauthenticated for ip) until closed(); a refusal is only counted.
  Verdict admit(const std::string& ip);
  // An admitted connection completed a handshake: it no longer counts
  // against its address (called at most once per connection).
  void authenticated(const std::string& ip);
  // An admitted connection ended; was_authenticated: authenticated() was
  // called for it; reserve_only: its verdict was ReserveOnly.
  void closed(const std::string& ip, bool was_authenticated, bool reserve_only);

  size_t open() const noexcept { return open_; }
  size_t reserve_open() const noexcept { return reserve_open_; }
  size_t unauthenticated() const noexcept { return unauth_total_; }
  size_t unauthenticated(const std::string& ip) const;
  size_t max_connections() const noexcept { return max_; }

  // Gauges and counters, in the order of Stats::server (after the server's own).
  std::vector<std::pair<std::string, uint64_t>> stats() const;

 private:
  void release_unauth(const std::string& ip);

  size_t max_, reserve_, per_ip_;
  size_t open_ = 0, reserve_open_ = 0, unauth_total_ = 0;
  std::unordered_map<std::string, size_t> unauth_;  // ip -> connections not authenticated
  uint64_t admitted_ = 0, admitted_reserve_ = 0, refused_full_ = 0, refused_per_ip_ = 0;
};

}  // namespace dclcomms::ws
