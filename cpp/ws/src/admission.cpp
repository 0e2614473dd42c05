// Admission (admission.hpp): connection caps as counters; no sockets here.

#include "dclcomms/ws/admission.hpp"

namespace dclcomms::ws {

Admission::Verdict Admission::admit(const std::string& ip) {
  auto it = unauth_.find(ip);
  if (it != unauth_.end() && it->second >= per_ip_) {
    ++refused_per_ip_;
    return Verdict::RefusePerIp;
  }
  Verdict v;
  if (open_ < max_) {
    ++open_;
    ++admitted_;
    v = Verdict::Admit;
  } else if (reserve_open_ < reserve_) {
    ++reserve_open_;
    ++admitted_reserve_;
    v = Verdict::ReserveOnly;
  } else {
    ++refused_full_;
    return Verdict::RefuseFull;
  }
  ++unauth_[ip];
  ++unauth_total_;
  return v;
}

void Admission::release_unauth(const std::string& ip) {
  auto it = unauth_.find(ip);
  if (it == unauth_.end()) return;
  if (--it->second == 0) unauth_.erase(it);
  --unauth_total_;
}

void Admission::authenticated(const std::string& ip) {
  release_unauth(ip);
}

void Admission::closed(const std::string& ip, bool was_authenticated, bool reserve_only) {
  if (!was_authenticated) release_unauth(ip);
  if (reserve_only) {
    if (reserve_open_ > 0) --reserve_open_;
  } else if (open_ > 0) {
    --open_;
  }
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
  };
}

}  // namespace dclcomms::ws
