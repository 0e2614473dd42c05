// Admission (admission.hpp): connection caps as counters; no sockets here.

#include "dclcomms/ws/admission.hpp"

namespace dclcomms::ws {

Admission::Decision Admission::admit(const void* key, const std::string& ip, int64_t now_ms) {
  auto it = unauth_.find(ip);
  if (it != unauth_.end() && it->second >= per_ip_) {
    ++refused_per_ip_;
    return {Verdict::RefusePerIp, nullptr};
  }
  Decision d;
  if (open_ < max_) {
    ++open_;
    ++admitted_;
    d.verdict = Verdict::Admit;
  } else if (!evictable_.empty() && now_ms - conns_.at(evictable_.front()).since_ms >= evict_age_) {
    // Full, and the oldest connection still not authenticated has had its
    // time: its slot is the newcomer's.
    d.evict = evictable_.front();
    forget(conns_.find(d.evict));
    ++evicted_;
    ++open_;
    ++admitted_;
    d.verdict = Verdict::Admit;
  } else if (reserve_open_ < reserve_) {
    ++reserve_open_;
    ++admitted_reserve_;
    d.verdict = Verdict::ReserveOnly;
  } else {
    ++refused_full_;
    return {Verdict::RefuseFull, nullptr};
  }
  Conn& c = conns_[key];
  c = Conn{ip, false, d.verdict == Verdict::ReserveOnly, now_ms, evictable_.end()};
  if (!c.reserve_only) c.queued = evictable_.insert(evictable_.end(), key);
  ++unauth_[ip];
  ++unauth_total_;
  return d;
}

void Admission::release_unauth(const std::string& ip) {
  auto it = unauth_.find(ip);
  if (it == unauth_.end()) return;
  if (--it->second == 0) unauth_.erase(it);
  --unauth_total_;
}

void Admission::forget(std::unordered_map<const void*, Conn>::iterator it) {
  Conn& c = it->second;
  if (!c.authenticated) {
    release_unauth(c.ip);
    if (c.queued != evictable_.end()) evictable_.erase(c.queued);
  }
  if (c.reserve_only) {
    if (reserve_open_ > 0) --reserve_open_;
  } else if (open_ > 0) {
    --open_;
  }
  conns_.erase(it);
}

void Admission::authenticated(const void* key) {
  auto it = conns_.find(key);
  if (it == conns_.end() || it->second.authenticated) return;
  Conn& c = it->second;
  c.authenticated = true;
  release_unauth(c.ip);
  if (c.queued != evictable_.end()) {
    evictable_.erase(c.queued);
    c.queued = evictable_.end();
  }
}

void Admission::closed(const void* key) {
  auto it = conns_.find(key);
  if (it != conns_.end()) forget(it);
}

void Admission::rekey(const void* from, const void* to) {
  auto it = conns_.find(from);
  if (it == conns_.end() || from == to || conns_.count(to) != 0) return;
  Conn c = std::move(it->second);
  conns_.erase(it);
  if (c.queued != evictable_.end()) *c.queued = to;
  conns_.emplace(to, std::move(c));
}

bool Admission::reserve_only(const void* key) const {
  auto it = conns_.find(key);
  return it != conns_.end() && it->second.reserve_only;
}

size_t Admission::unauthenticated(const std::string& ip) const {
  auto it = unauth_.find(ip);
  return it == unauth_.end() ? 0 : it->second;
}

std::vector<std::pair<std::string, uint64_t>> Admission::stats() const {
  return {
      {"connections", open_ + reserve_open_},
      {"unauthenticated", unauth_total_},
      {"max_connections", max_},
      {"admitted", admitted_},
      {"admitted_reserve", admitted_reserve_},
      {"refused_full", refused_full_},
      {"refused_per_ip", refused_per_ip_},
      {"evicted_unauthenticated", evicted_},
  };
}

}  // namespace dclcomms::ws
