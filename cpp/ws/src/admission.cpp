// Admission (admission.hpp): connection caps as counters; no sockets here.

#include "dclcomms/ws/admission.hpp"

namespace dclcomms::ws {

Admission::Decision Admission::admit(const void* key, const std::string& ip, int64_t now_ms) {
  Decision d;
  auto it = unauth_.find(ip);
  if (it != unauth_.end() && it->second >= per_ip_) {
    auto idle = idle_by_ip_.find(ip);
    if (idle == idle_by_ip_.end()) {
      ++refused_per_ip_;
      return {Verdict::RefusePerIp, nullptr};
    }
    // The address's longest idle keep-alive connection makes room. Its slot
    // (regular or reserve) frees too, so what follows cannot refuse.
    d.evict = idle->second.front();
    forget(conns_.find(d.evict));
    ++evicted_idle_;
  }
  if (open_ < max_) {
    ++open_;
    ++admitted_;
    d.verdict = Verdict::Admit;
  } else if (d.evict == nullptr && !idle_.empty()) {
    // Full: a connection idle between two plain HTTP requests goes first.
    d.evict = idle_.front();
    forget(conns_.find(d.evict));
    ++evicted_idle_;
    ++open_;
    ++admitted_;
    d.verdict = Verdict::Admit;
  } else if (d.evict == nullptr && !evictable_.empty() &&
             now_ms - conns_.at(evictable_.front()).since_ms >= evict_age_) {
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
    return {Verdict::RefuseFull, d.evict};
  }
  Conn& c = conns_[key];
  c = Conn{
      ip,          false,      d.verdict == Verdict::ReserveOnly, now_ms, evictable_.end(), false,
      idle_.end(), idle_.end()};
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

void Admission::set_idle(Conn& c, const void* key, bool idle) {
  if (c.idle == idle) return;
  c.idle = idle;
  if (idle) {
    ++idle_total_;
    if (!c.reserve_only) c.idle_at = idle_.insert(idle_.end(), key);
    auto& of_ip = idle_by_ip_[c.ip];
    c.idle_at_ip = of_ip.insert(of_ip.end(), key);
    return;
  }
  --idle_total_;
  if (c.idle_at != idle_.end()) {
    idle_.erase(c.idle_at);
    c.idle_at = idle_.end();
  }
  auto of_ip = idle_by_ip_.find(c.ip);
  of_ip->second.erase(c.idle_at_ip);
  if (of_ip->second.empty()) idle_by_ip_.erase(of_ip);
}

void Admission::idle(const void* key, bool idle) {
  auto it = conns_.find(key);
  if (it == conns_.end() || it->second.authenticated) return;
  set_idle(it->second, key, idle);
}

void Admission::forget(std::unordered_map<const void*, Conn>::iterator it) {
  Conn& c = it->second;
  set_idle(c, it->first, false);
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
  set_idle(c, key, false);
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
  if (c.idle) {
    if (c.idle_at != idle_.end()) *c.idle_at = to;
    *c.idle_at_ip = to;
  }
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
      {"idle_http", idle_total_},
      {"evicted_idle_http", evicted_idle_},
  };
}

}  // namespace dclcomms::ws
