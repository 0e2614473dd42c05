#include "dclcomms/ws/limits.hpp"

#include <algorithm>
#include <atomic>
#include <climits>

namespace dclcomms::ws {

namespace {
bool is_hex(char c) noexcept {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

bool is_valid_address(std::string_view s) noexcept {
  if (s.size() != 42 || s[0] != '0' || s[1] != 'x') return false;
  for (size_t i = 2; i < s.size(); ++i) {
    if (!is_hex(s[i])) return false;
  }
  return true;
}

std::string to_lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool is_valid_room_id(std::string_view s) noexcept {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '@' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string query_param(std::string_view query, std::string_view key, bool* found) {
  *found = false;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    size_t eq = part.find('=');
    if (part.substr(0, eq) != key) continue;
    *found = true;
    std::string_view raw = eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1);
    std::string out;
    out.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '%' && i + 2 < raw.size() && hex_value(raw[i + 1]) >= 0 &&
          hex_value(raw[i + 2]) >= 0) {
        out.push_back(static_cast<char>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2])));
        i += 2;
      } else {
        out.push_back(raw[i]);
      }
    }
    return out;
  }
  return {};
}

size_t utf8_length(std::string_view s) noexcept {
  size_t n = 0;
  for (unsigned char c : s) {
    if ((c & 0xC0) != 0x80) ++n;
  }
  return n;
}

std::string close_reason(std::string_view reason) {
  constexpr size_t kMax = 123;
  if (reason.size() <= kMax) return std::string(reason);
  size_t n = kMax;
  while (n > 0 && (static_cast<unsigned char>(reason[n]) & 0xC0) == 0x80) --n;
  return std::string(reason.substr(0, n));
}

bool RateWindow::accept(int64_t now_ms, int max_per_s) noexcept {
  if (window_start_ms_ == INT64_MIN || now_ms - window_start_ms_ >= 1000 ||
      now_ms < window_start_ms_) {
    window_start_ms_ = now_ms;
    count_ = 0;
  }
  if (count_ >= max_per_s) return false;
  ++count_;
  return true;
}

bool TokenBucket::take(int64_t now_ms, double msgs_per_s, double bytes_per_s, size_t n) noexcept {
  if (last_ms_ == INT64_MIN) {
    msgs_ = msgs_per_s;
    bytes_ = bytes_per_s;
  } else if (now_ms > last_ms_) {
    const double dt = static_cast<double>(now_ms - last_ms_) / 1000.0;
    msgs_ = std::min(msgs_per_s, msgs_ + dt * msgs_per_s);
    bytes_ = std::min(bytes_per_s, bytes_ + dt * bytes_per_s);
  }
  if (now_ms > last_ms_) last_ms_ = now_ms;
  const bool msgs_ok = msgs_per_s <= 0 || msgs_ >= 1.0;
  const bool bytes_ok = bytes_per_s <= 0 || bytes_ >= static_cast<double>(n);
  if (!msgs_ok || !bytes_ok) return false;
  if (msgs_per_s > 0) msgs_ -= 1.0;
  if (bytes_per_s > 0) bytes_ -= static_cast<double>(n);
  return true;
}

bool SlidingRateWindow::accept(int64_t now_ms, int max_per_s) {
  if (size_ > 0 && now_ms < ring_[(head_ + size_ - 1) % ring_.size()]) size_ = 0;
  while (size_ > 0 && now_ms - ring_[head_] >= 1000) {
    head_ = (head_ + 1) % ring_.size();
    --size_;
  }
  if (max_per_s < 1 || size_ >= static_cast<size_t>(max_per_s)) return false;
  if (size_ == ring_.size()) {  // full: grow, oldest first
    std::vector<int64_t> grown;
    grown.reserve(std::min<size_t>(std::max<size_t>(2 * size_, 4), static_cast<size_t>(max_per_s)));
    for (size_t i = 0; i < size_; ++i) grown.push_back(ring_[(head_ + i) % ring_.size()]);
    grown.resize(grown.capacity());
    ring_ = std::move(grown);
    head_ = 0;
  }
  ring_[(head_ + size_) % ring_.size()] = now_ms;
  ++size_;
  return true;
}

uint32_t next_alias() noexcept {
  static std::atomic<uint32_t> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed) + 1;
}

std::string binary_frame_header(size_t n) {
  return frame_header(0x2, n);
}

std::string frame_header(uint8_t opcode, size_t n) {
  std::string h;
  h.push_back(static_cast<char>(0x80 | (opcode & 0x0F)));
  if (n < 126) {
    h.push_back(static_cast<char>(n));
  } else if (n <= 0xFFFF) {
    h.push_back(static_cast<char>(126));
    h.push_back(static_cast<char>((n >> 8) & 0xFF));
    h.push_back(static_cast<char>(n & 0xFF));
  } else {
    h.push_back(static_cast<char>(127));
    for (int shift = 56; shift >= 0; shift -= 8) {
      h.push_back(static_cast<char>((static_cast<uint64_t>(n) >> shift) & 0xFF));
    }
  }
  return h;
}

}  // namespace dclcomms::ws
